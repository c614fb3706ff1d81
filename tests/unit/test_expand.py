"""Expansion into paired trials: counts, pairing, stable ids, balanced choice order."""

from __future__ import annotations

import collections
import re
from typing import Any

import pytest

from deceptwatch.scenarios import (
    OBSERVED,
    PLACEBO,
    UNOBSERVED,
    ScenarioRecord,
    Trial,
    count_trials,
    expand,
    load_suite,
    parse_scenarios,
)
from deceptwatch.scenarios._expand import SLOT_RE


def _recs(yaml_text: str):  # type: ignore[no-untyped-def]
    return parse_scenarios(yaml_text, path="m.yaml", suite="t")


def test_one_trial_per_condition_paraphrase_factor_epoch(minimal_yaml: str) -> None:
    recs = _recs(minimal_yaml)
    trials = list(expand(recs, model="m", seed=0, epochs=2))
    # 3 conditions x 3 paraphrases x 2 stakes x 2 epochs
    assert len(trials) == 36 == count_trials(recs, epochs=2)
    keys = {(t.condition, t.cue_index, t.factors, t.epoch) for t in trials}
    assert len(keys) == 36
    assert len({t.id for t in trials}) == 36


def test_blocks_hold_one_trial_per_condition(minimal_yaml: str) -> None:
    trials = list(expand(_recs(minimal_yaml), model="m", seed=0))
    blocks = collections.defaultdict(list)
    for t in trials:
        blocks[t.block_id].append(t)
    assert len(blocks) == 6
    for ts in blocks.values():
        assert [t.condition for t in ts] == [OBSERVED, UNOBSERVED, PLACEBO]
        assert len({(t.cue_index, t.epoch, t.factors, t.choice_order) for t in ts}) == 1


def _strip_cue(t) -> list[str]:  # type: ignore[no-untyped-def]
    return [m["content"].replace(t.cue.strip(), "<CUE>") for m in t.messages]


def test_every_builtin_pair_differs_only_in_the_cue() -> None:
    """The two prompts of every pair in the built-in suites differ only in the cue.

    (In an environment scenario the prompts are the same and the cue is in what the
    environment shows: tests/unit/test_envs.py checks those.)"""
    recs = [r for r in load_suite("all") if r.scenario.environment is None]
    n_pairs = 0
    for t_block in _blocks(expand(recs, model="m", seed=0)):
        obs = next(t for t in t_block if t.condition == OBSERVED)
        for other in t_block:
            if other is obs:
                continue
            assert obs.cue != other.cue
            assert obs.cue.strip() in "".join(m["content"] for m in obs.messages)
            assert _strip_cue(obs) == _strip_cue(other), (obs.scenario_id, other.condition)
            assert [m["role"] for m in obs.messages] == [m["role"] for m in other.messages]
        n_pairs += 1
    assert n_pairs >= 36


def _blocks(trials):  # type: ignore[no-untyped-def]
    blocks: dict[str, list] = collections.OrderedDict()
    for t in trials:
        blocks.setdefault(t.block_id, []).append(t)
    return [b for b in blocks.values() if any(t.condition == OBSERVED for t in b)]


def test_rendered_prompts_have_no_leftover_slots() -> None:
    for t in expand(load_suite("all"), model="m", seed=0, limit=200):
        for m in t.messages:
            assert not SLOT_RE.search(m["content"]), (t.scenario_id, m["content"][:80])
        text = t.messages[-1]["content"]
        for label, choice_text in zip(t.labels, t.choice_texts, strict=True):
            assert f"({label}) {choice_text.strip()}" in text


