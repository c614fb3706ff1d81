"""Generation for the ``hf:`` backend: a left-padded batch decoded token by token on the KV
cache, each row with its own trial's seed (`sample`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from deceptwatch.backends._base import GenerateRequest, GenerateResponse

if TYPE_CHECKING:
    from deceptwatch.backends._hf import HFBackend


def sample(
    backend: HFBackend, requests: Sequence[GenerateRequest], prompts: Sequence[list[int]]
) -> list[GenerateResponse]:
    """Decode a left-padded batch token by token on the KV cache, each row on its own.

    Row i draws from its own generator seeded by its trial's seed (greedy at temperature
    0), under its own temperature, and stops at an end-of-sequence token, at its
    `max_tokens`, or where the model's context ends for its prompt. So a trial's reply
    depends on its seed and prompt, not on which trials share its batch (a resumed run
    or another concurrency samples the same replies), and torch's global generator is
    left alone.
    """
    import torch

    tok, model = backend.tokenizer, backend.model
    n = len(prompts)
    width = max(len(p) for p in prompts)
    ids = torch.full((n, width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    device = model.device
    ids, mask = ids.to(device), mask.to(device)
    limit = backend._context
    budget = [
        r.config.max_tokens if limit is None else min(r.config.max_tokens, limit - len(p))
        for r, p in zip(requests, prompts, strict=True)
    ]
    temperature = [r.config.temperature for r in requests]
    generators = [
        torch.Generator().manual_seed(r.seed) if r.config.temperature > 0 else None
        for r in requests
    ]
    stop = backend._stop_ids
    replies: list[list[int]] = [[] for _ in range(n)]
    finish = ["length"] * n
    live = [b > 0 for b in budget]
    with torch.inference_mode():
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=(mask.cumsum(1) - 1).clamp(min=0),
            use_cache=True,
            logits_to_keep=1,
        )
        position = mask.sum(1, keepdim=True)
        while any(live):
            # sampled on the CPU, with each trial's own CPU generator, on any device
            logits = out.logits[:, -1, :].float().cpu()
            step = torch.full((n, 1), tok.pad_token_id, dtype=torch.long)
            for i in range(n):
                if not live[i]:
                    continue
                gen = generators[i]
                if gen is None:
                    token = int(logits[i].argmax())
                else:
                    probs = torch.softmax(logits[i] / temperature[i], dim=-1)
                    token = int(torch.multinomial(probs, 1, generator=gen))
                if token in stop:
                    live[i], finish[i] = False, "stop"
                    continue
                replies[i].append(token)
                step[i, 0] = token
                live[i] = len(replies[i]) < budget[i]
            if not any(live):
                break
            cache = returned_cache(out)
            mask = torch.cat([mask, torch.ones((n, 1), dtype=torch.long, device=device)], 1)
            out = model(
                input_ids=step.to(device),
                attention_mask=mask,
                position_ids=position,
                use_cache=True,
                **{backend._cache_arg: cache},
            )
            # a finished row keeps its last position: feeding it on would run past the
            # context (an IndexError in models with absolute position embeddings)
            position = position + torch.tensor(live, device=device).long().unsqueeze(1)
    responses = []
    for p, reply, why in zip(prompts, replies, finish, strict=True):
        text = tok.decode(reply, skip_special_tokens=True)
        usage = {"prompt_tokens": len(p), "completion_tokens": len(reply)}
        raw = json.dumps({"text": text, "finish_reason": why, "usage": usage})
        responses.append(GenerateResponse(text=text, raw=raw, model=backend.spec, usage=usage))
    return responses


def returned_cache(output: Any) -> Any:
    """The KV cache a forward pass returned: ``cache`` since transformers 5.24, before it
    ``past_key_values``."""
    cache = getattr(output, "cache", None)
    return output.past_key_values if cache is None else cache
