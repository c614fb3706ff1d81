"""Canonical layer names, mapped to module paths by one small table per architecture family.

A layer is named ``layer.K`` (the output of decoder block K, 0-based: the residual stream
after the block, read by a forward hook on the block), or ``mid`` (block N // 2) or ``last``
(block N − 1) for a model of N blocks. For every block but the last this equals
``hidden_states[K + 1]`` of a transformers forward pass. The last block's differs:
transformers applies the model's final norm (Llama's ``model.norm``, GPT-2's ``ln_f``, ...)
to ``hidden_states[-1]``, and ``layer.{N-1}`` (``last``) is the block's output before that
final norm. ``mid`` and
``last`` are resolved to ``layer.K`` before anything is saved, so that a probe file always
names the exact block it was fitted on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from deceptwatch._errors import InputError

# model_type (config.json) → attribute path of the list of decoder blocks
BLOCK_PATHS: dict[str, str] = {
    "llama": "model.layers",
    "mistral": "model.layers",
    "mixtral": "model.layers",
    "qwen2": "model.layers",
    "qwen3": "model.layers",
    "gemma": "model.layers",
    "gemma2": "model.layers",
    "phi3": "model.layers",
    "gpt2": "transformer.h",
    "gptj": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
}
ALIASES = ("mid", "last")
_LAYER_RE = re.compile(r"^layer\.(\d+)$")


@dataclass(frozen=True, slots=True)
class Layer:
    """A resolved layer: its canonical name, block index and module path."""

    name: str  # "layer.K"
    index: int
    path: str  # e.g. "model.layers.2"


def block_path(model: Any, override: str | None = None) -> str:
    """Attribute path of the model's list of decoder blocks (`override` wins)."""
    if override:
        return override
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    path = BLOCK_PATHS.get(str(model_type))
    if path is None:
        raise InputError(
            f"no layer table for model type {model_type!r}",
            hint="known model types: "
            + ", ".join(sorted(BLOCK_PATHS))
            + "; pass the path of the decoder blocks explicitly (block_path='model.layers')",
        )
    return path


def _get(model: Any, path: str) -> Any:
    obj = model
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part, None)
        if obj is None:
            raise InputError(
                f"the model has no module {path!r}",
                hint="check the block path for this architecture (probes/_layers.py BLOCK_PATHS)",
            )
    return obj


def num_blocks(model: Any, override: str | None = None) -> int:
    return len(_get(model, block_path(model, override)))


def canonical_layer(name: str, n_blocks: int) -> str:
    """``mid`` / ``last`` / ``layer.K`` → ``layer.K``, checked against the model's depth."""
    name = name.strip()
    if name == "mid":
        return f"layer.{n_blocks // 2}"
    if name == "last":
        return f"layer.{n_blocks - 1}"
    m = _LAYER_RE.match(name)
    if m is None:
        raise InputError(
            f"unknown layer name {name!r}",
            hint=f"use layer.0 … layer.{n_blocks - 1}, mid or last",
        )
    k = int(m.group(1))
    if k >= n_blocks:
        raise InputError(
            f"layer {name!r} does not exist: the model has {n_blocks} blocks",
            hint=f"use layer.0 … layer.{n_blocks - 1}, mid or last",
        )
    return name


def resolve_layers(model: Any, names: Sequence[str], override: str | None = None) -> list[Layer]:
    """Resolve canonical names to layers (deduplicated, in block order)."""
    if not names:
        raise InputError("no layer given", hint="e.g. --layer mid")
    base = block_path(model, override)
    n = len(_get(model, base))
    idx = sorted({int(canonical_layer(x, n).split(".")[1]) for x in names})
    return [Layer(f"layer.{k}", k, f"{base}.{k}") for k in idx]


def layer_module(model: Any, layer: Layer) -> Any:
    return _get(model, layer.path)
