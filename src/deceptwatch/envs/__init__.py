"""Simulated environments: multi-step text environments with tools (family `simulated_env`).

`Engine` runs one episode of a scenario's `environment` under one cue; `run_episode` drives a
backend through it for the runner. See docs/simulated-env.md.
"""

from deceptwatch.envs._engine import Action, Engine, Step, instructions, parse_action, replay

__all__ = ["Action", "Engine", "Step", "instructions", "parse_action", "replay"]
