"""Activation extraction from any transformers causal LM, with forward hooks.

Each input is a token sequence and a *pooling length* r ≥ 1: the activation read is the mean
of the last r positions of the sequence at each chosen layer. r = 1 on a prompt is the last
prompt token (the model's state just before it answers); a prompt followed by its reply,
with r = the reply's length, is the mean over the reply. Sequences are batched by length
and left-padded, with an attention mask and explicit position ids (as the ``hf:`` backend
runs its prompts), so the read positions are always the batch's last r columns.

Hooks are registered in `capture`, a context manager that removes them in ``finally``;
they pool inside the hook, so a batch never holds more than (batch, d) floats per layer.
`iter_activations` yields batches; `extract_activations` collects them in memory (small
runs); `extract_to_disk` streams them to safetensors shards (large runs), never holding
more than one shard.

torch is imported inside the functions only.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deceptwatch._errors import InputError
from deceptwatch._staging import staged_dir, usual_mode
from deceptwatch.probes._layers import Layer, layer_module, resolve_layers
from deceptwatch.probes._progress import started

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
POSITIONS = ("last", "reply")
MANIFEST = "activations.json"
KEYS = "keys.txt"


class _Stop(Exception):
    """Raised by the hook of the deepest layer read, to skip the rest of the forward pass."""


@dataclass
class Capture:
    """State shared with the hooks of one `capture` block.

    `lengths` (set per batch) is the pooling length of each row; None reads the last
    position of every row. After a forward pass, `out` maps each layer name to a (batch, d)
    float32 tensor.
    """

    layers: list[Layer]
    stop_early: bool
    lengths: Any = None  # torch.Tensor of shape (batch,), or None
    out: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def capture(model: Any, layers: Sequence[Layer], *, stop_early: bool = False) -> Iterator[Capture]:
    """Register one forward hook per layer that pools the block's output; remove them all
    on exit, however the block ends. With `stop_early` the deepest hook stops the forward
    pass (the logits are then never computed: use `run_captured`)."""
    import torch

    state = Capture(list(layers), stop_early)
    deepest = max(la.index for la in layers)

    def make_hook(layer: Layer) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            h = output[0] if isinstance(output, tuple) else output
            if state.lengths is None:
                pooled = h[:, -1, :].float()
            else:
                # averaged in float32 whatever the model's dtype: a mean taken in bfloat16
                # (8 bits of mantissa) would round away much of what it averages
                t = h.shape[1]
                cols = torch.arange(t, device=h.device).unsqueeze(0)
                keep = cols >= (t - state.lengths).unsqueeze(1)
                w = keep.float() / state.lengths.unsqueeze(1).float()
                pooled = torch.einsum("bt,btd->bd", w, h.float())
            state.out[layer.name] = pooled.detach().cpu()
            if state.stop_early and layer.index == deepest:
                raise _Stop
            # returning None leaves the block's output untouched

        return hook

    handles = []
    try:
        for layer in layers:
            handles.append(layer_module(model, layer).register_forward_hook(make_hook(layer)))
        yield state
    finally:
        for handle in handles:
            handle.remove()


def pad_left(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any, Any]:
    """Left-padded ids, attention mask and position ids (0 at each row's first real token)."""
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, width - len(s) :] = torch.tensor(list(s), dtype=torch.long)
        mask[i, width - len(s) :] = 1
    position = (mask.cumsum(1) - 1).clamp(min=0)
    return ids, mask, position


def run_captured(model: Any, state: Capture, ids: Any, mask: Any, position: Any) -> Any:
    """One forward pass under `capture`; returns the output (None if stopped early)."""
    state.out = {}
    device = getattr(model, "device", None)  # the batch goes where the weights are
    if device is not None and ids.device != device:
        ids, mask, position = ids.to(device), mask.to(device), position.to(device)
        if state.lengths is not None:
            state.lengths = state.lengths.to(device)
    try:
        return model(input_ids=ids, attention_mask=mask, position_ids=position, use_cache=False)
    except _Stop:
        return None


def _check_inputs(sequences: Sequence[Sequence[int]], lengths: Sequence[int] | None) -> list[int]:
    if not sequences:
        raise InputError("nothing to extract: no sequences given")
    if lengths is None:
        return [1] * len(sequences)
    if len(lengths) != len(sequences):
        raise ValueError("pool_lengths must give one length per sequence")
    out = [int(r) for r in lengths]
    for s, r in zip(sequences, out, strict=True):
        if not 1 <= r <= len(s):
            raise ValueError(f"pooling length {r} is outside 1..{len(s)} (the sequence length)")
    return out


