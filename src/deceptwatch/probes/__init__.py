"""Probes: read a model's activations and flag an intent to defect before it acts.

- Extraction (`iter_activations`, `extract_activations`, `extract_to_disk`): forward hooks
  on any transformers causal LM, at layers named ``layer.K`` / ``mid`` / ``last``, pooled at
  the last prompt token or over the reply, batched with left padding; large runs stream to
  safetensors shards (`ActivationSet` reads them back).
- Probes with the scikit-learn estimator contract: `LogisticProbe`, `DiffMeansProbe`, and
  `ContrastProbe` (a direction from one generic contrast pair, with no defection data).
- Calibration (`threshold_at_fpr`, `auroc`, `recall_at_fpr`, `evaluate`): thresholds at a
  false-positive rate on benign prompts, AUROC and recall with bootstrap intervals.
- On trials (`train_probe`, `score_trials`): prompts as the ``hf:``/``organism:`` backend
  renders them, defection labels from the model's own choices, flag rates per condition.
- Progress (`reporting`): the model work reports its tasks to a sink, e.g. a progress bar.

Importing this package loads numpy and scipy, never torch or transformers (they are
imported inside the functions that run a model).
"""

from deceptwatch.probes._calibrate import (
    Estimate,
    ProbeEvaluation,
    Threshold,
    auroc,
    evaluate,
    flag_rate,
    min_benign,
    recall_at_fpr,
    threshold_at_fpr,
)
from deceptwatch.probes._extract import (
    POSITIONS,
    ActivationManifest,
    ActivationSet,
    ShardWriter,
    capture,
    extract_activations,
    extract_to_disk,
    iter_activations,
    pad_left,
)
from deceptwatch.probes._files import (
    DEFAULT_CONTRAST,
    ContrastPair,
    ProbeRecord,
    ThresholdRecord,
    TrainedProbe,
    TrainingRecord,
    load_probe,
    probe_paths,
    save_probe,
)
from deceptwatch.probes._layers import BLOCK_PATHS, Layer, canonical_layer, resolve_layers
from deceptwatch.probes._probes import (
    PROBES,
    ContrastProbe,
    DiffMeansProbe,
    LinearProbe,
    LogisticProbe,
)
from deceptwatch.probes._progress import Advance, Sink, reporting
from deceptwatch.probes._scores import (
    FlagRate,
    ProbeGap,
    ProbeScores,
    TrialScore,
    evaluate_by_condition,
    flag_rates,
    probe_gap,
    score_trials,
)
from deceptwatch.probes._trials import (
    BENIGN_CONDITIONS,
    Behaviour,
    behaviour,
    benign_trials,
    calibrate,
    contrast_activations,
    labels,
    make_probe,
    open_backend,
    probe_scores,
    train_probe,
    trial_activations,
    trial_activations_to_disk,
    trial_request,
)

__all__ = [
    "BENIGN_CONDITIONS",
    "BLOCK_PATHS",
    "DEFAULT_CONTRAST",
    "POSITIONS",
    "PROBES",
    "ActivationManifest",
    "ActivationSet",
    "Advance",
    "Behaviour",
    "ContrastPair",
    "ContrastProbe",
    "DiffMeansProbe",
    "Estimate",
    "FlagRate",
    "Layer",
    "LinearProbe",
    "LogisticProbe",
    "ProbeEvaluation",
    "ProbeGap",
    "ProbeRecord",
    "ProbeScores",
    "ShardWriter",
    "Sink",
    "Threshold",
    "ThresholdRecord",
    "TrainedProbe",
    "TrainingRecord",
    "TrialScore",
    "auroc",
    "behaviour",
    "benign_trials",
    "calibrate",
    "canonical_layer",
    "capture",
    "contrast_activations",
    "evaluate",
    "evaluate_by_condition",
    "extract_activations",
    "extract_to_disk",
    "flag_rate",
    "flag_rates",
    "iter_activations",
    "labels",
    "load_probe",
    "make_probe",
    "min_benign",
    "open_backend",
    "pad_left",
    "probe_gap",
    "probe_paths",
    "probe_scores",
    "recall_at_fpr",
    "reporting",
    "resolve_layers",
    "save_probe",
    "score_trials",
    "threshold_at_fpr",
    "train_probe",
    "trial_activations",
    "trial_activations_to_disk",
    "trial_request",
]
