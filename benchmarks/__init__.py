"""deceptwatch's benchmarks against what a user would otherwise pick, measured side by side.

``python -m benchmarks`` (from the repository root) runs every benchmark and writes
BENCHMARKS.md; see `benchmarks.run`. Each ``bench_*`` module also runs on its own with
``python -m benchmarks.bench_NAME``.
"""