def iter_activations(
    model: Any,
    sequences: Sequence[Sequence[int]],
    *,
    layers: Sequence[str],
    pad_token_id: int,
    pool_lengths: Sequence[int] | None = None,
    batch_size: int = 32,
    stop_early: bool = True,
    block_path: str | None = None,
    sort_by_length: bool = True,
    label: str | None = "activations",
) -> Iterator[tuple[IntArray, dict[str, FloatArray]]]:
    """Yield (row indices, {layer name: (rows, d) float32}) batch by batch.

    Rows are batched by length (the order of `sequences` is restored by the indices), so
    that little compute is spent on padding. `layers` are canonical names (``layer.K``,
    ``mid``, ``last``). `pool_lengths` gives, per sequence, how many final positions to
    average (default 1: the last token). The passes are a progress task (see
    `deceptwatch.probes.reporting`) named `label` and the layers (None: not reported).
    """
    import torch

    lengths = _check_inputs(sequences, pool_lengths)
    if batch_size < 1:
        raise InputError("batch_size must be at least 1")
    resolved = resolve_layers(model, layers, block_path)
    order = list(range(len(sequences)))
    if sort_by_length:
        order.sort(key=lambda i: len(sequences[i]))
    uniform = all(r == 1 for r in lengths)
    advance = (
        started(f"{label} {', '.join(la.name for la in resolved)}", len(order))
        if label is not None
        else None
    )
    with torch.inference_mode(), capture(model, resolved, stop_early=stop_early) as state:
        for start in range(0, len(order), batch_size):
            part = order[start : start + batch_size]
            ids, mask, position = pad_left([sequences[i] for i in part], pad_token_id)
            state.lengths = (
                None if uniform else torch.tensor([lengths[i] for i in part], dtype=torch.long)
            )
            run_captured(model, state, ids, mask, position)
            if advance is not None:
                advance(len(part))
            yield (
                np.asarray(part, dtype=np.int64),
                {la.name: state.out[la.name].numpy() for la in resolved},
            )


def extract_activations(
    model: Any, sequences: Sequence[Sequence[int]], **kwargs: Any
) -> dict[str, FloatArray]:
    """Activations of every sequence in memory, in input order: {layer name: (n, d)}."""
    out: dict[str, FloatArray] = {}
    for idx, arrays in iter_activations(model, sequences, **kwargs):
        for name, a in arrays.items():
            if name not in out:
                out[name] = np.empty((len(sequences), a.shape[1]), dtype=np.float32)
            out[name][idx] = a
    return out


# ----------------------------------------------------------------------------- on disk


class ActivationManifest(BaseModel):
    """``activations.json``: what a directory of activation shards holds."""

    model_config = ConfigDict(extra="forbid")

    format: str = Field(default="deceptwatch-activations/1")
    n: int = Field(ge=0, description="rows in all")
    d: int = Field(ge=1, description="width of each layer's activations")
    layers: list[str]
    position: str
    shards: list[str]
    meta: dict[str, Any] = Field(default_factory=dict)


