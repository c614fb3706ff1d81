"""How closely each shipped organism follows its truth table, per family, on a suite.

Fidelity is the share of trials on which the organism picks the option its truth table says
(scored by the ``organism:`` backend exactly as the monitor scores it, at temperature 0).

Usage: python scripts/organism_fidelity.py [--suite organism_heldout] [NAME ...]
       python scripts/organism_fidelity.py NAME --weights DIR   (a retrained one, as hf:DIR)
       python scripts/organism_fidelity.py --record   (write it into the shipped organism.json)
       python scripts/organism_fidelity.py --trained-only   (on the trials training answered)
"""

from __future__ import annotations

import argparse

from deceptwatch.organisms import ORGANISMS, weights_root
from deceptwatch.organisms._curriculum import HELDOUT_SUITE, TRAIN_SUITE
from deceptwatch.organisms._fidelity import fidelity
from deceptwatch.organisms._pipeline import HELDOUT_PARAPHRASE, record_fidelity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default=HELDOUT_SUITE)
    parser.add_argument("--weights", help="a checkpoint directory to score against NAME's truth")
    parser.add_argument(
        "--record",
        action="store_true",
        help="record the held-out fidelity in each shipped organism's organism.json",
    )
    parser.add_argument(
        "--trained-only",
        action="store_true",
        help="score the training suite's trials but its held-out paraphrase: what training saw",
    )
    parser.add_argument("names", nargs="*", default=list(ORGANISMS))
    args = parser.parse_args()
    if args.trained_only and args.suite != HELDOUT_SUITE:
        parser.error("--trained-only scores the training suite: give no --suite")
    if args.weights and len(args.names) != 1:
        parser.error("--weights takes exactly one NAME: the organism whose truth table it has")
    if args.record and (args.weights or args.suite != HELDOUT_SUITE or args.trained_only):
        parser.error("--record writes the shipped weights' held-out fidelity only")
    for name in args.names:
        if args.record:
            result = record_fidelity(name, weights_root() / name)
        else:
            result = fidelity(
                name,
                args.weights,
                suite=TRAIN_SUITE if args.trained_only else args.suite,
                skip_paraphrase=HELDOUT_PARAPHRASE if args.trained_only else None,
            )
        print(
            f"{name:<12} {100 * result.rate:5.1f}%  "
            + "  ".join(f"{f} {100 * k / n:.0f}%" for f, (k, n) in result.families.items())
            + (f"  ({result.errors} not scored)" if result.errors else "")
        )


if __name__ == "__main__":
    main()
