"""The backend protocol: one async `generate` per trial.

Backends only turn a request into a response. The runner owns concurrency, retries (with
backoff that honours a server's `retry_after`), timeouts, caching and recording. A backend
signals a failed call by raising `BackendError`, saying whether a retry may help.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator


class GenerationConfig(BaseModel):
    """Generation settings shared by every trial of a run. They enter every trial id."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(default=256, ge=1, le=32768)
    logprobs: bool = Field(default=False, description="Ask for token logprobs where offered.")
    top_logprobs: int = Field(default=5, ge=0, le=20)

    @field_validator("temperature")
    @classmethod
    def _no_negative_zero(cls, value: float) -> float:
        # -0.0 passes ``ge=0`` but is written "-0.0": it would give every trial another id
        # than 0.0 does, and a rerun with the one would not find the trials of the other.
        return value + 0.0


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """What a backend sees of one trial.

    `choices` gives the lettered options as shown, so that a backend that can score options
    directly (log-likelihood) may do so. `metadata` (condition, scenario id, labels) exists
    for scripted test backends such as ``mock:``; real backends must ignore it (and may say
    so with ``uses_metadata = False``, so that the runner does not build it).
    `messages_json`, when given, is the canonical JSON of `messages` (a list of objects with
    ``role`` and ``content`` only), which a backend that sends JSON may use as is.
    """

    messages: Sequence[Mapping[str, str]]
    choices: Sequence[tuple[str, str]]
    config: GenerationConfig
    seed: int
    trial_id: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    messages_json: str | None = None


@dataclass(slots=True)
class GenerateResponse:
    """A backend's answer. `raw` is the verbatim reply body, kept for the record.

    `choice_probs` maps each option letter to its probability when the backend scored the
    options itself; the scorer then takes the choice from it rather than from `text`.
    """

    text: str
    raw: str | None = None
    choice_probs: dict[str, float] | None = None
    model: str | None = None
    usage: dict[str, int] | None = None


SCOPE_HINT = (  # for an unknown option: it may belong to another model of the run
    "an option for one backend or model of several is written -o BACKEND.KEY=VALUE "
    "or -o MODEL.KEY=VALUE, e.g. -o openai.base_url=http://127.0.0.1:8000/v1"
)


@runtime_checkable
class Backend(Protocol):
    """An async model backend."""

    spec: str

    def cache_key(self) -> dict[str, Any]:
        """What identifies this model's outputs: the spec and every option that changes them
        (never secrets such as API keys). It enters every trial id."""
        ...

    def describe(self) -> dict[str, Any]:
        """Options to record in the store; must contain no secrets."""
        ...

    async def generate(self, request: GenerateRequest) -> GenerateResponse: ...

    async def aclose(self) -> None: ...


class BaseBackend:
    """Convenience base class: stores the spec and options; `aclose` does nothing."""

    name: str = ""
    uses_metadata: bool = True  # False: the runner leaves `GenerateRequest.metadata` empty

    def __init__(self, spec: str, options: Mapping[str, str] | None = None) -> None:
        self.spec = spec
        self.options: dict[str, str] = dict(options or {})

    def cache_key(self) -> dict[str, Any]:
        return {"spec": self.spec}

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec}

    def set_concurrency(self, n: int) -> None:
        """Told by the runner how many calls it will make at once (e.g. to size a pool)."""
        return

    def check(self) -> None:
        """Raise InputError when the backend cannot work at all (a local checkpoint that does
        not load). `monitor` calls it before anything is written; a failure that may pass
        (an endpoint that is down) is not checked here, but recorded per trial."""
        return

    async def aclose(self) -> None:
        return None
