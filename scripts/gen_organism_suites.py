"""Regenerate the organism suites (scenarios/builtin/organism*) from curriculum.yaml.

Usage: python scripts/gen_organism_suites.py            # rewrite the suite files
       python scripts/gen_organism_suites.py --check    # exit 1 if a file is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deceptwatch.organisms._curriculum import generate, render_yaml, write_suites

ROOT = Path(__file__).resolve().parents[1] / "src" / "deceptwatch" / "scenarios" / "builtin"


def stale(root: Path) -> list[str]:
    """The suite files under `root` that differ from what the curriculum generates (or are
    missing, or are left over)."""
    out = []
    for suite, families in generate().items():
        wanted = {f"{family}.yaml": render_yaml(s) for family, s in families.items()}
        d = root / suite
        have = {p.name for p in d.glob("*.yaml")} if d.is_dir() else set()
        for name in sorted(have | set(wanted)):
            p = d / name
            text = p.read_text(encoding="utf-8") if p.exists() else None
            if text != wanted.get(name):
                out.append(str(p.relative_to(root.parents[2])))
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a suite file is stale")
    args = parser.parse_args(argv)
    if args.check:
        bad = stale(ROOT)
        for p in bad:
            print(f"stale: {p}")
        return 1 if bad else 0
    for p in write_suites(ROOT):
        print(p.relative_to(ROOT.parents[3]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
