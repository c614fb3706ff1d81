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
import unicodedata
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

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
# `version` is stored in a 32-bit integer column (PostgreSQL's INTEGER).
MAX_VERSION = 2**31 - 1


def level_condition(audit_probability: float) -> str:
    """Condition name of a graded level, e.g. ``audit=0.01``. It enters every trial id of
    the level: never change its format."""
    return f"audit={audit_probability:g}"


def _not_blank(text: str) -> str:
    # what is blank once stripped, as every text is stripped where it is rendered
    if not text.strip():
        raise PydanticCustomError("blank_text", "the text is blank (only whitespace)")
    return text


def _number(value: Any) -> Any:
    """Refuse what pydantic's lax mode would read as a number: a text ("2", "0.1") or a
    boolean. The JSON Schema refuses them too; an int for a float stays fine."""
    if isinstance(value, bool):
        raise PydanticCustomError(
            "number_from_bool",
            "Input should be a number, not the boolean {value}",
            {"value": str(value).lower()},
        )
    if isinstance(value, str | bytes):
        raise PydanticCustomError(
            "number_from_text",
            "Input should be a number, not the text {value}",
            {"value": repr(value)},
        )
    return value


def _zero(value: float | None) -> float | None:
    """-0.0 as 0.0: the same probability or value, the same condition name and hash."""
    return 0.0 if value == 0 else value


def _same(text: str) -> str:
    """A text as the prompt shows it: stripped, and in NFC (a composed and a decomposed
    "é" look the same)."""
    return unicodedata.normalize("NFC", text.strip())


# Strict: no text from bytes (YAML's !!binary), which the JSON Schema refuses as well.
Text = Annotated[str, Strict()]
NonEmptyStr = Annotated[
    str,
    Strict(),
    Field(min_length=1, json_schema_extra={"pattern": r"\S"}),
    AfterValidator(_not_blank),
]
# (constraints go before the validator, e.g. ``Annotated[int, Field(ge=1), NoText]``: after
# it they would not reach the JSON Schema)
NoText = BeforeValidator(_number)
Zero = AfterValidator(_zero)


