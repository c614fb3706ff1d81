"""Choice scoring's results: the reply built from the options' log-likelihoods, and the
log-likelihoods a local backend has computed, kept for the run's later epochs.

A choice trial's scores depend only on the weights, the prompt's tokens and the option labels
(the backend's answer format fixed): not on the epoch or the trial's seed, which only pick
among the options when the temperature is above 0 (up to the last bits: the size and padding
of the batch a prompt runs in change the float arithmetic, by up to about 1e-5 in a
log-likelihood on the organisms; so a tie within that can go either way, and keeping the
first epoch's scores also keeps the later epochs exactly on them). Each epoch of a run poses
the same prompts again, so the backend keeps what it computed, by a hash of the prompt's
tokens and the labels, and scores a prompt once per run rather than once per epoch.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from array import array
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from deceptwatch.backends._base import GenerateRequest, GenerateResponse

# Prompts remembered per backend, the least recently used dropped first: enough for one epoch
# of a suite of 65,536 prompts (a big suite) in about 15 MB (a 16-byte key and a few floats).
SCORES_KEPT = 65_536


def score_key(prompt: Sequence[int], labels: Sequence[str]) -> bytes:
    """A 16-byte digest of a prompt's token ids and its options' labels."""
    h = hashlib.blake2b(digest_size=16)
    h.update(array("q", prompt).tobytes())
    h.update(json.dumps(list(labels)).encode())
    return h.digest()


class ScoreCache:
    """A bounded map from `score_key` to the options' log-likelihoods, in label order."""

    def __init__(self, size: int = SCORES_KEPT) -> None:
        self.size = size
        self._scores: OrderedDict[bytes, tuple[float, ...]] = OrderedDict()
        self.hits = 0

    def get(self, key: bytes) -> tuple[float, ...] | None:
        found = self._scores.get(key)
        if found is not None:
            self._scores.move_to_end(key)
            self.hits += 1
        return found

    def put(self, key: bytes, scores: Sequence[float]) -> None:
        self._scores[key] = tuple(scores)
        self._scores.move_to_end(key)
        while len(self._scores) > self.size:
            self._scores.popitem(last=False)

    def split(
        self, order: Sequence[int], keys: Mapping[int, bytes]
    ) -> tuple[dict[int, tuple[float, ...]], list[int], list[int]]:
        """Of the requests `order` (indexes, with `keys` their score keys; none where the
        prompt failed): the scores kept for some, the rest to score, and those that repeat
        a prompt of the rest (their scores are kept once it is scored)."""
        kept: dict[int, tuple[float, ...]] = {}
        todo: list[int] = []
        again: list[int] = []
        pending: set[bytes] = set()
        for i in order:
            key = keys.get(i)
            hit = None if key is None else self.get(key)
            if hit is not None:
                kept[i] = hit
            elif key in pending:
                again.append(i)
            else:
                todo.append(i)
                if key is not None:
                    pending.add(key)
        return kept, todo, again

    def __len__(self) -> int:
        return len(self._scores)


def choice_response(
    req: GenerateRequest, logps: Sequence[float], answer_format: str, model: str
) -> GenerateResponse:
    """The reply to a choice request whose options score `logps` (in the order of its
    choices): every option's probability, and the likeliest option at temperature 0, else
    one sampled from them with the trial's seed."""
    labels = [label for label, _ in req.choices]
    top = max(logps)
    weights = [math.exp(x - top) for x in logps]
    total = sum(weights)
    probs = {label: w / total for label, w in zip(labels, weights, strict=True)}
    temperature = req.config.temperature
    if temperature <= 0:
        chosen = labels[list(logps).index(top)]
    else:
        tw = [math.exp((x - top) / temperature) for x in logps]
        chosen = random.Random(req.seed).choices(labels, weights=tw)[0]
    raw = json.dumps(
        {"logprobs": dict(zip(labels, logps, strict=True)), "answer_format": answer_format}
    )
    return GenerateResponse(
        text=answer_format.format(label=chosen), raw=raw, choice_probs=probs, model=model
    )
