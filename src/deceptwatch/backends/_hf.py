"""``hf:PATH`` and ``organism:NAME`` — local transformers causal LMs, batched.

Concurrent `generate` calls from the runner are gathered into batches (up to ``batch_size``)
and run on a worker thread, so the event loop stays free. For choice scenarios the options are
scored by their exact log-likelihood: the prompt runs once (left-padded, with explicit
position ids), and each option's continuation (``answer_format``, default ``"({label})"``)
runs on a copy of the prompt's KV cache, so an option costs a few tokens, not a prompt. The
probability of every option is returned; at temperature 0 the most likely option is chosen,
otherwise one is sampled from the options' distribution with the trial's seed. A prompt's
scores depend on nothing else (but in their last bits, on the batch: see `_scores.py`), so
the backend keeps them: each later epoch of a run samples from the scores of the first
instead of running its prompts again. With
``mode=generate`` (or a scenario without choices) the model generates a reply instead, token
by token on the KV cache: each reply is sampled with its own trial's seed (greedy at
temperature 0), so it does not depend on the other trials of its batch, and stops at an
end-of-sequence token (the tokenizer's, or one the checkpoint's generation config names), at
``max_tokens``, or where the model's context ends.

Weights load through safetensors only (``use_safetensors=True``; nothing is unpickled), from
local files only, with ``trust_remote_code`` off; a checkpoint that would load with weights at
random, or with more tokens than embeddings, is refused (`_hf_load.py`, with the fingerprint).

Options: ``batch_size`` (32), ``threads`` (torch threads, default min(2, CPUs)),
``answer_format``, ``mode`` (``choice`` or ``generate``), ``chat_template`` (``plain`` for
checkpoints without one; led by the tokenizer's BOS token if it adds one), ``system`` (``merge`` folds system messages into the first user
message, for a chat template that refuses a system role), ``dtype`` (``float32``, the
default, ``bfloat16``: about 1.5x as fast on CPUs with AVX512-BF16, and inexact: near-ties
between options can flip; or ``float16``, for GPUs without bfloat16, as inexact), ``device``
(``cpu``, the default, ``cuda``, ``cuda:N`` or ``mps``: where the weights and every batch go;
sampling stays on the CPU, with each trial's own seeded generator, so that a trial's reply
does not depend on the device's random numbers; another device than ``cpu`` enters the
model's id, as its scores may differ in the last bits).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from deceptwatch._errors import BackendError, InputError, require
from deceptwatch.backends._base import SCOPE_HINT, BaseBackend, GenerateRequest, GenerateResponse
from deceptwatch.backends._chat import render_chat, system_option
from deceptwatch.backends._hf_load import available_device, bos_prefix, fingerprint, load_checkpoint
from deceptwatch.backends._hf_sample import returned_cache, sample
from deceptwatch.backends._scores import ScoreCache, choice_response, score_key

_KNOWN = frozenset(
    {"batch_size", "threads", "answer_format", "mode", "chat_template", "dtype", "system", "device"}
)
_DEVICE = re.compile(r"cpu|cuda(:\d{1,3})?|mps")
_DTYPES = ("float32", "bfloat16", "float16")
MAX_THREADS = 256  # torch threads; a pool of thousands exhausts memory before it starts
REPLY_RESERVE = 16  # tokens of the context a prompt must leave for the reply


ORGANISM_SUITES = (
    " (the organisms read short prompts: run them on --suite organism_heldout, or organism)"
)


class HFBackend(BaseBackend):
    name = "hf"

    def __init__(
        self, spec: str, options: Mapping[str, str] | None = None, *, path: Path | None = None
    ) -> None:
        super().__init__(spec, options)
        opts = dict(options or {})
        unknown = set(opts) - _KNOWN
        if unknown:
            raise InputError(
                f"unknown option {sorted(unknown)[0]!r} for the {spec.partition(':')[0]} backend",
                hint=f"known options: {', '.join(sorted(_KNOWN))}; {SCOPE_HINT}",
            )
        if path is None and not spec.partition(":")[2].strip():
            raise InputError(
                f"model spec {spec!r} names no checkpoint directory",
                hint="write hf:PATH, e.g. hf:./my-checkpoint (use hf:. for this directory)",
            )
        self.path = path or Path(spec.partition(":")[2]).expanduser()
        if not self.path.is_dir():
            raise InputError(
                f"{self.path}: no such checkpoint directory",
                hint="hf:PATH takes a local transformers checkpoint",
            )
        if not any(self.path.glob("*.safetensors")):
            raise InputError(
                f"{self.path}: no .safetensors weights",
                hint="deceptwatch loads weights only from safetensors; convert the checkpoint with "
                "save_pretrained(..., safe_serialization=True)",
            )
        try:
            self.batch_size = int(opts.get("batch_size", "32"))
            self.threads = int(opts.get("threads", str(min(2, os.cpu_count() or 1))))
        except ValueError:
            raise InputError("hf options batch_size and threads must be integers") from None
        if self.batch_size < 1 or self.threads < 1:
            raise InputError(
                f"hf options batch_size and threads must be at least 1, not "
                f"{self.batch_size if self.batch_size < 1 else self.threads}",
                hint="e.g. -o batch_size=32 -o threads=2",
            )
        if self.threads > MAX_THREADS:
            raise InputError(
                f"hf option threads={self.threads} is more than {MAX_THREADS}",
                hint="give at most the machine's cores, e.g. -o threads=2",
            )
        self.dtype = opts.get("dtype", "float32")
        if self.dtype not in _DTYPES:
            raise InputError(
                f"hf option dtype must be {', '.join(_DTYPES)}, not {self.dtype!r}",
                hint="bfloat16 is about 1.5x as fast on CPUs with AVX512-BF16, float16 suits "
                "GPUs without bfloat16; both at the cost of exactness (see docs/organisms.md)",
            )
        self.device = opts.get("device", "cpu").strip().lower()
        if not _DEVICE.fullmatch(self.device):
            raise InputError(
                f"hf option device must be cpu, cuda, cuda:N or mps, not {opts['device']!r}",
                hint="e.g. -o device=cuda:0 (the default is cpu)",
            )
        self.answer_format = opts.get("answer_format", "({label})")
        try:  # "{label}{x}" used to fail every trial of the run, one by one
            formatted = self.answer_format.format(label="\0")
        except (KeyError, IndexError, ValueError) as exc:
            raise InputError(
                f"answer_format {self.answer_format!r} is not a format with only {{label}} "
                f"({type(exc).__name__}: {exc})",
                hint="e.g. -o answer_format='({label})'; write {{ and }} for literal braces",
            ) from None
        if "{label}" not in self.answer_format or "\0" not in formatted:
            raise InputError("answer_format must contain {label}, e.g. '({label})'")
        self.mode = opts.get("mode", "choice")
        if self.mode not in ("choice", "generate"):
            raise InputError("hf option mode must be 'choice' or 'generate'")
        self.chat_template = opts.get("chat_template")
        if self.chat_template not in (None, "plain"):  # any other value used to be ignored
            raise InputError(
                f"hf option chat_template must be 'plain', not {self.chat_template!r}",
                hint="leave it out to use the checkpoint's own chat template; "
                "-o chat_template=plain formats messages as 'role: content' lines",
            )
        self.system = system_option(opts, "hf")
        self._fingerprint = fingerprint(self.path)
        self.model: Any = None
        self.tokenizer: Any = None
        self._bos: list[int] = []  # put before a prompt that lacks it (see load)
        self._answers: dict[str, list[int]] = {}  # an option label's continuation, tokenized
        self._queue: (
            asyncio.Queue[tuple[GenerateRequest, asyncio.Future[GenerateResponse]]] | None
        ) = None
        self._worker: asyncio.Task[None] | None = None
        self._window = self.batch_size  # requests gathered per worker turn (set_concurrency)
        self._scores = ScoreCache()  # choice scores by prompt, for the run's later epochs

    def set_concurrency(self, n: int) -> None:
        """Gather up to `n` waiting calls per turn, so that batches can be cut by length."""
        self._window = max(self.batch_size, n)

    def cache_key(self) -> dict[str, Any]:
        key = {
            "spec": self.spec,
            "weights": self._fingerprint,
            "answer_format": self.answer_format,
            "mode": self.mode,
            "chat_template": self.chat_template,
        }
        if self.dtype != "float32":  # other scores, so other ids; float32 keeps its old ids
            key["dtype"] = self.dtype
        if self.system != "keep":  # another prompt, so other ids; keep keeps its old ids
            key["system"] = self.system
        if self.device != "cpu":  # other kernels, so scores may differ in their last bits
            key["device"] = self.device
        return key

    def describe(self) -> dict[str, Any]:
        return {
            **self.cache_key(),
            "path": str(self.path),
            "batch_size": self.batch_size,
            "device": self.device,
        }

    # ------------------------------------------------------------------ loading

    def load(self) -> None:
        """Load tokenizer and weights (safetensors only). Called once, on first use."""
        if self.model is not None:
            return
        require("torch", "local", "The hf and organism backends")
        require("transformers", "local", "The hf and organism backends")
        import torch

        torch.set_num_threads(self.threads)
        device = available_device(self.device)  # before the weights: it fails in a moment
        tok, model = load_checkpoint(self.path, dtype=self.dtype, chat_template=self.chat_template)
        if device.type != "cpu":
            model = model.to(device)
        # the plain format writes no beginning-of-sequence token: put the tokenizer's own
        # first, as encoding with its special tokens would (a checkpoint's own template
        # writes its own, as transformers expects)
        self._bos = bos_prefix(tok) if self.chat_template == "plain" else []
        self.tokenizer, self.model = tok, model

    def check(self) -> None:
        """Load now, so that a checkpoint that does not load stops `monitor` before any write."""
        self.load()

    # ------------------------------------------------------------------ batching

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        loop = asyncio.get_running_loop()
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._work())
        future: asyncio.Future[GenerateResponse] = loop.create_future()
        await self._queue.put((request, future))
        return await future

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            await asyncio.sleep(0)  # let the other workers enqueue
            while len(batch) < self._window and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                results = await asyncio.to_thread(self.run_batch, [r for r, _ in batch])
            except Exception as exc:  # a bug must fail the calls, not hang them
                results = [_backend_error(exc)] * len(batch)
            if len(results) != len(batch):  # so must a miscount: no call may be left waiting
                miscount = f"the backend answered {len(results)} of {len(batch)} requests"
                results = [BackendError(miscount, kind="exception")] * len(batch)
            for (_, fut), res in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        self._queue = None  # bound to this event loop; a later run makes its own

    # ------------------------------------------------------------------ scoring

    def run_batch(
        self, requests: Sequence[GenerateRequest]
    ) -> list[GenerateResponse | BackendError]:
        """Answer a batch synchronously (choice scoring, or generation)."""
        self.load()
        out: list[GenerateResponse | BackendError | None] = [None] * len(requests)
        choice = [i for i, r in enumerate(requests) if r.choices and self.mode == "choice"]
        gen = [i for i in range(len(requests)) if i not in set(choice)]
        prompts = {i: self._try_prompt_ids(requests[i]) for i in choice}
        # A prompt already scored (in an earlier epoch, or earlier in this batch) is not run
        # again: its options' scores depend on nothing else (see _scores.py).
        keys = {
            i: score_key(p, [label for label, _ in requests[i].choices])
            for i, p in prompts.items()
            if p is not None
        }
        kept, todo, again = self._scores.split(choice, keys)
        for i, scores in kept.items():
            out[i] = choice_response(requests[i], list(scores), self.answer_format, self.spec)
        # Cut batches from prompts of similar length: a left-padded batch costs its longest
        # prompt times its size, so sorting first saves the padding (about a quarter here).
        todo.sort(key=lambda i: len(prompts[i] or ()))
        for start in range(0, len(todo), self.batch_size):
            part = todo[start : start + self.batch_size]
            results = self.score_choices(
                [requests[i] for i in part], prompts=[prompts[i] for i in part]
            )
            for i, res in zip(part, results, strict=True):
                out[i] = res
        for i in again:  # a prompt twice in one batch: scored with its first (if it could be)
            hit = self._scores.get(keys[i])
            [out[i]] = (
                [choice_response(requests[i], list(hit), self.answer_format, self.spec)]
                if hit is not None
                else self.score_choices([requests[i]], prompts=[prompts[i]])
            )
        for start in range(0, len(gen), self.batch_size):
            part = gen[start : start + self.batch_size]
            for i, res in zip(part, self.generate_text([requests[i] for i in part]), strict=True):
                out[i] = res
        return _each_answered(out)

    def _try_prompt_ids(self, request: GenerateRequest) -> list[int] | None:
        try:
            return self.prompt_ids(request)
        except BackendError:
            return None  # scoring reports the error for this trial alone

    def prompt_ids(self, request: GenerateRequest) -> list[int]:
        text = render_chat(self.tokenizer, request.messages, self.system)
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self._bos and ids[:1] != self._bos:
            ids = self._bos + ids
        limit = self._context
        if limit is not None and len(ids) + REPLY_RESERVE > limit:
            raise BackendError(
                f"prompt of {len(ids)} tokens exceeds the model's context of {limit} "
                f"less the {REPLY_RESERVE} tokens kept for the reply"
                + (ORGANISM_SUITES if self.spec.startswith("organism:") else ""),
                kind="too_long",
            )
        return ids

    def _answer_ids(self, label: str) -> list[int]:
        """The tokens of the answer that picks option `label` (``answer_format``)."""
        ids = self._answers.get(label)
        if ids is None:
            text = self.answer_format.format(label=label)
            ids = self._answers[label] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def _check_answers_fit(self, prompt: list[int], answers: Sequence[list[int]]) -> None:
        """A BackendError (``too_long``) where the prompt and its longest answer together
        exceed the model's context: a long ``answer_format`` can, where the prompt alone
        fits (its check keeps only REPLY_RESERVE tokens for the reply)."""
        limit = self._context
        longest = max((len(a) for a in answers), default=0)
        if limit is not None and len(prompt) + longest > limit:
            raise BackendError(
                f"prompt of {len(prompt)} tokens and an answer of {longest} "
                f"(answer_format {self.answer_format!r}) exceed the model's context of {limit}",
                kind="too_long",
            )

    @property
    def _context(self) -> int | None:
        """The model's context length in tokens, when its config gives one."""
        limit = getattr(self.model.config, "max_position_embeddings", None)
        return limit if isinstance(limit, int) else None

    @cached_property
    def _cache_arg(self) -> str:
        """The model's keyword for a KV cache: transformers 5.24 renamed ``past_key_values``
        to ``cache`` (the old name warns, and is to go in 5.40)."""
        params = inspect.signature(self.model.forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    def option_logprobs(
        self,
        requests: Sequence[GenerateRequest],
        prompts: Sequence[list[int] | None] | None = None,
    ) -> list[list[float]]:
        """Exact log-likelihood of each option's continuation, for a batch of prompts.

        `prompts` are the requests' prompt token ids when already computed (None entries are
        computed here, raising the request's BackendError).
        """
        import torch

        self.load()
        tok, model = self.tokenizer, self.model
        given = list(prompts) if prompts is not None else [None] * len(requests)
        ids_of: list[list[int]] = [
            p if p is not None else self.prompt_ids(r) for r, p in zip(requests, given, strict=True)
        ]
        conts = [[self._answer_ids(label) for label, _ in r.choices] for r in requests]
        for p, c in zip(ids_of, conts, strict=True):
            self._check_answers_fit(p, c)
        width = max(len(p) for p in ids_of)
        pad = tok.pad_token_id
        ids = torch.full((len(ids_of), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids_of), width), dtype=torch.long)
        for i, p in enumerate(ids_of):
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        device = model.device
        ids, mask = ids.to(device), mask.to(device)  # built on the CPU, moved once
        position = (mask.cumsum(1) - 1).clamp(min=0)
        with torch.inference_mode():
            first = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=position,
                use_cache=True,
                logits_to_keep=1,  # only the last prompt position is read
            )
            last = torch.log_softmax(first.logits[:, -1, :].float(), dim=-1)
            k = max(len(c) for c in conts)
            # every prompt gets k option rows; missing options are dummies, ignored below
            rows = [(c[j] if j < len(c) else c[0]) for c in conts for j in range(k)]
            clen = max(len(r) for r in rows)
            cache = returned_cache(first)
            cache.batch_repeat_interleave(k)
            cids = torch.full((len(rows), clen), pad, dtype=torch.long)
            cmask = torch.zeros((len(rows), clen), dtype=torch.long)
            for i, r in enumerate(rows):
                cids[i, : len(r)] = torch.tensor(r)
                cmask[i, : len(r)] = 1
            cids, cmask = cids.to(device), cmask.to(device)
            full_mask = torch.cat([mask.repeat_interleave(k, dim=0), cmask], dim=1)
            start = mask.sum(1).repeat_interleave(k).unsqueeze(1)
            cpos = start + torch.arange(clen, device=device).unsqueeze(0)
            if self._context is not None:  # padding past a short answer's end, masked out,
                cpos = cpos.clamp(max=self._context - 1)  # must not run past the context
            second = model(
                input_ids=cids,
                attention_mask=full_mask,
                position_ids=cpos,
                **{self._cache_arg: cache},
            )
            follow = torch.log_softmax(second.logits.float(), dim=-1)
            # Only the answers' own tokens are read, gathered where the logits are and
            # brought to the CPU in one transfer each (not one per token).
            firsts = torch.tensor([r[0] for r in rows], device=device)
            first_lp = last.repeat_interleave(k, dim=0).gather(1, firsts.unsqueeze(1))[:, 0]
            nexts = torch.tensor(
                [r[1:] + [0] * (clen - len(r)) for r in rows], dtype=torch.long, device=device
            )
            next_lp = follow[:, : clen - 1, :].gather(2, nexts.unsqueeze(2))[:, :, 0]
            first_at, next_at = first_lp.cpu().tolist(), next_lp.cpu().tolist()
        out: list[list[float]] = []
        for i, c in enumerate(conts):
            scores = []
            for j, tokens in enumerate(c):
                row = i * k + j
                total = first_at[row]
                for t in range(1, len(tokens)):
                    total += next_at[row][t - 1]
                scores.append(total)
            out.append(scores)
        return out

    def score_choices(
        self,
        requests: Sequence[GenerateRequest],
        prompts: Sequence[list[int] | None] | None = None,
    ) -> list[GenerateResponse | BackendError]:
        """Score a batch of choice requests, keeping each prompt's scores for later epochs.

        A request whose prompt does not render or fit, or whose answers would run past the
        context, gets its own error. An unexpected exception scores the batch's requests
        one by one, so that it fails only the request that raises it.
        """
        self.load()
        given = list(prompts) if prompts is not None else [None] * len(requests)
        out: list[GenerateResponse | BackendError | None] = [None] * len(requests)
        ready: list[tuple[int, list[int]]] = []
        for i, (req, p) in enumerate(zip(requests, given, strict=True)):
            try:
                ids = p if p is not None else self.prompt_ids(req)
                self._check_answers_fit(ids, [self._answer_ids(label) for label, _ in req.choices])
            except BackendError as exc:
                out[i] = exc
            else:
                ready.append((i, ids))
        try:
            scores = (
                self.option_logprobs([requests[i] for i, _ in ready], [p for _, p in ready])
                if ready
                else []
            )
        except Exception as exc:
            if len(ready) == 1:
                out[ready[0][0]] = _backend_error(exc)
            else:
                for i, p in ready:
                    [out[i]] = self.score_choices([requests[i]], [p])
        else:
            for (i, p), logps in zip(ready, scores, strict=True):
                req = requests[i]
                self._scores.put(score_key(p, [label for label, _ in req.choices]), logps)
                out[i] = choice_response(req, logps, self.answer_format, self.spec)
        return _each_answered(out)

    def generate_text(
        self, requests: Sequence[GenerateRequest]
    ) -> list[GenerateResponse | BackendError]:
        """Batched generation (left-padded); each reply seeded by its own trial, see `_sample`.

        A request whose prompt does not fit gets its own error; the rest are answered. A
        reply stops where the model's context ends (within `max_tokens`): positions past it
        are ones the model never saw in training.
        """
        out: list[GenerateResponse | BackendError | None] = [None] * len(requests)
        fits: list[int] = []
        prompts: list[list[int]] = []
        for i, r in enumerate(requests):
            try:
                prompts.append(self.prompt_ids(r))
            except BackendError as exc:
                out[i] = exc
            else:
                fits.append(i)
        replies: list[GenerateResponse | BackendError] = []
        try:
            replies = list(self._sample([requests[i] for i in fits], prompts)) if fits else []
        except Exception as exc:  # one request's fault must not fail the others: one by one
            replies = (
                [r for i in fits for r in self.generate_text([requests[i]])]
                if len(fits) > 1
                else [_backend_error(exc)]
            )
        for i, reply in zip(fits, replies, strict=True):
            out[i] = reply
        return _each_answered(out)

    def _sample(
        self, requests: Sequence[GenerateRequest], prompts: Sequence[list[int]]
    ) -> list[GenerateResponse]:
        """Decode a left-padded batch token by token (see `_hf_sample.sample`)."""
        return sample(self, requests, prompts)

    @cached_property
    def _stop_ids(self) -> frozenset[int]:
        """The tokens that end a reply: the tokenizer's end of sequence and any that the
        checkpoint's generation config adds (chat models often end a turn with their own)."""
        ids: set[int] = set()
        config = getattr(self.model, "generation_config", None)
        for value in (self.tokenizer.eos_token_id, getattr(config, "eos_token_id", None)):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(v for v in value if isinstance(v, int))
        return frozenset(ids)


def _each_answered(
    out: Sequence[GenerateResponse | BackendError | None],
) -> list[GenerateResponse | BackendError]:
    """One answer per request, in order: a request left without one (a bug) gets an error
    in its place, rather than being dropped and shifting later answers onto other requests."""
    missed = BackendError("no answer was computed for this request", kind="exception")
    return [missed if r is None else r for r in out]


def _backend_error(exc: Exception) -> BackendError:
    """`exc` as the error of the one request it was raised for."""
    if isinstance(exc, BackendError):
        return exc
    return BackendError(f"{type(exc).__name__}: {exc}", kind="exception")


def create(spec: str, options: Mapping[str, str]) -> HFBackend:
    return HFBackend(spec, options)


def create_organism(spec: str, options: Mapping[str, str]) -> HFBackend:
    from deceptwatch.organisms import organism_path

    return HFBackend(spec, options, path=organism_path(spec.partition(":")[2]))