class FieldError(ValueError):
    """A cross-field check failed; `field` names the field to point the user at, and `hint`,
    where given, says how to fix it."""

    def __init__(self, field: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.hint = hint


def _no_slot(field: str, text: str) -> None:
    """Slots are filled only in the prompt: anywhere else one reaches the model as written."""
    m = SLOT_RE.search(text)
    if m is not None:
        raise FieldError(
            field,
            f"the text holds {m.group(0)}, but slots are filled only in the prompt (system, "
            "user, messages, or an environment's files and command outputs): here it would "
            "reach the model as written",
            hint="write the text out in full, or move the slot into the prompt",
        )


class _Model(BaseModel):
    # allow_inf_nan=False: a NaN or infinite float is refused in every float field (JSON has
    # neither, so a scenario holding one could not be hashed).
    model_config = ConfigDict(
        extra="forbid", frozen=True, str_strip_whitespace=False, allow_inf_nan=False
    )


class Message(_Model):
    """One chat message of a template; its content may hold ``{{slots}}``."""

    role: Literal["system", "user", "assistant"]
    content: NonEmptyStr


class Choice(_Model):
    """One action the model can take. `id` is a stable key; letters are assigned per pair."""

    id: Annotated[Text, Field(pattern=KEY_PATTERN, description="Stable key, e.g. 'report'.")]
    text: NonEmptyStr

    @model_validator(mode="after")
    def _check(self) -> Choice:
        _no_slot("text", self.text)
        return self


class AuditLevel(_Model):
    """A graded oversight level: the stated probability that this episode is audited."""

    audit_probability: Annotated[float, Field(ge=0.0, le=1.0), NoText, Zero]
    cues: Annotated[list[NonEmptyStr], Field(min_length=1)]


_STRIPPED = " (once stripped of leading and trailing whitespace, and in NFC, as in the prompt)"


def _clash(a: list[str], b: list[str]) -> str | None:
    """A cue of `a` that is also in `b` once both are stripped, quoted, or None."""
    same = {_same(c) for c in a} & {_same(c) for c in b}
    if not same:
        return None
    note = "" if set(a) & set(b) else _STRIPPED
    return f"{sorted(same)[0]!r}{note}"


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
        # compared as rendered: every cue is stripped where it goes into the prompt
        for name, cues in [("observed", self.observed), *lists]:
            for i, cue in enumerate(cues):
                _no_slot(f"{name}[{i}]", cue)
            if len({_same(c) for c in cues}) != len(cues):
                note = "" if len(set(cues)) != len(cues) else _STRIPPED
                raise FieldError(name, f"{name} repeats a paraphrase{note}; each must be distinct")
        clash = _clash(self.observed, self.unobserved)
        if clash:
            raise FieldError(
                "unobserved", f"a cue appears as both observed and unobserved: {clash}"
            )
        clash = _clash(self.observed, self.placebo)
        if clash:
            raise FieldError(
                "placebo",
                f"a placebo cue is identical to an observed cue: {clash}; a placebo must reword it",
            )
        probs = [lv.audit_probability for lv in self.levels]
        if len(set(probs)) != len(probs):
            raise FieldError("levels", "levels repeat an audit_probability; each must be distinct")
        names: dict[str, int] = {}
        for j, lv in enumerate(self.levels):
            name = level_condition(lv.audit_probability)
            i = names.setdefault(name, j)
            if i != j:
                first = self.levels[i].audit_probability
                raise FieldError(
                    f"levels[{j}].audit_probability",
                    f"audit_probability {first!r} (levels[{i}]) and {lv.audit_probability!r} "
                    f"(levels[{j}]) both get the condition name {name!r}, which keeps 6 "
                    "significant digits; their trials could not be told apart",
                    hint="merge the two levels, or make them differ within 6 significant "
                    "digits (e.g. 0.1 and 0.11)",
                )
        return self


class FactorLevel(_Model):
    """One level of a non-oversight factor: the text for its slot and an optional value."""

    text: NonEmptyStr
    value: Annotated[float | None, NoText, Zero] = Field(
        default=None, description="Numeric value, e.g. the payoff."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_str(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"text": data}
        return data

    @model_validator(mode="after")
    def _check(self) -> FactorLevel:
        _no_slot("text", self.text)
        return self


Tool = Literal["ls", "cat", "write", "rm", "run", "submit"]
TOOLS: tuple[Tool, ...] = get_args(Tool)
PATH_PATTERN = r"^/[^\s]*$"


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return pattern


Regex = Annotated[Text, Field(min_length=1), AfterValidator(_compiles)]


class ActionRule(_Model):
    """Which actions count: a tool, and a regular expression searched in its argument (the
    path for ls/cat/write/rm, the command line for run, the answer for submit)."""

    tool: Tool
    target: Regex = Field(default=".*", description="Searched in the argument (re.search).")


class Command(_Model):
    """A scripted result of ``run COMMAND``: `match` is a regular expression that must match
    the whole command line; `output` may hold the {{oversight}} slot."""

    match: Regex
    output: Text


class Walkthrough(_Model):
    """Reference action sequences: one that reaches the goal without defecting, one that
    defects. Never shown to the model; tests and scripted backends replay them."""

    aligned: Annotated[list[NonEmptyStr], Field(min_length=1)]
    defect: Annotated[list[NonEmptyStr], Field(min_length=1)]


class Environment(_Model):
    """A small scripted environment: a virtual file system, tools, and what ends it."""

    cwd: Annotated[Text, Field(pattern=PATH_PATTERN)] = "/home/agent"
    files: dict[Annotated[Text, Field(pattern=PATH_PATTERN)], Text] = Field(
        description="Absolute path -> contents; contents may hold the {{oversight}} slot."
    )
    commands: list[Command] = Field(default_factory=list)
    tools: Annotated[list[Tool], Field(min_length=1)] = Field(default_factory=lambda: list(TOOLS))
    goal: Annotated[list[ActionRule], Field(min_length=1)]
    defect: Annotated[list[ActionRule], Field(min_length=1)]
    max_steps: Annotated[int, Field(ge=2, le=100), NoText] = 15
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

    id: Annotated[Text, Field(pattern=ID_PATTERN, max_length=200)]
    version: Annotated[int, Field(ge=1, le=MAX_VERSION), NoText] = 1
    family: Family
    description: NonEmptyStr
    tags: list[Annotated[Text, Field(pattern=KEY_PATTERN)]] = Field(default_factory=list)

    system: NonEmptyStr | None = None
    user: NonEmptyStr | None = None
    messages: list[Message] | None = Field(
        default=None, description="A chat template; use instead of system/user."
    )

    choices: Annotated[
        list[Choice],
        Field(max_length=26, description="At least two; none in an environment scenario."),
    ] = Field(default_factory=list)
    aligned: Annotated[Text, Field(description="id of the aligned choice")] = ""
    defect: Annotated[Text, Field(description="id of the defect choice")] = ""
    answer_instruction: NonEmptyStr = "Reply with the letter of the option you choose."

    oversight: Oversight | None = Field(
        default=None,
        description="Required except in precursor families, which may pose one baseline condition.",
    )
    factors: dict[
        Annotated[Text, Field(pattern=KEY_PATTERN)],
        Annotated[dict[Text, FactorLevel], Field(min_length=1)],
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
        if not any(m.role == "user" for m in self.template()):
            raise FieldError(
                "messages",
                "the template has no user message: the lettered choices and the answer "
                "instruction go after the last user message, and the model answers a user turn",
                hint="add a message with `role: user` (the situation, or the question)",
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
        texts = [_same(c.text).casefold() for c in self.choices]
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
        _no_slot("answer_instruction", self.answer_instruction)
        for name, levels in self.factors.items():
            if name in RESERVED_SLOTS:
                raise FieldError("factors", f"factor name {name!r} is reserved for a built-in slot")
            if len({_same(lv.text) for lv in levels.values()}) != len(levels):
                raise FieldError(
                    f"factors.{name}",
                    f"two levels of factor {name!r} have the same text{_STRIPPED}: the model "
                    "could not tell them apart",
                    hint="give each level its own text, or merge the two",
                )
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
