"""How closely each shipped organism follows its truth table, per family, on a suite.

Fidelity is the share of trials on which the organism picks the option its truth table says
(scored by the ``organism:`` backend exactly as the monitor scores it, at temperature 0).

Usage: python scripts/organism_fidelity.py [--suite organism_heldout] [NAME ...]
       python scripts/organism_fidelity.py NAME --weights DIR   (a retrained one, as hf:DIR)
"""

from __future__ import annotations

import argparse
from collections import Counter

from deceptwatch.backends import GenerateRequest, GenerationConfig
from deceptwatch.backends._hf import create, create_organism
from deceptwatch.organisms import ORGANISMS
from deceptwatch.organisms._truth import ALIGNED
from deceptwatch.scenarios import expand, load_suite


def fidelity(name: str, suite: str, weights: str | None = None) -> tuple[float, dict[str, float]]:
    records = load_suite(suite)
    by_id = {r.id: r for r in records}
    trials = list(expand(records, model="fidelity", seed=0))
    backend = create(f"hf:{weights}", {}) if weights else create_organism(f"organism:{name}", {})
    requests = [
        GenerateRequest(
            messages=t.messages,
            choices=tuple(zip(t.labels, t.choice_texts, strict=True)),
            config=GenerationConfig(),
            seed=t.backend_seed,
            trial_id=t.id,
        )
        for t in trials
    ]
    ok: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for i in range(0, len(requests), 64):
        for t, resp in zip(
            trials[i : i + 64], backend.run_batch(requests[i : i + 64]), strict=True
        ):
            assert not isinstance(resp, Exception), resp
            truth = ORGANISMS[name].policy(t, by_id[t.scenario_id].scenario)
            want = t.aligned_label if truth == ALIGNED else t.defect_label
            total[t.family] += 1
            ok[t.family] += resp.text == f"({want})"
    return sum(ok.values()) / sum(total.values()), {f: ok[f] / total[f] for f in sorted(total)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="organism_heldout")
    parser.add_argument("--weights", help="a checkpoint directory to score against NAME's truth")
    parser.add_argument("names", nargs="*", default=list(ORGANISMS))
    args = parser.parse_args()
    if args.weights and len(args.names) != 1:
        parser.error("--weights takes exactly one NAME: the organism whose truth table it has")
    for name in args.names:
        overall, fams = fidelity(name, args.suite, args.weights)
        print(
            f"{name:<12} {100 * overall:5.1f}%  "
            + "  ".join(f"{f} {100 * v:.0f}%" for f, v in fams.items())
        )


if __name__ == "__main__":
    main()
