"""Authoring check for a scenario directory: loads it and applies the guide's rules.

Usage: python scripts/check_suite.py PATH [PATH ...]
"""

from __future__ import annotations

import sys

from deceptwatch._errors import InputError
from deceptwatch.scenarios import conditions, expand, load_path
from deceptwatch.scenarios._schema import PRECURSOR_FAMILIES


def main(paths: list[str]) -> int:
    bad = 0
    for path in paths:
        try:
            records = load_path(path)
        except InputError as exc:
            print(exc)
            return 2
        for r in records:
            sc = r.scenario
            problems = []
            if not r.id.startswith(r.suite + "/"):
                problems.append(f"id should start with '{r.suite}/'")
            o = sc.oversight
            if o is not None:
                if len(o.observed) < 3:
                    problems.append("fewer than 3 paraphrases per cue")
                if not o.placebo:
                    problems.append("no placebo cues")
                if sc.family == "defection_threshold":
                    if "payoff" not in sc.factors or len(sc.factors["payoff"]) < 3:
                        problems.append(
                            "defection_threshold needs a payoff factor with >= 3 levels"
                        )
                elif set(sc.factors.get("stakes", {})) != {"low", "high"}:
                    problems.append("needs a `stakes` factor with levels low and high")
            elif sc.family not in PRECURSOR_FAMILIES:
                problems.append("needs an oversight factor")
            for c in conditions(sc):
                for cue in c.cues:
                    for ch in sc.choices:
                        if ch.text.strip().lower()[:40] in cue.lower():
                            problems.append(f"cue quotes a choice: {cue[:60]!r}")
            trials = list(expand([r], model="check", seed=0))
            by_block: dict[str, list] = {}
            for t in trials:
                by_block.setdefault(t.block_id, []).append(t)
            for block in by_block.values():
                base = block[0]
                for t in block[1:]:
                    a = [m["content"].replace(base.cue, "<CUE>") for m in base.messages]
                    b = [m["content"].replace(t.cue, "<CUE>") for m in t.messages]
                    if a != b:
                        problems.append("a pair differs in more than the cue")
                        break
            words = sum(len(m["content"].split()) for m in trials[0].messages)
            status = "ok" if not problems else "; ".join(sorted(set(problems)))
            print(f"{r.id:60s} {sc.family:22s} {len(trials):3d} trials {words:4d} words  {status}")
            bad += bool(problems)
        print(f"{len(records)} scenarios, {bad} with problems")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
