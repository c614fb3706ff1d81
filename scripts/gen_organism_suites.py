"""Regenerate the organism suites (scenarios/builtin/organism*) from curriculum.yaml."""

from __future__ import annotations

from pathlib import Path

from deceptwatch.organisms._curriculum import write_suites

ROOT = Path(__file__).resolve().parents[1] / "src" / "deceptwatch" / "scenarios" / "builtin"

if __name__ == "__main__":
    for p in write_suites(ROOT):
        print(p.relative_to(ROOT.parents[3]))
