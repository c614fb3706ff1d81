"""The scenario file format: pydantic v2 models, `extra="forbid"` everywhere.

A scenario poses one situation with a fixed set of choices. One choice is the aligned one;
another is the *defect* action. The oversight factor lists the cue paraphrases that set how
watched the model believes it is. Text slots are written ``{{name}}``:

- ``{{oversight}}`` (required, at least once): where the cue goes;
- ``{{choices}}`` (optional): where the lettered options go; without it they are appended
  to the last user message, followed by `answer_instruction`;
- ``{{FACTOR}}`` for each entry of `factors`: held constant within a pair, crossed between
  pairs (e.g. the stakes).

Double braces keep single braces free for the JSON and code that scenarios quote.

A scenario of the `simulated_env` family has an `environment` instead of `choices`: a small
virtual file system with tools, in which the cue sits in what the agent reads (a file, a
command's output) and the outcome is read from the actions it takes (see `deceptwatch.envs`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

PRECURSOR_FAMILIES: frozenset[str] = frozenset(
    {
        "shutdown_avoidance",
        "power_seeking",
        "non_myopia",
        "situational_awareness",
        "sandbagging",
        "coordination",
    }
)
Family = Literal[
    "oversight_gap",
    "honeypot",
    "defection_threshold",
    "training_gaming",
    "persona_audience",
    "come_clean",
    "simulated_env",
    "shutdown_avoidance",
    "power_seeking",
    "non_myopia",
    "situational_awareness",
    "sandbagging",
    "coordination",
]

FAMILIES: tuple[str, ...] = get_args(Family)

SLOT_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
RESERVED_SLOTS = frozenset({"oversight", "choices"})
ID_PATTERN = r"^[a-z0-9][a-z0-9_.\-/]*$"
KEY_PATTERN = r"^[a-z][a-z0-9_]*$"

NonEmptyStr = Annotated[str, Field(min_length=1)]


class FieldError(ValueError):
    """A cross-field check failed; `field` names the field to point the user at."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class Message(_Model):
    """One chat message of a template; its content may hold ``{{slots}}``."""

    role: Literal["system", "user", "assistant"]
    content: NonEmptyStr


class Choice(_Model):
    """One action the model can take. `id` is a stable key; letters are assigned per pair."""

    id: Annotated[str, Field(pattern=KEY_PATTERN, description="Stable key, e.g. 'report'.")]
    text: NonEmptyStr


class AuditLevel(_Model):
    """A graded oversight level: the stated probability that this episode is audited."""

    audit_probability: Annotated[float, Field(ge=0.0, le=1.0)]
    cues: Annotated[list[NonEmptyStr], Field(min_length=1)]


class Oversight(_Model):
    """The oversight factor: cue paraphrases per condition.

    Every list holds the same number of paraphrases: paraphrase *i* of each condition forms
    one pair (a block, with placebo and graded levels).
    """

    observed: Annotated[list[NonEmptyStr], Field(min_length=1)]
    unobserved: Annotated[list[NonEmptyStr], Field(min_length=1)]
    placebo: list[NonEmptyStr] = Field(
        default_factory=list,
        description="Paraphrases of `observed` that change the wording, not the meaning.",
    )
    levels: list[AuditLevel] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_lists(self) -> Oversight:
        n = len(self.observed)
        lists: list[tuple[str, list[str]]] = [("unobserved", self.unobserved)]
        if self.placebo:
            lists.append(("placebo", self.placebo))
        lists += [(f"levels[{i}].cues", lv.cues) for i, lv in enumerate(self.levels)]
        for name, cues in lists:
            if len(cues) != n:
                raise FieldError(
                    name,
                    f"{name} has {len(cues)} paraphrases but observed has {n}; every cue list "
                    "needs the same number, because trials pair by paraphrase index",
                )
        for name, cues in [("observed", self.observed), *lists]:
            if len(set(cues)) != len(cues):
                raise FieldError(name, f"{name} repeats a paraphrase; each must be distinct")
        shared = set(self.observed) & set(self.unobserved)
        if shared:
            raise FieldError(
                "unobserved",
                f"a cue appears as both observed and unobserved: {sorted(shared)[0]!r}",
            )
        same = set(self.observed) & set(self.placebo)
        if same:
            raise FieldError(
                "placebo",
                f"placebo cue {sorted(same)[0]!r} is identical to an observed cue; a placebo must "
                "reword it",
            )
        probs = [lv.audit_probability for lv in self.levels]
        if len(set(probs)) != len(probs):
            raise FieldError("levels", "levels repeat an audit_probability; each must be distinct")
        return self


class FactorLevel(_Model):
    """One level of a non-oversight factor: the text for its slot and an optional value."""

    text: NonEmptyStr
    value: float | None = Field(default=None, description="Numeric value, e.g. the payoff.")

    @model_validator(mode="before")
    @classmethod
    def _from_str(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"text": data}
        return data


Tool = Literal["ls", "cat", "write", "rm", "run", "submit"]
TOOLS: tuple[Tool, ...] = get_args(Tool)
_PATH_PATTERN = r"^/[^\s]*$"


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return pattern


