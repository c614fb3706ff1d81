"""What an OpenAI-compatible reply says, beyond its text: the message of an error body, a
generation that failed after a 200, and the answer and reasoning of a reply whose content is a
list of chunks or was cut off inside its reasoning."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def error_message(body: str) -> str:
    """The server's own message in an error reply's body (OpenAI's ``error.message`` and
    the shapes others use), else the body's start."""
    try:
        data = json.loads(body)
        if isinstance(data, list) and data:  # Google's APIs wrap the error in a list
            data = data[0]
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:300]
        if isinstance(err, str):
            return err[:300]
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            return str(data["message"])[:300]  # older vLLM, MLC LLM: no "error" key
    except (ValueError, AttributeError):
        pass
    return body[:200]


def failed_generation(data: Mapping[str, Any], first: Mapping[str, Any]) -> str | None:
    """The error of a reply that says the generation failed though its status is 200 (None
    when it does not), as OpenRouter reports an error that happens while the model writes:
    as the body's ``error``, or as the choice's ``error`` with ``finish_reason: "error"``
    beside the text written before it, which must not be scored."""
    for holder in (data, first):
        err = holder.get("error")
        if not err:  # the common case, at every reply: no error, or null
            continue
        if isinstance(err, dict | Mapping) or (isinstance(err, str) and err.strip()):
            message = err.get("message") if isinstance(err, Mapping) else err
            code = err.get("code") if isinstance(err, Mapping) else None
            said = str(message)[:300] if message else json.dumps(err)[:300]
            return f"{said} (code {code})" if isinstance(code, int | str) and code else said
    if first.get("finish_reason") == "error":
        return 'finish_reason "error"'
    return None


def split_chunks(parts: list[Any]) -> tuple[str | None, str]:
    """The answer (None when no part is text) and the reasoning of a reply whose content is
    a list of chunks, as Mistral's reasoning models send it: the answer is the text of its
    ``{"type": "text", "text": ...}`` parts, the reasoning that of its
    ``{"type": "thinking", "thinking": [text chunks]}`` parts."""
    answer: list[str] = []
    thought: list[str] = []
    for part in parts:
        if not isinstance(part, Mapping):
            continue
        if part.get("type") in ("text", "output_text") and isinstance(part.get("text"), str):
            answer.append(part["text"])
        elif part.get("type") == "thinking":
            inner = part.get("thinking")
            for chunk in inner if isinstance(inner, list) else [inner]:
                text = chunk.get("text") if isinstance(chunk, Mapping) else chunk
                if isinstance(text, str):
                    thought.append(text)
    return ("".join(answer) if answer else None), "".join(thought)


def cut_off_reasoning(message: Mapping[str, Any], thought: str = "") -> str | None:
    """A reply that the token limit cut off inside its reasoning, from a server that
    returns reasoning apart from the answer (``reasoning_content`` from vLLM's reasoning
    parsers and DeepSeek's API, ``reasoning`` from OpenRouter and newer vLLM, `thought`
    from thinking chunks), as its text reads from a server that does not: an unclosed
    ``<think>`` block. Scoring then calls it cut off (`other`, ``unfinished_reasoning``),
    not empty; the raw reply keeps both."""
    for value in (message.get("reasoning_content"), message.get("reasoning"), thought):
        if isinstance(value, str) and value.strip():
            return f"<think>\n{value}"
    return None