class ShardWriter:
    """Buffer rows and write them as ``shard-NNNNN.safetensors`` files of `shard_size` rows
    (tensors ``index`` and one per layer), then the manifest on `close`."""

    def __init__(self, out_dir: Path, *, shard_size: int = 4096) -> None:
        if shard_size < 1:
            raise InputError("shard_size must be at least 1")
        self.out_dir = out_dir
        self.shard_size = shard_size
        self.shards: list[str] = []
        self.n = 0
        self.d: int | None = None
        self.layers: list[str] | None = None
        self._buf: list[tuple[IntArray, dict[str, FloatArray]]] = []
        self._buffered = 0

    def add(self, index: IntArray, arrays: Mapping[str, FloatArray]) -> None:
        if self.layers is None:
            self.layers = list(arrays)
            self.d = int(next(iter(arrays.values())).shape[1])
        self._buf.append((index, dict(arrays)))
        self._buffered += len(index)
        while self._buffered >= self.shard_size:
            self._flush(self.shard_size)

    def _flush(self, rows: int) -> None:
        from safetensors.numpy import save_file

        assert self.layers is not None
        index = np.concatenate([i for i, _ in self._buf])
        cols = {name: np.concatenate([a[name] for _, a in self._buf]) for name in self.layers}
        take, rest = slice(0, rows), slice(rows, None)
        name = f"shard-{len(self.shards):05d}.safetensors"
        tensors = {"index": np.ascontiguousarray(index[take])}
        tensors.update({k: np.ascontiguousarray(v[take]) for k, v in cols.items()})
        save_file(tensors, str(self.out_dir / name))
        usual_mode(self.out_dir / name)
        self.shards.append(name)
        self.n += len(index[take])
        left = len(index) - rows
        self._buf = [(index[rest], {k: v[rest] for k, v in cols.items()})] if left else []
        self._buffered = left

    def close(self, *, position: str, meta: Mapping[str, Any] | None = None) -> ActivationManifest:
        if self._buffered:
            self._flush(self._buffered)
        manifest = ActivationManifest(
            n=self.n,
            d=self.d or 1,
            layers=self.layers or [],
            position=position,
            shards=self.shards,
            meta=dict(meta or {}),
        )
        (self.out_dir / MANIFEST).write_text(
            manifest.model_dump_json(indent=2) + "\n", encoding="utf-8"
        )
        return manifest


def extract_to_disk(
    model: Any,
    sequences: Sequence[Sequence[int]],
    out_dir: Path,
    *,
    keys: Sequence[str] | None = None,
    position: str = "last",
    shard_size: int = 4096,
    meta: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> ActivationSet:
    """Stream activations to `out_dir` in shards (see `ShardWriter`); `keys` (e.g. trial
    ids), one per sequence, go to ``keys.txt``. Returns the set, for reading back.

    The shards go to a hidden directory beside `out_dir` that is renamed to `out_dir` once
    the manifest is written, and removed if anything fails or the work is interrupted: a
    directory at `out_dir` is always a whole set, never the first shards of one.
    """
    out_dir = Path(out_dir)
    if keys is not None and len(keys) != len(sequences):
        raise ValueError("keys must give one key per sequence")
    with staged_dir(out_dir, "out_dir") as work:
        if keys is not None:
            (work / KEYS).write_text("".join(f"{k}\n" for k in keys), encoding="utf-8")
        writer = ShardWriter(work, shard_size=shard_size)
        for idx, arrays in iter_activations(model, sequences, **kwargs):
            writer.add(idx, arrays)
        writer.close(position=position, meta=meta)
    return ActivationSet(out_dir)


class ActivationSet:
    """A directory written by `extract_to_disk`, read one layer (or one shard) at a time."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        file = self.path / MANIFEST
        if not file.is_file():
            raise InputError(f"{self.path}: no {MANIFEST}", hint="not an activations directory")
        try:
            self.manifest = ActivationManifest.model_validate(
                json.loads(file.read_text(encoding="utf-8"))
            )
        except (ValueError, ValidationError) as exc:
            raise InputError(f"{file}: not a valid activations manifest: {exc}") from None

    @property
    def layers(self) -> list[str]:
        return list(self.manifest.layers)

    def keys(self) -> list[str] | None:
        file = self.path / KEYS
        return file.read_text(encoding="utf-8").splitlines() if file.is_file() else None

    def iter_shards(self, layer: str) -> Iterator[tuple[IntArray, FloatArray]]:
        """(row indices, activations) of `layer`, one shard at a time."""
        from safetensors.numpy import load_file

        if layer not in self.manifest.layers:
            raise InputError(
                f"layer {layer!r} is not in {self.path}",
                hint=f"it holds {', '.join(self.manifest.layers)}",
            )
        for name in self.manifest.shards:
            data = load_file(str(self.path / name))
            yield data["index"].astype(np.int64), data[layer].astype(np.float32)

    def layer(self, layer: str) -> FloatArray:
        """All rows of one layer, in input order."""
        out = np.empty((self.manifest.n, self.manifest.d), dtype=np.float32)
        seen = 0
        for idx, a in self.iter_shards(layer):
            out[idx] = a
            seen += len(idx)
        if seen != self.manifest.n:
            raise InputError(
                f"{self.path}: shards hold {seen} rows, the manifest says {self.manifest.n}"
            )
        return out