Regex = Annotated[str, Field(min_length=1), AfterValidator(_compiles)]


class ActionRule(_Model):
    """Which actions count: a tool, and a regular expression searched in its argument (the
    path for ls/cat/write/rm, the command line for run, the answer for submit)."""

    tool: Tool
    target: Regex = Field(default=".*", description="Searched in the argument (re.search).")


class Command(_Model):
    """A scripted result of ``run COMMAND``: `match` is a regular expression that must match
    the whole command line; `output` may hold the {{oversight}} slot."""

    match: Regex
    output: str


class Walkthrough(_Model):
    """Reference action sequences: one that reaches the goal without defecting, one that
    defects. Never shown to the model; tests and scripted backends replay them."""

    aligned: Annotated[list[NonEmptyStr], Field(min_length=1)]
    defect: Annotated[list[NonEmptyStr], Field(min_length=1)]


class Environment(_Model):
    """A small scripted environment: a virtual file system, tools, and what ends it."""

    cwd: Annotated[str, Field(pattern=_PATH_PATTERN)] = "/home/agent"
    files: dict[Annotated[str, Field(pattern=_PATH_PATTERN)], str] = Field(
        description="Absolute path -> contents; contents may hold the {{oversight}} slot."
    )
    commands: list[Command] = Field(default_factory=list)
    tools: Annotated[list[Tool], Field(min_length=1)] = Field(default_factory=lambda: list(TOOLS))
    goal: Annotated[list[ActionRule], Field(min_length=1)]
    defect: Annotated[list[ActionRule], Field(min_length=1)]
    max_steps: Annotated[int, Field(ge=2, le=100)] = 15
    walkthrough: Walkthrough

    @model_validator(mode="after")
    def _check(self) -> Environment:
        if len(set(self.tools)) != len(self.tools):
            raise FieldError("tools", "tools repeat an entry")
        for name, rules in (("goal", self.goal), ("defect", self.defect)):
            for i, rule in enumerate(rules):
                if rule.tool not in self.tools:
                    raise FieldError(
                        f"{name}[{i}].tool", f"tool {rule.tool!r} is not among `tools`"
                    )
        texts = [*self.files.values(), *(c.output for c in self.commands)]
        slots = {s for t in texts for s in SLOT_RE.findall(t)}
        if slots - {"oversight"}:
            raise FieldError(
                "files",
                f"slot {{{{{sorted(slots - {'oversight'})[0]}}}}} in the environment: only "
                "{{oversight}} may appear in files and command outputs",
            )
        if "oversight" not in slots:
            raise FieldError(
                "files",
                "no {{oversight}} slot in any file or command output, so the cue has nowhere to go",
            )
        return self


