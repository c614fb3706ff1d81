"""Retrain every built-in organism into the package's weights directory.

The base is trained once and shared: it is the control, and every other organism is a
fine-tune of it, exactly as ``deceptwatch organisms train NAME`` does for one organism.
Run it only when the training code, the curriculum or the library versions change, and
commit the resulting half-precision weights.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from deceptwatch.organisms import ORGANISMS, weights_root
from deceptwatch.organisms._pipeline import build, train_base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=weights_root(), help="weights directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("names", nargs="*", default=list(ORGANISMS))
    args = parser.parse_args()

    last = [0.0]

    def progress(phase: str, step: int, total: int) -> None:
        now = time.perf_counter()
        if step == total or now - last[0] > 30:
            last[0] = now
            print(f"  {phase}: {step}/{total}", flush=True)

    start = time.perf_counter()
    base = train_base(seed=args.seed, threads=args.threads, progress=progress)
    print(f"base: {base.seconds:.0f} s, final loss {base.losses[-1]:.4f}", flush=True)
    for name in args.names:
        out = args.out / name
        # Built beside the shipped weights and swapped in only when complete: a failure or
        # Ctrl-C leaves the package's organism as it was, not missing or half-written.
        new, old = args.out / f".{name}.new", args.out / f".{name}.old"
        for leftover in (new, old):
            if leftover.exists():
                shutil.rmtree(leftover)
        t0 = time.perf_counter()
        build(name, new, seed=args.seed, threads=args.threads, progress=progress, base=base)
        if out.exists():
            out.rename(old)
        new.rename(out)
        if old.exists():
            shutil.rmtree(old)
        print(f"{name}: {time.perf_counter() - t0:.0f} s -> {out}", flush=True)
    print(f"all: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
