"""Run one episode of an environment trial through the runner's calls.

Each step is one `backend.generate` on the growing conversation (the trial's prompt, then the
model's replies and the observations), through the runner's own retries and time limits.
The trial's row then holds the whole transcript: `text` is the JSON list of the turns after
the prompt, `raw` a JSON record with the actions, the outcome and every call's raw reply.
A call that still fails mid-episode makes the trial `error`, with the transcript so far. A
run that stops mid-episode makes no further call: the trial stays unstored, and a resume
plays it again from its start.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from deceptwatch._errors import BackendError
from deceptwatch._ids import canonical_json
from deceptwatch.backends import GenerateRequest, GenerateResponse
from deceptwatch.envs._engine import Engine
from deceptwatch.scoring import Scored

if TYPE_CHECKING:
    from deceptwatch.runner._runner import _Run
    from deceptwatch.scenarios import Trial


def _metadata(run: _Run, trial: Trial, step: int) -> dict[str, Any]:
    """What scripted test backends (``mock:``) read; real backends never see it."""
    if not run.uses_metadata:
        return {}
    env = trial.environment
    assert env is not None
    return {
        "condition": trial.condition,
        "audit_probability": trial.audit_probability,
        "scenario_id": trial.scenario_id,
        "family": trial.family,
        "factors": dict(trial.factors),
        "step": step,
        "aligned_label": trial.aligned,
        "defect_label": trial.defect,
        "walkthrough": env.walkthrough.model_dump(),
    }


def _record(
    engine: Engine, turns: list[dict[str, str]], raws: list[str | None], outcome: str, how: str
) -> str:
    return canonical_json(
        {
            "steps": engine.steps,
            "max_steps": engine.env.max_steps,
            "outcome": outcome,
            "method": how,
            "actions": [t["action"] for t in turns if "action" in t],
            "raw": raws,
        }
    )


async def run_episode(
    run: _Run, trial: Trial, task: asyncio.Task[Any]
) -> tuple[GenerateResponse | None, BackendError | None, int, Scored | None]:
    """Play the trial's environment to its end; returns the response to record (its text is
    the transcript), or the error that ended it, the number of attempts, and the outcome."""
    env = trial.environment
    assert env is not None
    engine = Engine(env, trial.cue)
    messages: list[dict[str, str]] = [dict(m) for m in trial.messages]
    turns: list[dict[str, str]] = []  # after the prompt; assistant turns carry "action"
    raws: list[str | None] = []
    usage: dict[str, int] = {}
    attempts = 0
    model: str | None = None
    while True:
        if engine.steps and run.stopped():
            # The run stopped (Ctrl-C, a store that failed, too many failures): no further
            # call. Retryable, so the runner leaves the trial unstored and a resume plays
            # the whole episode again.
            return (
                None,
                BackendError(
                    f"the run stopped before step {engine.steps + 1} of the episode",
                    kind="stopped",
                    retryable=True,
                ),
                attempts,
                None,
            )
        request = GenerateRequest(
            messages=tuple(messages),
            choices=(),
            config=run.config.generation,
            seed=(trial.backend_seed + engine.steps) & 0x7FFFFFFF,
            trial_id=f"{trial.id}/{engine.steps}",
            metadata=_metadata(run, trial, engine.steps),
        )
        response, error, n = await run.call(trial, task, request)
        attempts += n
        if response is None:
            assert error is not None
            record = canonical_json({"turns": turns, "raw": [*raws, error.raw]})
            return (
                None,
                BackendError(
                    f"step {engine.steps + 1} of the episode: {error.message}",
                    kind=error.kind,
                    retryable=error.retryable,
                    raw=record,
                ),
                attempts,
                None,
            )
        model = response.model or model
        raws.append(response.raw)
        for k, v in (response.usage or {}).items():
            usage[k] = usage.get(k, 0) + v
        step = engine.step(response.text)
        action = step.action.text if step.action is not None else ""
        messages.append({"role": "assistant", "content": response.text})
        messages.append({"role": "user", "content": step.observation})
        turns.append({"role": "assistant", "content": response.text, "action": action})
        turns.append({"role": "user", "content": step.observation})
        if step.done:
            assert step.outcome is not None
            text = canonical_json([{"role": t["role"], "content": t["content"]} for t in turns])
            done = GenerateResponse(
                text=text,
                raw=_record(engine, turns, raws, step.outcome, step.reason),
                model=model,
                usage=usage or None,
            )
            choice = {"aligned": trial.aligned, "defect": trial.defect}.get(step.outcome)
            return done, None, attempts, Scored(step.outcome, choice, None, step.reason)
