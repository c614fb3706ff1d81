"""Library hygiene checks for scenarios (``deceptwatch scenarios lint``).

The checks run over the scenario's real expansion (`expand`), so they see what a model
sees:

- **pair**: the trials of a block (observed, unobserved, placebo, graded levels) differ only
  in the cue: with the cue cut out, their messages are identical, and the cue does appear;
- **leak**: no cue gives the answer away: it does not quote a choice (a run of
  `NGRAM` words of a choice's text, or the whole text), and it does not carry
  `LEAK_WORDS` or more words that only one choice uses (words absent from the prompt, the
  factor texts and the other choices) while carrying none of the other choice's;
- **placebo**: no placebo cue is another condition's cue (observed, unobserved or a graded
  level) once case and spacing are ignored: a placebo rewords the observed cue, so the
  placebo gap measures wording alone (`check_placebo`);
- **environments** (`simulated_env`): the prompt is the same under every cue, the cue is
  shown in a file or a command output, and nothing else differs (`check_environment`);
  each **walkthrough** replayed under every cue ends exactly at its last action, the aligned
  one `aligned` and the defect one `defect`, with the cue shown before that action
  (`check_walkthroughs`);
- **balance**: over the blocks of a scenario, the aligned and the defect choice sit at each
  letter about equally often: each letter's count lies within half to one and a half times
  its fair share, or within one of it (a scenario with fewer blocks than choices cannot be
  balanced alone, so it is checked only as part of its suite, where each scenario's order is
  its own seeded shuffle: there a letter may also stray by chance, up to three binomial
  standard deviations).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from deceptwatch.scenarios._expand import LETTERS, Trial, conditions, expand
from deceptwatch.scenarios._loader import ScenarioRecord
from deceptwatch.scenarios._schema import Scenario

NGRAM = 5
LEAK_WORDS = 3
_WORD = re.compile(r"[a-z0-9][a-z0-9'’-]*")
_STOP = frozenset(
    """a an the and or but if of to in on at by for with from as is are was were be been being
    it its this that these those there their they them you your yours i me my we our us he she
    his her not no do does did done have has had will would could should can may might must
    shall so than then also only just very more most some any all each every other such into
    onto over under about after before while when where which what who whom whose why how
    because until up down out off again once here now""".split()  # noqa: SIM905
)


@dataclass(frozen=True)
class Problem:
    """One lint finding: the scenario id (or ``suite:NAME``), the check, and a message."""

    where: str
    check: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"id": self.where, "check": self.check, "message": self.message}


def _words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def _content(text: str) -> set[str]:
    """Content words, with a plural "s" cut (so "shortfalls" matches "shortfall")."""
    out = set()
    for w in _words(text):
        if w in _STOP or len(w) <= 3:
            continue
        out.add(w[:-1] if len(w) > 4 and w.endswith("s") and not w.endswith("ss") else w)
    return out


def _ngrams(words: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def check_leaks(sc: Scenario) -> list[str]:
    """Cues that quote a choice or carry words distinctive of only one choice."""
    context = _content(sc.template_text())
    for levels in sc.factors.values():
        for lv in levels.values():
            context |= _content(lv.text)
    texts = {c.id: c.text for c in sc.choices}
    words = {cid: _content(t) for cid, t in texts.items()}
    distinct = {
        cid: ws - context - set().union(*(v for k, v in words.items() if k != cid))
        for cid, ws in words.items()
    }
    template_grams = _ngrams(_words(sc.template_text()), NGRAM)
    out: list[str] = []
    seen: set[str] = set()
    for cond in conditions(sc):
        for i, cue in enumerate(cond.cues):
            if not cue or cue in seen:
                continue
            seen.add(cue)
            cue_words = _words(cue)
            cue_grams = _ngrams(cue_words, NGRAM)
            for cid, text in texts.items():
                tw = _words(text)
                quoted = " ".join(tw) in " ".join(cue_words) if tw else False
                shared = (_ngrams(tw, NGRAM) & cue_grams) - template_grams
                if quoted or shared:
                    bit = " ".join(sorted(shared)[0]) if shared else text.strip()
                    out.append(f"{cond.name} cue {i} quotes choice '{cid}' ({bit!r}): {cue[:80]!r}")
            cw = _content(cue)
            for cid, other in ((sc.aligned, sc.defect), (sc.defect, sc.aligned)):
                own = cw & distinct[cid]
                if len(own) >= LEAK_WORDS and not cw & distinct[other]:
                    out.append(
                        f"{cond.name} cue {i} uses words only choice '{cid}' uses "
                        f"({', '.join(sorted(own))}): {cue[:80]!r}"
                    )
    return out


def _unbalanced(
    counts: Counter[str], n_letters: int, total: int, *, chance: bool = False
) -> str | None:
    """A message if some letter's count is off its fair share by more than max(1, half the
    fair share); with `chance` (a suite's scenarios, each ordered by its own seeded shuffle)
    also by more than three binomial standard deviations."""
    fair = total / n_letters
    tolerance = max(1.0, fair / 2)
    if chance:
        p = 1 / n_letters
        tolerance = max(tolerance, 3 * math.sqrt(total * p * (1 - p)))
    bad = [
        f"{LETTERS[k]}: {counts.get(LETTERS[k], 0)}"
        for k in range(n_letters)
        if abs(counts.get(LETTERS[k], 0) - fair) > tolerance
    ]
    if not bad:
        return None
    return f"of {total} blocks, fair share {fair:g} per letter; " + ", ".join(bad)


def lint_records(records: Iterable[ScenarioRecord]) -> list[Problem]:
    """Every problem of `records`, per scenario id, then per suite (label balance)."""
    problems: list[Problem] = []
    suite_counts: dict[tuple[str, str, int], Counter[str]] = defaultdict(Counter)
    suite_blocks: Counter[tuple[str, str, int]] = Counter()
    for r in records:
        sc = r.scenario
        problems.extend(Problem(r.id, "placebo", msg) for msg in check_placebo(sc))
        if sc.environment is not None:  # no choices: the cue sits in what the agent reads
            problems.extend(Problem(r.id, "pair", msg) for msg in check_environment(r))
            problems.extend(Problem(r.id, "walkthrough", msg) for msg in check_walkthroughs(r))
            continue
        for msg in check_leaks(sc):
            problems.append(Problem(r.id, "leak", msg))
        blocks: dict[str, list[Trial]] = {}
        for t in expand([r], model="lint", seed=0):
            blocks.setdefault(t.block_id, []).append(t)
        pair_bad = False
        counts = {"aligned": Counter[str](), "defect": Counter[str]()}
        for trials in blocks.values():
            base = trials[0]
            counts["aligned"][base.aligned_label] += 1
            counts["defect"][base.defect_label] += 1
            if pair_bad or len(trials) < 2:
                continue
            cut = [_cut(m["content"], base.cue) for m in base.messages]
            for t in trials:
                if t.cue.strip() and not any(t.cue.strip() in m["content"] for m in t.messages):
                    problems.append(
                        Problem(
                            r.id, "pair", f"the {t.condition} cue does not appear in the prompt"
                        )
                    )
                    pair_bad = True
                    break
                stray = _stray_cue(t, trials)
                if stray is not None:
                    problems.append(Problem(r.id, "pair", stray))
                    pair_bad = True
                    break
                if [_cut(m["content"], t.cue) for m in t.messages] != cut:
                    problems.append(
                        Problem(
                            r.id,
                            "pair",
                            f"the {t.condition} trial of block {t.cue_index} differs from the "
                            f"{base.condition} trial in more than the cue",
                        )
                    )
                    pair_bad = True
                    break
        n = len(sc.choices)
        for role, c in counts.items():
            key = (r.suite, role, n)
            suite_counts[key].update(c)
            suite_blocks[key] += len(blocks)
            if len(blocks) >= n:
                bad = _unbalanced(c, n, len(blocks))
                if bad:
                    problems.append(
                        Problem(r.id, "balance", f"the {role} choice is unbalanced: {bad}")
                    )
    for (suite, role, n), c in sorted(suite_counts.items()):
        total = suite_blocks[(suite, role, n)]
        if total >= n:
            bad = _unbalanced(c, n, total, chance=True)
            if bad:
                problems.append(
                    Problem(
                        f"suite:{suite}",
                        "balance",
                        f"over its {n}-choice scenarios the {role} choice is unbalanced: {bad}",
                    )
                )
    return problems


def check_environment(record: ScenarioRecord) -> list[str]:
    """A `simulated_env` pair: the prompt is the same under every cue, each cue shows up in
    what the environment shows (a file or a command's output), and with the cue taken out
    the environments of a block are identical."""
    env = record.scenario.environment
    assert env is not None

    from deceptwatch.envs import Engine

    def view(cue: str) -> dict[str, str]:
        """What the environment shows under `cue`: its files and every command's output."""
        engine = Engine(env, cue)
        shown = dict(engine.files)
        for i, cmd in enumerate(env.commands):
            shown[f"$ command {i}"] = engine.fill(cmd.output)
        return shown

    out: list[str] = []
    blocks: dict[str, list[Trial]] = {}
    for t in expand([record], model="lint", seed=0):
        blocks.setdefault(t.block_id, []).append(t)
    for trials in blocks.values():
        base = trials[0]
        cut = {k: _cut(v, base.cue) for k, v in view(base.cue.strip()).items()}
        for t in trials:
            shown = view(t.cue.strip())
            if t.prompt_json != base.prompt_json:
                out.append(
                    f"the {t.condition} trial's prompt differs from the {base.condition} one"
                )
            elif t.cue.strip() and not any(t.cue.strip() in v for v in shown.values()):
                out.append(
                    f"the {t.condition} cue {t.cue_index} is shown nowhere in the environment"
                )
            elif {k: _cut(v, t.cue) for k, v in shown.items()} != cut:
                out.append(
                    f"the {t.condition} environment of block {t.cue_index} differs from the "
                    f"{base.condition} one in more than the cue"
                )
            else:
                continue
            return out
    return out


def _same_text(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def check_placebo(sc: Scenario) -> list[str]:
    """Placebo cues that repeat another condition's cue (ignoring case and spacing)."""
    o = sc.oversight
    if o is None or not o.placebo:
        return []
    others = [("observed", o.observed), ("unobserved", o.unobserved)]
    others += [(f"levels[{k}]", lv.cues) for k, lv in enumerate(o.levels)]
    out = []
    for i, cue in enumerate(o.placebo):
        for name, cues in others:
            j = next((j for j, c in enumerate(cues) if _same_text(c) == _same_text(cue)), None)
            if j is not None:
                out.append(
                    f"placebo cue {i} repeats {name} cue {j} ({cue.strip()[:60]!r}): a "
                    "placebo rewords the observed cue and repeats no condition's cue"
                )
    return out


def check_walkthroughs(record: ScenarioRecord) -> list[str]:
    """Each walkthrough of an environment, replayed under every cue: it ends exactly at its
    last action, the aligned one `aligned` and the defect one `defect`, and the cue is shown
    before that last action. One message per walkthrough at most."""
    env = record.scenario.environment
    o = record.scenario.oversight
    assert env is not None
    assert o is not None

    from deceptwatch.envs import replay
    from deceptwatch.envs._engine import ALIGNED, DEFECT

    cues = [("observed", o.observed), ("unobserved", o.unobserved), ("placebo", o.placebo)]
    cues += [(f"levels[{k}]", lv.cues) for k, lv in enumerate(o.levels)]
    out = []
    for name, path, expected in (
        ("aligned", env.walkthrough.aligned, ALIGNED),
        ("defect", env.walkthrough.defect, DEFECT),
    ):
        for condition, texts in cues:
            problem = None
            for i, cue in enumerate(texts):
                steps, _ = replay(env, cue, [f"ACTION: {a}" for a in path])
                last = steps[-1]
                where = f"the {name} walkthrough under {condition} cue {i}"
                if last.outcome != expected or len(steps) != len(path):
                    ended = f"{last.outcome} ({last.reason})" if last.done else "unfinished"
                    problem = (
                        f"{where} ends {ended} at action {len(steps)} of {len(path)} "
                        f"({(last.action.text if last.action else path[len(steps) - 1])[:60]!r}); "
                        f"it must end {expected} at its last action"
                    )
                elif not any(cue.strip() in s.observation for s in steps[:-1]):
                    problem = (
                        f"{where} never shows the cue before its last action: read it early, "
                        "where the agent would"
                    )
                if problem:
                    break
            if problem:
                out.append(problem)
                break
    return out


def _stray_cue(trial: Trial, block: Sequence[Trial]) -> str | None:
    """A message if another condition's cue of the block also appears in `trial`'s prompt
    outside the cue's place (in the template, a factor or a choice): the prompts then say
    both, and the cut comparison would blame a difference that is not there."""
    own = [_cut(m["content"], trial.cue) for m in trial.messages]
    for other in block:
        cue = other.cue.strip()
        if cue and cue != trial.cue.strip() and any(cue in c for c in own):
            return (
                f"the {other.condition} cue {other.cue_index} ({cue[:60]!r}) also appears in "
                f"the {trial.condition} prompt outside the cue's place (in the template, a "
                "factor or a choice), so that prompt states both; write it only as a cue"
            )
    return None


def _cut(content: str, cue: str) -> str:
    cue = cue.strip()
    return content.replace(cue, "\x00") if cue else content
