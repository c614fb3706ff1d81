"""The probes: scikit-learn's estimator contract, and the same fit as scikit-learn's
logistic regression (the reference), on fixed data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from _fuzz import change, json_values, places, reaches
from _probe_files import fitted_probe
from deceptwatch._errors import InputError
from deceptwatch.probes import (
    PROBES,
    ContrastProbe,
    DiffMeansProbe,
    LogisticProbe,
    ThresholdRecord,
    TrainedProbe,
    load_probe,
    save_probe,
)


def _data(n: int = 300, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.linspace(0.5, 3.0, d) + np.linspace(-1, 2, d)
    w = rng.normal(size=d)
    y = (X @ w + rng.normal(scale=2.0, size=n) > np.median(X @ w)).astype(int)
    return X, y


@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
def test_logistic_matches_sklearn(C: float) -> None:
    X, y = _data()
    ours = LogisticProbe(C, standardize=False, tol=1e-10).fit(X, y)
    ref = LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(X, y)
    assert ours.converged_
    np.testing.assert_allclose(ours.coef_, ref.coef_[0], rtol=1e-4, atol=1e-6)
    assert ours.intercept_ == pytest.approx(ref.intercept_[0], rel=1e-4, abs=1e-6)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-6)


def test_standardized_logistic_matches_a_scaler_pipeline() -> None:
    X, y = _data(seed=1)
    ours = LogisticProbe(0.3, tol=1e-10).fit(X, y)
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=0.3, tol=1e-10, max_iter=10_000))
    ref.fit(X, y)
    np.testing.assert_allclose(ours.decision_function(X), ref.decision_function(X), atol=1e-5)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


def test_logistic_without_intercept_matches_sklearn() -> None:
    X, y = _data(seed=2)
    ours = LogisticProbe(1.0, standardize=False, fit_intercept=False, tol=1e-10).fit(X, y)
    ref = LogisticRegression(C=1.0, fit_intercept=False, tol=1e-10, max_iter=10_000).fit(X, y)
    np.testing.assert_allclose(ours.coef_, ref.coef_[0], rtol=1e-4, atol=1e-6)
    assert ours.intercept_ == 0.0


@pytest.mark.parametrize("cls", list(PROBES.values()))
def test_estimator_contract(cls: type) -> None:
    X, y = _data(d=4)
    probe = cls(random_state=7)
    # __init__ stores its parameters and nothing learned
    assert not [k for k in vars(probe) if k.endswith("_")]
    assert probe.get_params()["random_state"] == 7
    assert set(probe.get_params()) == set(clone(probe).get_params())
    with pytest.raises(RuntimeError, match="not fitted"):
        probe.decision_function(X)
    assert probe.fit(X, y) is probe
    learned = [k for k in vars(probe) if k.endswith("_")]
    assert {"coef_", "intercept_", "n_features_in_", "classes_"} <= set(learned)
    assert probe.decision_function(X).shape == (len(X),)
    # deterministic: a second fit gives the same probe
    np.testing.assert_array_equal(cls(random_state=7).fit(X, y).coef_, probe.coef_)
    with pytest.raises(ValueError, match="invalid parameter"):
        probe.set_params(colour="red")


@pytest.mark.parametrize("C", [0.0, -1.0, float("inf"), float("nan")])
def test_logistic_refuses_a_C_that_is_not_positive_and_finite(C: float) -> None:
    X, y = _data(d=3)
    with pytest.raises(ValueError, match="positive finite"):
        LogisticProbe(C).fit(X, y)


def test_a_fit_that_overflows_is_refused_not_kept() -> None:
    # finite activations whose class means differ by more than a float can hold
    X = np.array([[1e308, 0.0], [1e308, 1.0], [-1e308, 0.0], [-1e308, 1.0]])
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(ValueError, match="NaN or"):
        DiffMeansProbe().fit(X, [1, 1, 0, 0])


def test_restore_refuses_a_non_finite_intercept() -> None:
    with pytest.raises(ValueError, match="malformed"):
        LogisticProbe().restore({"coef": np.ones(3), "intercept": np.array([np.nan])})


def test_diffmeans_direction_and_midpoint() -> None:
    X, y = _data(d=3)
    p = DiffMeansProbe().fit(X, y)
    diff = X[y == 1].mean(0) - X[y == 0].mean(0)
    np.testing.assert_allclose(p.coef_, diff / np.linalg.norm(diff))
    mid = (X[y == 1].mean(0) + X[y == 0].mean(0)) / 2
    assert p.decision_function(mid[None])[0] == pytest.approx(0.0, abs=1e-12)
    raw = DiffMeansProbe(normalize=False).fit(X, y)
    np.testing.assert_allclose(raw.coef_, diff)


def test_contrast_probe_from_one_pair() -> None:
    pair = np.array([[1.0, 2.0, 3.0], [1.0, 0.0, 3.0]])
    p = ContrastProbe().fit(pair, [1, 0])
    np.testing.assert_allclose(p.coef_, [0.0, 1.0, 0.0])
    assert p.intercept_ == 0.0
    with pytest.raises(ValueError, match="equal activations"):
        ContrastProbe().fit(np.ones((2, 3)), [1, 0])


@pytest.mark.parametrize(
    ("X", "y", "match"),
    [
        (np.ones((4, 2)), [1, 1, 1, 1], "single class"),
        (np.ones((4, 2)), [0, 1, 2, 1], "binary"),
        (np.ones(4), [0, 1, 0, 1], "2-D"),
        (np.full((4, 2), np.nan), [0, 1, 0, 1], "NaN"),
        (np.ones((4, 2)), [0, 1, 0], "one label per row"),
    ],
)
def test_bad_training_data(X: np.ndarray, y: list[int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LogisticProbe().fit(X, y)


def test_wrong_width_is_refused() -> None:
    X, y = _data(d=4)
    p = LogisticProbe().fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, the probe was fitted on 4"):
        p.decision_function(X[:, :3])


def _trained(cls: type = LogisticProbe) -> TrainedProbe:
    return fitted_probe(*_data(d=5), cls)


@pytest.mark.parametrize("cls", list(PROBES.values()))
def test_probe_file_round_trip(cls: type, tmp_path: Path) -> None:
    trained = _trained(cls)
    arrays, record = save_probe(trained, tmp_path / "p.safetensors")
    assert (arrays.name, record.name) == ("p.safetensors", "p.json")
    X, _ = _data(d=5, seed=9)
    for path in (arrays, record, tmp_path / "p"):
        loaded = load_probe(path)
        np.testing.assert_array_equal(loaded.score(X), trained.score(X))
        assert loaded.record.params == trained.record.params


def test_probe_file_errors(tmp_path: Path) -> None:
    arrays, record = save_probe(_trained(), tmp_path / "p.safetensors")
    data = record.read_text()
    record.write_text(data.replace('"position": "last"', '"position": "last", "colour": "red"'))
    with pytest.raises(InputError, match=r"p\.json: field 'colour'"):
        load_probe(record)
    record.write_text(data.replace('"layer": "layer.2"', '"layer": "middle"'))
    with pytest.raises(InputError, match="field 'layer'"):
        load_probe(record)
    record.write_text(data)
    arrays.write_bytes(arrays.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(InputError, match="does not match"):
        load_probe(record)
    with pytest.raises(InputError, match="no such file"):
        load_probe(tmp_path / "missing.safetensors")
    record.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_probe(record)


def test_flags_need_a_threshold() -> None:
    X, _ = _data(d=5)
    with pytest.raises(InputError, match="no calibrated threshold"):
        _trained().flags(X)


def _calibrated(cls: type) -> TrainedProbe:
    """A trained probe with a threshold (0.5), as `probe train` saves it."""
    trained = _trained(cls)
    threshold = ThresholdRecord(
        value=0.5, fpr_target=0.01, n_benign=100, benign_flag_rate=0.01, calibration="test"
    )
    return TrainedProbe(trained.probe, trained.record.model_copy(update={"threshold": threshold}))


_JSON = json_values(
    ["logistic", "diffmeans", "contrast", "layer.1", "last", "reply", "cue"], finite=False
)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(cls=st.sampled_from(list(PROBES.values())), data=st.data())
def test_a_damaged_probe_file_loads_whole_or_raises_input_error(
    cls: type, data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A saved probe with its record's values replaced or deleted, its arrays cut short or
    overwritten (with the record's checksum made to agree, or dropped), or its record not
    UTF-8: `load_probe` gives a working probe or an InputError, never another exception,
    and never a probe with NaN in its weights or threshold."""
    import hashlib
    import json

    d = tmp_path_factory.mktemp("probe")
    arrays, record = save_probe(_calibrated(cls), d / "p.safetensors")
    doc = json.loads(record.read_text(encoding="utf-8"))
    for _ in range(data.draw(st.integers(0, 2))):
        at = data.draw(st.sampled_from([p for p in places(doc)[1:] if reaches(doc, p)]))
        doc = change(doc, at, data.draw(_JSON), delete=data.draw(st.booleans()))
    blob = arrays.read_bytes()
    damage = data.draw(st.sampled_from(["none", "cut", "overwrite"]))
    if damage == "cut":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif damage == "overwrite":
        at = data.draw(st.integers(0, len(blob) - 1))
        patch = data.draw(st.binary(min_size=1, max_size=16))
        blob = blob[:at] + patch + blob[at + len(patch) :]
    arrays.write_bytes(blob)
    if isinstance(doc, dict) and "arrays_sha256" in doc and data.draw(st.booleans()):
        doc["arrays_sha256"] = hashlib.sha256(blob).hexdigest()
    text = json.dumps(doc).encode()
    if data.draw(st.integers(0, 9)) == 0:
        text = b"\xff" + text
    record.write_bytes(text)
    try:
        loaded = load_probe(record)
    except InputError:
        return
    X, _ = _data(d=loaded.record.n_features, seed=3)
    assert loaded.score(X).shape == (len(X),)
    if loaded.record.threshold is not None:  # a NaN threshold would never flag anything
        assert np.isfinite(loaded.record.threshold.value)


def test_non_finite_weights_or_threshold_are_refused(tmp_path: Path) -> None:
    """A probe with NaN in it would flag nothing and look like a clean negative."""
    import json

    from safetensors.numpy import load_file, save_file

    arrays, record = save_probe(_calibrated(LogisticProbe), tmp_path / "p.safetensors")
    good = record.read_text(encoding="utf-8")
    record.write_text(good.replace('"value": 0.5', '"value": NaN'), encoding="utf-8")
    with pytest.raises(InputError, match=r"field .threshold\.value."):
        load_probe(record)
    doc = json.loads(good)
    doc["arrays_sha256"] = ""
    record.write_text(json.dumps(doc), encoding="utf-8")
    tensors = load_file(str(arrays))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].copy()
    tensors[name].flat[0] = np.nan
    save_file(tensors, str(arrays))
    with pytest.raises(InputError, match=f"array '{name}' holds NaN"):
        load_probe(record)
