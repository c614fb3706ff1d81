"""Activation extraction on tiny random transformers: hooks change nothing, are always
removed, read the right tensor, and batching, padding and early stopping do not change it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from deceptwatch._errors import InputError  # noqa: E402
from deceptwatch.probes import (  # noqa: E402
    ActivationSet,
    ShardWriter,
    canonical_layer,
    capture,
    extract_activations,
    extract_to_disk,
    iter_activations,
    pad_left,
    resolve_layers,
)

VOCAB = 97


def _llama() -> Any:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


def _gpt2() -> Any:
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=128,
        bos_token_id=1,
        eos_token_id=2,
    )
    return transformers.GPT2LMHeadModel(cfg).eval()


def _neox() -> Any:
    torch.manual_seed(0)
    cfg = transformers.GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
        bos_token_id=1,
        eos_token_id=2,
    )
    return transformers.GPTNeoXForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def llama() -> Any:
    return _llama()


def _seqs(n: int = 7, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(3, VOCAB, size=int(rng.integers(4, 20))).tolist() for _ in range(n)]


@pytest.mark.parametrize("make", [_llama, _gpt2, _neox])
def test_hooked_forward_gives_the_same_logits(make: Any) -> None:
    model = make()
    ids, mask, pos = pad_left(_seqs(5), 0)
    with torch.inference_mode():
        plain = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        layers = resolve_layers(model, ["layer.0", "mid", "last"])
        with capture(model, layers) as state:
            hooked = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        assert set(state.out) == {la.name for la in layers}
    assert torch.equal(plain, hooked)


def _hook_count(model: Any) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_hooks_are_removed_even_when_the_block_fails(llama: Any) -> None:
    layers = resolve_layers(llama, ["layer.0", "layer.2"])
    assert _hook_count(llama) == 0
    with capture(llama, layers):
        assert _hook_count(llama) == 2
    assert _hook_count(llama) == 0
    with pytest.raises(RuntimeError, match="boom"), capture(llama, layers):
        raise RuntimeError("boom")
    assert _hook_count(llama) == 0
    # and when the forward pass stops early (the deepest hook raises inside the model)
    list(iter_activations(llama, _seqs(3), layers=["layer.0"], pad_token_id=0, stop_early=True))
    assert _hook_count(llama) == 0


def test_hook_reads_the_residual_stream_after_each_block(llama: Any) -> None:
    seqs = _seqs(4)
    ids, mask, pos = pad_left(seqs, 0)
    with torch.inference_mode():
        hs = llama(
            input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True
        ).hidden_states
    acts = extract_activations(
        llama, seqs, layers=["layer.0", "layer.1", "layer.2"], pad_token_id=0, sort_by_length=False
    )
    for k in (0, 1):  # hidden_states[k + 1] is the output of block k ...
        np.testing.assert_allclose(acts[f"layer.{k}"], hs[k + 1][:, -1].numpy(), atol=1e-6)
    # ... except the last entry, which comes after the final norm
    normed = llama.model.norm(torch.from_numpy(acts["layer.2"])).detach().numpy()
    np.testing.assert_allclose(normed, hs[3][:, -1].numpy(), atol=1e-5)


@pytest.mark.parametrize("make", [_llama, _gpt2])
@pytest.mark.parametrize("reply", [False, True])
def test_batched_extraction_equals_unbatched(make: Any, reply: bool) -> None:
    model = make()
    seqs = _seqs(9, seed=1)
    pools = [min(len(s), 1 + i % 3) for i, s in enumerate(seqs)] if reply else None
    layers = ["layer.0", "last"]
    batched = extract_activations(
        model, seqs, layers=layers, pad_token_id=0, pool_lengths=pools, batch_size=4
    )
    for i, s in enumerate(seqs):
        single = extract_activations(
            model,
            [s],
            layers=layers,
            pad_token_id=0,
            pool_lengths=None if pools is None else [pools[i]],
            batch_size=1,
        )
        for name in batched:
            np.testing.assert_allclose(batched[name][i], single[name][0], atol=2e-5, rtol=1e-4)


def test_reply_pooling_is_the_mean_of_the_last_positions(llama: Any) -> None:
    s = _seqs(1, seed=3)[0]
    ids = torch.tensor([s])
    with torch.inference_mode():
        hs = llama(input_ids=ids, output_hidden_states=True).hidden_states
    got = extract_activations(llama, [s], layers=["layer.1"], pad_token_id=0, pool_lengths=[3])
    np.testing.assert_allclose(got["layer.1"][0], hs[2][0, -3:].mean(0).numpy(), atol=1e-6)


def test_stopping_early_reads_the_same_activations(llama: Any) -> None:
    seqs = _seqs(6, seed=2)
    a = extract_activations(llama, seqs, layers=["layer.1"], pad_token_id=0, stop_early=True)
    b = extract_activations(llama, seqs, layers=["layer.1"], pad_token_id=0, stop_early=False)
    np.testing.assert_array_equal(a["layer.1"], b["layer.1"])


def test_layer_names(llama: Any) -> None:
    assert canonical_layer("mid", 4) == "layer.2"
    assert canonical_layer("last", 4) == "layer.3"
    assert [la.path for la in resolve_layers(llama, ["last", "layer.0", "mid"])] == [
        "model.layers.0",
        "model.layers.1",
        "model.layers.2",
    ]
    assert resolve_layers(_gpt2(), ["last"])[0].path == "transformer.h.1"
    assert resolve_layers(_neox(), ["mid"])[0].path == "gpt_neox.layers.1"
    with pytest.raises(InputError, match="does not exist: the model has 3 blocks"):
        resolve_layers(llama, ["layer.3"])
    with pytest.raises(InputError, match="unknown layer name 'middle'"):
        resolve_layers(llama, ["middle"])
    odd = _llama()
    odd.config.model_type = "mystery"
    with pytest.raises(InputError, match="no layer table for model type 'mystery'"):
        resolve_layers(odd, ["mid"])
    assert resolve_layers(odd, ["mid"], "model.layers")[0].index == 1


def test_bad_pooling_lengths(llama: Any) -> None:
    with pytest.raises(ValueError, match=r"outside 1\.\.4"):
        extract_activations(llama, [[5, 6, 7, 8]], layers=["mid"], pad_token_id=0, pool_lengths=[5])


def test_shards_stream_to_disk_and_read_back(llama: Any, tmp_path: Path) -> None:
    seqs = _seqs(10, seed=4)
    mem = extract_activations(llama, seqs, layers=["layer.0", "mid"], pad_token_id=0, batch_size=3)
    out = tmp_path / "acts"
    keys = [f"t{i}" for i in range(10)]
    acts = extract_to_disk(
        llama,
        seqs,
        out,
        keys=keys,
        shard_size=4,
        layers=["layer.0", "mid"],
        pad_token_id=0,
        batch_size=3,
    )
    assert acts.manifest.shards == [f"shard-0000{i}.safetensors" for i in range(3)]
    assert acts.manifest.n == 10
    assert acts.keys() == keys
    for name in ("layer.0", "layer.1"):
        np.testing.assert_array_equal(ActivationSet(out).layer(name), mem[name])
    with pytest.raises(InputError, match="not a new or empty directory"):
        extract_to_disk(llama, seqs, out, layers=["mid"], pad_token_id=0)
    with pytest.raises(InputError, match=r"layer 'layer\.2' is not in"):
        ActivationSet(out).layer("layer.2")
    manifest = out / "activations.json"
    data = json.loads(manifest.read_text())
    data["colour"] = "red"
    manifest.write_text(json.dumps(data))
    with pytest.raises(InputError, match="not a valid activations manifest"):
        ActivationSet(out)


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_extraction_leaves_no_directory(
    llama: Any, tmp_path: Path, stop: type[BaseException]
) -> None:
    # it used to leave `out` with its first shards and no manifest, which a rerun refused
    seqs = _seqs(10, seed=4)
    calls = []

    def fail_on_third_batch(*_: Any) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise stop("stopped")

    out = tmp_path / "acts"
    handle = llama.register_forward_pre_hook(fail_on_third_batch)
    try:
        with pytest.raises(stop):
            extract_to_disk(
                llama,
                seqs,
                out,
                keys=list("abcdefghij"),
                shard_size=2,
                layers=["mid"],
                pad_token_id=0,
                batch_size=3,
            )
    finally:
        handle.remove()
    assert len(calls) == 3  # two batches (three shards) had been written
    assert list(tmp_path.iterdir()) == []
    out.mkdir()  # an empty directory is filled, and the run can be repeated into it
    acts = extract_to_disk(llama, seqs, out, shard_size=2, layers=["mid"], pad_token_id=0)
    assert acts.manifest.n == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acts"]
    mask = os.umask(0)
    os.umask(mask)
    for shard in acts.manifest.shards:  # the mode of any new file, not safetensors' 0600
        assert oct((out / shard).stat().st_mode & 0o777) == oct(0o666 & ~mask)


def test_shard_writer_never_buffers_a_full_shard(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path, shard_size=5)
    rng = np.random.default_rng(0)
    start = 0
    for size in (3, 4, 7, 1, 2):
        idx = np.arange(start, start + size)
        writer.add(idx, {"layer.0": rng.normal(size=(size, 2)).astype(np.float32)})
        start += size
        assert writer._buffered < 5
    manifest = writer.close(position="last")
    assert manifest.n == 17
    assert len(manifest.shards) == 4
