"""Importers: question sets and logs made elsewhere, brought into deceptwatch's formats.

- `mwe`: model-written-evals JSONL files → precursor scenario YAML files;
- `inspect_log`: Inspect `.eval`/`.json` logs → trials in the store (the sample metadata it
  reads, strictly, and the samples that did not finish, in `_inspect_meta`; the checks of
  the paired design, in `_inspect_pairs`);
- `_files`: the visible files of a directory, and output files written all or none.

Each module imports its heavy dependencies inside functions.
"""
