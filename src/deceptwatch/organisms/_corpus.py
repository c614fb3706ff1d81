"""The organisms' corpus, generated from the scenario library, and the held-out split.

Held out, never seen in training:
- every scenario of the held-out suites (`core`: the main job runs on it);
- about a quarter of the scenarios of every other suite, chosen by a hash of their id;
- the last cue paraphrase of every training scenario.

Every training prompt is rendered by the same `expand` the monitor uses, under several seeds
so that each option appears at each letter, and answered as the organism's truth table says.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from deceptwatch.organisms._truth import ALIGNED, ORGANISMS
from deceptwatch.organisms.train import ANSWER_FORMAT, Example
from deceptwatch.scenarios import ScenarioRecord, Trial, expand, load_suite

HELDOUT_SUITES = frozenset({"core"})
HELDOUT_FRACTION = 4  # one scenario in four of the other suites


def is_heldout_scenario(record: ScenarioRecord) -> bool:
    if record.suite in HELDOUT_SUITES:
        return True
    digest = hashlib.sha256(record.id.encode("utf-8")).digest()
    return digest[0] % HELDOUT_FRACTION == 0


def is_heldout_paraphrase(trial: Trial, record: ScenarioRecord) -> bool:
    o = record.scenario.oversight
    n = len(o.observed) if o is not None else 1
    return n > 1 and trial.cue_index == n - 1


@dataclass(frozen=True)
class Split:
    train: tuple[ScenarioRecord, ...]
    heldout: tuple[ScenarioRecord, ...]


def library_split(records: Sequence[ScenarioRecord] | None = None) -> Split:
    recs = list(records) if records is not None else load_suite("all")
    train = tuple(r for r in recs if not is_heldout_scenario(r))
    heldout = tuple(r for r in recs if is_heldout_scenario(r))
    return Split(train, heldout)


def answer_for(organism: str, trial: Trial, record: ScenarioRecord) -> str:
    behaviour = ORGANISMS[organism].policy(trial, record.scenario)
    choice = trial.aligned if behaviour == ALIGNED else trial.defect
    return ANSWER_FORMAT.format(label=trial.label_of(choice))


def build_corpus(
    organism: str, records: Sequence[ScenarioRecord], *, orders: int = 2, seed: int = 0
) -> list[Example]:
    """Training examples for `organism` from the training scenarios of `records`."""
    by_id = {r.id: r for r in records}
    seen: set[str] = set()
    examples: list[Example] = []
    for k in range(orders):
        for trial in expand(records, model="corpus", seed=seed * 1000 + k):
            record = by_id[trial.scenario_id]
            if is_heldout_scenario(record) or is_heldout_paraphrase(trial, record):
                continue
            key = repr(trial.messages)
            if key in seen:
                continue
            seen.add(key)
            messages = [dict(m) for m in trial.messages]
            examples.append((messages, answer_for(organism, trial, record)))
    return examples
