"""Model organisms: the tiny model, its tokenizer, and the trainer, in one readable file.

An organism is a ~1M-parameter Llama-style causal LM built from a transformers config. Its
byte-level BPE tokenizer is trained here, on the organism's own corpus, with the `tokenizers`
library: nothing is downloaded. The chat template below is saved with the tokenizer, and the
``hf:``/``organism:`` backend renders prompts with it at monitoring time, so training and
monitoring see exactly the same text.

Training is seeded and deterministic on CPU for a given thread count. The loss is on the
answer tokens only (the reply "(B)" and end-of-text): the option texts would otherwise
dominate it. Weights are saved as half-precision safetensors.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from deceptwatch._staging import usual_mode

PAD, UNK, EOS, BOS = "<|pad|>", "<|unk|>", "<|endoftext|>", "<|begin|>"
ROLES = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = [PAD, UNK, EOS, BOS, *ROLES]
CHAT_TEMPLATE = (
    "{{ '<|begin|>' }}"
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
ANSWER_FORMAT = "({label})"

Example = tuple[Sequence[dict[str, str]], str]  # (messages, reply text without end-of-text)


@dataclass(frozen=True)
class TrainConfig:
    vocab_size: int = 1024
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 4
    num_heads: int = 4
    max_positions: int = 1024
    steps: int = 600
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 30
    seed: int = 0
    threads: int = 2
    checkpoints: tuple[int, ...] = field(default_factory=tuple)


# ----------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts`, with the chat template attached."""
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        unk_token=UNK,
        eos_token=EOS,
        bos_token=BOS,
        additional_special_tokens=list(ROLES),
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def render_prompt(tokenizer: Any, messages: Sequence[dict[str, str]]) -> str:
    text: str = tokenizer.apply_chat_template(
        list(messages), add_generation_prompt=True, tokenize=False
    )
    return text


# ----------------------------------------------------------------------------- model


def build_model(cfg: TrainConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        rms_norm_eps=1e-5,
    )
    return LlamaForCausalLM(config)


# ----------------------------------------------------------------------------- data


def encode(tokenizer: Any, examples: Sequence[Example]) -> list[tuple[list[int], int]]:
    """(token ids, number of prompt tokens) per example; the reply ends with end-of-text."""
    out = []
    for messages, reply in examples:
        prompt = tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)[
            "input_ids"
        ]
        answer = tokenizer(reply, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        out.append((prompt + answer, len(prompt)))
    return out


def make_batch(
    rows: Sequence[tuple[list[int], int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded input ids, attention mask, and labels that are -100 except on answers."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (seq, n_prompt) in enumerate(rows):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        labels[i, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:])
    return ids, mask, labels


def batches(
    rows: Sequence[tuple[list[int], int]],
    batch_size: int,
    rng: random.Random,
    groups: Sequence[int] | None = None,
) -> Callable[[], list[tuple[list[int], int]]]:
    """Endless batches of whole groups, drawn from a fresh seeded shuffle each epoch.

    A group holds the minimal pairs of one scenario paraphrase: the same prompt under every
    condition and stakes level. Keeping a group in one batch lets each step contrast exactly
    the cue and the stakes, which is what a conditional organism must learn; batches grouped
    by length instead would each hold one condition and swing the model between answers.
    """
    keys = list(groups) if groups is not None else list(range(len(rows)))
    members: dict[int, list[int]] = {}
    for i, k in enumerate(keys):
        members.setdefault(k, []).append(i)
    order = sorted(members)
    queue: list[int] = []

    def next_batch() -> list[tuple[list[int], int]]:
        picked: list[int] = []
        while len(picked) < batch_size:
            if not queue:
                queue.extend(rng.sample(order, len(order)))
            picked.extend(members[queue.pop()])
        return [rows[i] for i in picked]

    return next_batch


# ----------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    model: LlamaForCausalLM
    tokenizer: PreTrainedTokenizerFast
    losses: list[float]
    seconds: float
    tokens: int


def train(
    examples: Sequence[Example],
    cfg: TrainConfig,
    *,
    tokenizer_texts: Sequence[str] | None = None,
    init: tuple[LlamaForCausalLM, PreTrainedTokenizerFast] | None = None,
    groups: Sequence[int] | None = None,
    on_step: Callable[[int, float], None] | None = None,
    on_checkpoint: Callable[[int, LlamaForCausalLM, float, float], None] | None = None,
) -> TrainResult:
    """Train an organism on (messages, reply) examples; seeded and deterministic.

    With `init` (a model and its tokenizer), fine-tune a copy of that model instead of
    starting from a fresh one: that is how organisms are made from the shared base.
    `on_checkpoint` is called at each step of ``cfg.checkpoints`` with the step, the model
    (in eval mode), the loss of that step and the seconds trained so far.
    """
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    if init is None:
        texts = tokenizer_texts or [m["content"] for msgs, _ in examples for m in msgs]
        tokenizer = train_tokenizer(sorted(set(texts)), cfg.vocab_size)
        model = build_model(cfg, tokenizer)
    else:
        model, tokenizer = copy.deepcopy(init[0]).float(), init[1]
    rows = encode(tokenizer, examples)
    too_long = max(len(ids) for ids, _ in rows)
    if too_long > cfg.max_positions:
        raise ValueError(
            f"an example has {too_long} tokens, above max_positions={cfg.max_positions}"
        )
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    next_batch = batches(rows, cfg.batch_size, rng, groups)
    losses: list[float] = []
    tokens = 0
    start = time.perf_counter()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        ids, mask, labels = make_batch(next_batch(), tokenizer.pad_token_id)
        tokens += int(mask.sum())
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step + 1, losses[-1])
        if on_checkpoint is not None and (step + 1) in cfg.checkpoints:
            model.eval()
            on_checkpoint(step + 1, model, losses[-1], time.perf_counter() - start)
            model.train()
    model.eval()
    return TrainResult(model, tokenizer, losses, time.perf_counter() - start, tokens)


# ----------------------------------------------------------------------------- saving


def save(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    out_dir: str | Path,
    meta: dict[str, Any],
    *,
    half: bool = True,
) -> Path:
    """Save as a transformers checkpoint directory (safetensors), with `organism.json`."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    to_save = model
    if half:
        to_save = copy.deepcopy(model).to(torch.float16)
    to_save.save_pretrained(out, safe_serialization=True)
    usual_mode(*out.glob("*.safetensors"))  # safetensors writes them owner-only
    tokenizer.save_pretrained(out)
    (out / "organism.json").write_text(
        json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return out


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["checkpoints"] = list(cfg.checkpoints)
    return d