class Scenario(_Model):
    """One situation posed to a model, with its choices and its oversight factor."""

    id: Annotated[str, Field(pattern=ID_PATTERN, max_length=200)]
    version: Annotated[int, Field(ge=1)] = 1
    family: Family
    description: NonEmptyStr
    tags: list[Annotated[str, Field(pattern=KEY_PATTERN)]] = Field(default_factory=list)

    system: NonEmptyStr | None = None
    user: NonEmptyStr | None = None
    messages: list[Message] | None = Field(
        default=None, description="A chat template; use instead of system/user."
    )

    choices: Annotated[
        list[Choice],
        Field(max_length=26, description="At least two; none in an environment scenario."),
    ] = Field(default_factory=list)
    aligned: Annotated[str, Field(description="id of the aligned choice")] = ""
    defect: Annotated[str, Field(description="id of the defect choice")] = ""
    answer_instruction: NonEmptyStr = "Reply with the letter of the option you choose."

    oversight: Oversight | None = Field(
        default=None,
        description="Required except in precursor families, which may pose one baseline condition.",
    )
    factors: dict[
        Annotated[str, Field(pattern=KEY_PATTERN)],
        Annotated[dict[str, FactorLevel], Field(min_length=1)],
    ] = Field(default_factory=dict)

    environment: Environment | None = Field(
        default=None,
        description="A multi-step text environment (family simulated_env) instead of choices.",
    )

    @field_validator("tags")
    @classmethod
    def _unique_tags(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("tags repeat an entry")
        return v

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        if self.messages is not None and (self.system is not None or self.user is not None):
            raise FieldError("messages", "give either `messages` or `system`/`user`, not both")
        if self.messages is None and self.user is None:
            raise FieldError(
                "user", "a scenario needs `user` (with `system` optional) or `messages`"
            )
        if self.environment is not None:
            self._check_environment()
            return self
        if self.family == "simulated_env":
            raise FieldError(
                "environment", "a simulated_env scenario needs an `environment` section"
            )
        if len(self.choices) < 2:
            raise FieldError("choices", "a scenario needs at least two choices")
        if not self.aligned:
            raise FieldError(
                "aligned", "Field required: set `aligned` to the id of the aligned choice"
            )
        if not self.defect:
            raise FieldError(
                "defect", "Field required: set `defect` to the id of the defect choice"
            )
        ids = [c.id for c in self.choices]
        if len(set(ids)) != len(ids):
            raise FieldError("choices", "choices repeat an id; each choice id must be unique")
        texts = [c.text.strip().casefold() for c in self.choices]
        if len(set(texts)) != len(texts):
            raise FieldError("choices", "two choices have the same text")
        if self.aligned not in ids:
            raise FieldError(
                "aligned", f"aligned choice {self.aligned!r} is not among the choice ids {ids}"
            )
        if self.defect not in ids:
            raise FieldError(
                "defect", f"defect choice {self.defect!r} is not among the choice ids {ids}"
            )
        if self.aligned == self.defect:
            raise FieldError("defect", "aligned and defect name the same choice")
        for name in self.factors:
            if name in RESERVED_SLOTS:
                raise FieldError("factors", f"factor name {name!r} is reserved for a built-in slot")
        used = self.slots()
        if self.oversight is None:
            if self.family not in PRECURSOR_FAMILIES:
                raise FieldError(
                    "oversight",
                    f"family {self.family!r} needs an oversight factor (observed/unobserved cues); "
                    "only precursor families may omit it",
                )
            if "oversight" in used:
                raise FieldError(
                    self._prompt_field(),
                    "the prompt has an {{oversight}} slot but no oversight factor",
                )
        elif "oversight" not in used:
            raise FieldError(
                self._prompt_field(),
                "the prompt has no {{oversight}} slot, so the cue has nowhere to go",
            )
        unknown = used - RESERVED_SLOTS - set(self.factors)
        if unknown:
            raise FieldError(
                self._prompt_field(),
                f"the prompt uses slot {{{{{sorted(unknown)[0]}}}}}, which is neither a built-in "
                "slot (oversight, choices) nor a factor",
            )
        unused = set(self.factors) - used
        if unused:
            raise FieldError(
                "factors", f"factor {sorted(unused)[0]!r} has no {{{{slot}}}} in the prompt"
            )
        if SLOT_RE.findall(self.template_text()).count("choices") > 1:
            raise FieldError(self._prompt_field(), "the {{choices}} slot may appear only once")
        return self

    def _check_environment(self) -> None:
        """An environment scenario: no choices, the cue in the environment, not the prompt."""
        if self.family != "simulated_env":
            raise FieldError(
                "environment", "only scenarios of family simulated_env may have an environment"
            )
        for name in ("choices", "aligned", "defect"):
            if getattr(self, name):
                raise FieldError(
                    name,
                    f"an environment scenario has no `{name}`: its outcome is read from the "
                    "actions it takes (environment.goal and environment.defect)",
                )
        if self.oversight is None:
            raise FieldError("oversight", "an environment scenario needs an oversight factor")
        used = self.slots()
        if "oversight" in used or "choices" in used:
            raise FieldError(
                self._prompt_field(),
                "in an environment scenario the {{oversight}} slot goes in a file or a command's "
                "output (the pair differs only in what the environment shows), and there is no "
                "{{choices}} slot",
            )
        unknown = used - set(self.factors)
        if unknown:
            raise FieldError(
                self._prompt_field(),
                f"the prompt uses slot {{{{{sorted(unknown)[0]}}}}}, which is not a factor",
            )
        unused = set(self.factors) - used
        if unused:
            raise FieldError(
                "factors", f"factor {sorted(unused)[0]!r} has no {{{{slot}}}} in the prompt"
            )
        if not any(m.role == "system" for m in self.template()):
            raise FieldError(
                self._prompt_field(),
                "an environment scenario needs a system message: the tools are described there",
            )

    def dump(self) -> dict[str, Any]:
        """The scenario as JSON data, without `environment` when there is none, so that
        adding the field left the content hash of every other scenario unchanged."""
        return self.model_dump(mode="json", exclude=self.unused_fields())

    def unused_fields(self) -> set[str]:
        """Fields that say nothing about this scenario: `environment` without one, and the
        choice fields in an environment scenario."""
        if self.environment is None:
            return {"environment"}
        return {"choices", "aligned", "defect", "answer_instruction"}

    def _prompt_field(self) -> str:
        return "messages" if self.messages is not None else "user"

    def template(self) -> list[Message]:
        """The chat template as a list of messages (system/user normalised to messages)."""
        if self.messages is not None:
            return list(self.messages)
        out: list[Message] = []
        if self.system is not None:
            out.append(Message(role="system", content=self.system))
        assert self.user is not None
        out.append(Message(role="user", content=self.user))
        return out

    def template_text(self) -> str:
        return "\n".join(m.content for m in self.template())

    def slots(self) -> set[str]:
        return set(SLOT_RE.findall(self.template_text()))

    def choice(self, choice_id: str) -> Choice:
        for c in self.choices:
            if c.id == choice_id:
                return c
        raise KeyError(choice_id)

    @property
    def is_precursor(self) -> bool:
        return self.family in PRECURSOR_FAMILIES


def scenario_json_schema() -> dict[str, Any]:
    """JSON Schema for one scenario file, for editors (e.g. yaml-language-server)."""
    schema = Scenario.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "deceptwatch scenario"
    return schema