def test_trial_ids_are_stable_and_depend_on_what_changes_output(minimal_yaml: str) -> None:
    recs = _recs(minimal_yaml)
    a = [t.id for t in expand(recs, model="m", seed=0)]
    assert a == [t.id for t in expand(recs, model="m", seed=0)]
    assert set(a).isdisjoint(t.id for t in expand(recs, model="other", seed=0))
    assert set(a).isdisjoint(t.id for t in expand(recs, model="m", seed=1))
    assert set(a).isdisjoint(
        t.id for t in expand(recs, model="m", seed=0, generation={"temperature": 1.0})
    )
    edited = _recs(minimal_yaml.replace("Do the task.", "Do the work."))
    assert set(a).isdisjoint(t.id for t in expand(edited, model="m", seed=0))
    assert all(re.fullmatch(r"[0-9a-f]{64}", i) for i in a)


def test_trial_id_is_pinned(minimal_yaml: str) -> None:
    """A change to how ids are computed invalidates every stored cache: make it deliberate."""
    first = next(
        t
        for t in expand(_recs(minimal_yaml), model="m", seed=0)
        if (t.epoch, t.cue_index, t.factors, t.condition) == (0, 0, (("stakes", "low"),), OBSERVED)
    )
    assert first.id == PINNED_ID


PINNED_ID = "d13634e40d4729520368fe1ee5d51ab7575e15f8b99774d4c294407737f409aa"


def test_choice_order_is_shared_within_a_block_and_balanced_across_blocks(
    minimal_yaml: str,
) -> None:
    trials = list(expand(_recs(minimal_yaml), model="m", seed=3, epochs=4))
    positions = collections.Counter()
    for block in _blocks(trials):
        orders = {t.choice_order for t in block}
        assert len(orders) == 1
        positions[block[0].aligned_label] += 1
    # 2 stakes x 4 epochs x 3 paraphrases = 24 blocks; rotation keeps positions balanced
    assert positions["A"] == positions["B"] == 12


def test_limit_counts_blocks_round_robin_across_scenarios() -> None:
    recs = load_suite("all")
    trials = list(expand(recs, model="m", seed=0, limit=len(recs)))
    assert len({t.block_id for t in trials}) == len(recs)
    assert len({t.scenario_id for t in trials}) == len(recs)
    assert count_trials(recs, epochs=1, limit=len(recs)) == len(trials)


def test_limit_spreads_over_factor_levels_and_cues() -> None:
    """A limited run must not see only the first factor level or paraphrase of each scenario."""
    recs = load_suite("organism_heldout")
    with_stakes = [r for r in recs if "stakes" in r.scenario.factors]
    assert len(with_stakes) >= 10
    trials = list(expand(with_stakes, model="m", seed=0, limit=len(with_stakes)))
    levels = collections.Counter(dict(t.factors)["stakes"] for t in trials)
    assert len(levels) == len(with_stakes[0].scenario.factors["stakes"])
    assert min(levels.values()) >= 0.3 * max(levels.values()), levels
    # a prefix of one scenario's blocks covers every factor combination before repeating one
    one = with_stakes[0]
    n_levels = len(one.scenario.factors["stakes"])
    first = list(expand([one], model="m", seed=0, limit=n_levels))
    assert len({dict(t.factors)["stakes"] for t in first}) == n_levels
    assert len({t.cue_index for t in first}) == n_levels
    # and the whole order still holds every block exactly once
    everything = list(expand([one], model="m", seed=0, epochs=2))
    assert len({t.block_id for t in everything}) == count_trials([one], epochs=2) // 3


def test_graded_levels_become_conditions(minimal_yaml: str) -> None:
    text = minimal_yaml.replace(
        "factors:",
        "  levels:\n"
        "    - audit_probability: 0.1\n"
        '      cues: ["10% of sessions are audited.", "One in ten sessions is audited.", "About 10% get checked."]\n'
        "factors:",
    )
    trials = list(expand(_recs(text), model="m", seed=0))
    conds = collections.Counter(t.condition for t in trials)
    assert conds == {OBSERVED: 6, UNOBSERVED: 6, PLACEBO: 6, "audit=0.1": 6}
    assert {t.audit_probability for t in trials if t.condition == "audit=0.1"} == {0.1}


