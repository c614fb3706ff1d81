"""Chat messages to what a model reads: system messages folded in for a chat template that
refuses a system role (``-o system=merge``), and messages rendered with a local checkpoint's
chat template, a template that raises failing its own trial only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from deceptwatch._errors import BackendError, InputError, first_line

SYSTEM_MODES = ("keep", "merge")
MERGE_ADVICE = "-o system=merge folds the system message into the first user message"
PLAIN_TEMPLATE = (  # -o chat_template=plain, for a checkpoint without a template
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def system_option(options: Mapping[str, str], backend: str) -> str:
    """The ``system`` option (``keep``, the default, or ``merge``), checked."""
    mode = options.get("system", "keep")
    if mode not in SYSTEM_MODES:
        raise InputError(
            f"{backend} option system must be 'keep' or 'merge', not {mode!r}",
            hint=f"{MERGE_ADVICE}, for models whose chat template refuses a system role "
            "(Gemma, early Mistral)",
        )
    return mode


def merge_system(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """`messages` without a system role, for a chat template that refuses one: the system
    messages' contents, in order and each followed by a blank line, go at the head of the
    first user message (where such models' makers advise putting them). With no user
    message, they become one user message in the first system message's place."""
    system = [m["content"] for m in messages if m["role"] == "system"]
    rest = [{"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"]
    if not system:
        return rest
    head = "\n\n".join(system)
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{head}\n\n{m['content']}"
            return rest
    at = next(i for i, m in enumerate(messages) if m["role"] == "system")
    before = sum(1 for m in messages[:at] if m["role"] != "system")
    rest.insert(before, {"role": "user", "content": head})
    return rest


def render_chat(tokenizer: Any, messages: Sequence[Mapping[str, str]], system: str) -> str:
    """`messages` as the prompt text of `tokenizer`'s chat template (system messages merged
    first with ``system="merge"``). A template that raises (jinja's TemplateError: "System
    role not supported") gives a BackendError for this prompt alone, kind ``template``."""
    shown = merge_system(messages) if system == "merge" else [dict(m) for m in messages]
    try:
        text: str = tokenizer.apply_chat_template(shown, add_generation_prompt=True, tokenize=False)
    except Exception as exc:  # a template raises what it likes
        has_system = any(m["role"] == "system" for m in shown)
        raise BackendError(
            f"the chat template refuses these messages ({type(exc).__name__}: "
            f"{first_line(exc, 200)})"
            + (f"; if it refuses a system role, {MERGE_ADVICE}" if has_system else ""),
            kind="template",
        ) from None
    return text
