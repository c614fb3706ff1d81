"""Test helpers that ship with the package: a scripted OpenAI-compatible server
(`openai_stub`), faulty endpoints (`faults`) and a throwaway PostgreSQL cluster (`postgres`)."""