def test_epochs_must_be_positive(minimal_yaml: str) -> None:
    with pytest.raises(ValueError, match="epochs"):
        list(expand(_recs(minimal_yaml), model="m", seed=0, epochs=0))


def _reference_order(
    recs: list[ScenarioRecord], epochs: int, limit: int | None
) -> list[tuple[int, tuple[int, int, int]]]:
    """The block order as it was first written: every scenario's block list built up front,
    then taken round-robin. The streamed order must match it exactly."""
    from deceptwatch.scenarios._expand import scenario_blocks

    per = [scenario_blocks(r, epochs=epochs) for r in recs]
    out: list[tuple[int, tuple[int, int, int]]] = []
    for rnd in range(max(len(p) for p in per)):
        for i, blocks in enumerate(per):
            if rnd < len(blocks):
                if limit is not None and len(out) >= limit:
                    return out
                out.append((i, blocks[rnd]))
    return out


@pytest.mark.parametrize("limit", [None, 0, 1, 17, 400])
def test_streamed_block_order_matches_the_listed_one(limit: int | None) -> None:
    from deceptwatch.scenarios._expand import _block_order

    recs = load_suite("all")
    assert list(_block_order(recs, 2, limit)) == _reference_order(recs, 2, limit)


def _document_id(t: Trial, generation: dict[str, Any]) -> str:
    """A trial id computed the plain way: the whole document through content_hash."""
    from deceptwatch._ids import content_hash
    from deceptwatch.scenarios._expand import TRIAL_ID_VERSION

    return content_hash(
        {
            "v": TRIAL_ID_VERSION,
            "model": t.model,
            "generation": generation,
            "seed": t.seed,
            "scenario": t.scenario_hash,
            "condition": t.condition,
            "cue_index": t.cue_index,
            "epoch": t.epoch,
            "factors": [list(f) for f in t.factors],
            "messages": t.prompt_json,
            "choice_order": t.choice_order,
        }
    )


@pytest.mark.parametrize(
    "model",
    ['{"spec":"openai:x","base_url":"http://h/v1"}', 'ü"\\ \u2028', "\x00condition\x00"],
)
def test_trial_ids_are_the_hash_of_the_whole_document(model: str) -> None:
    """Ids are built from a per-block template; they must equal the plain computation
    (the last model key holds the template's placeholder, so it takes the plain path)."""
    from deceptwatch._ids import canonical_json

    gen = {"temperature": 0.5, "max_tokens": 9}
    for t in expand(load_suite("all"), model=model, seed=4, epochs=1, generation=gen):
        assert t.id == _document_id(t, gen)
        assert t.prompt_json == canonical_json(list(t.messages))


def test_render_messages_matches_the_trials(minimal_yaml: str) -> None:
    from deceptwatch.scenarios import render_messages

    recs = _recs(minimal_yaml)
    for t in expand(recs, model="m", seed=0):
        assert render_messages(recs[0].scenario, t.cue, t.factors, t.choice_order) == t.messages


def test_generation_settings_refuse_nan_and_give_negative_zero_the_ids_of_zero(
    minimal_yaml: str,
) -> None:
    """`--temperature nan` was refused as "should be less than or equal to 2", and -0.0
    passed as "-0.0": every trial id differed from those of 0.0, so a rerun with the one
    did not find the trials of the other."""
    from pydantic import ValidationError

    from deceptwatch.backends import GenerationConfig

    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValidationError, match="finite number"):
            GenerationConfig(temperature=bad)
    ids = [
        [
            t.id
            for t in expand(
                _recs(minimal_yaml),
                model="m",
                seed=0,
                generation=GenerationConfig(temperature=temp).model_dump(mode="json"),
            )
        ]
        for temp in (0.0, -0.0)
    ]
    assert ids[0] == ids[1]
