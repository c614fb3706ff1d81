"""Importers: question sets and logs made elsewhere, brought into deceptwatch's formats.

- `mwe`: model-written-evals JSONL files → precursor scenario YAML files;
- `inspect_log`: Inspect `.eval`/`.json` logs → trials in the store.

Each module imports its heavy dependencies inside functions.
"""
