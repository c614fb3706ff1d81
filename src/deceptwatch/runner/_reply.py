"""A backend's reply checked before it is scored and stored (and, at the end, what the
runner makes of a failed call: its message, and how long the server asks to wait).

A backend of a user's own (``@backend(NAME)``) may return a plain string, a reply whose text
is None, or numpy numbers among its option probabilities. Each of these used to stop the
whole run with a TypeError; now the trial is an `error` (never aligned) that says what the
backend returned, and numpy numbers are taken as the Python numbers they stand for. Numpy
strings (a label picked from a numpy array) are taken as plain text: the store refused them,
and the run stopped on its first batch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from deceptwatch._errors import BackendError
from deceptwatch.backends import GenerateResponse

_HINT = (
    "generate must return GenerateResponse(text=str, raw=str | None, choice_probs={label: "
    "probability} | None, model=str | None, usage={name: int} | None)"
)


def _bad(what: str) -> BackendError:
    return BackendError(
        f"the backend returned {what}; {_HINT}", kind="bad_response", retryable=False
    )


def _plain(text: str) -> str:
    """`text` as a plain str (a numpy string, or any str subclass, is copied)."""
    return text if type(text) is str else str.__str__(text)


def _probs(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise _bad(f"choice_probs of type {type(value).__name__}")
    out: dict[str, float] = {}
    for k, v in value.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise _bad(f"a choice_probs entry {k!r}: {v!r}")
        p = float(v)
        if not math.isfinite(p):  # not JSON, and no probability
            raise _bad(f"a choice_probs entry {k!r}: {v!r}")
        out[_plain(k)] = p
    return out


def _usage(value: Any) -> dict[str, int]:
    if not isinstance(value, Mapping):
        raise _bad(f"usage of type {type(value).__name__}")
    out: dict[str, int] = {}
    for k, v in value.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise _bad(f"a usage entry {k!r}: {v!r}")
        out[_plain(k)] = int(v)
    return out


def _optional_text(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _bad(f"{name} of type {type(value).__name__}")
    return None if value is None else _plain(value)


def checked_reply(reply: Any) -> GenerateResponse:
    """`reply` as a well-formed GenerateResponse (numbers made plain), or a `bad_response`
    BackendError saying what is wrong with it."""
    if (  # the common case, checked cheaply: every built-in backend's reply
        type(reply) is GenerateResponse
        and type(reply.text) is str
        and reply.choice_probs is None
        and (reply.usage is None or all(type(v) is int for v in reply.usage.values()))
        and (reply.raw is None or type(reply.raw) is str)
        and (reply.model is None or type(reply.model) is str)
    ):
        return reply
    if not isinstance(reply, GenerateResponse):
        shown = repr(reply)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise _bad(f"a {type(reply).__name__} ({shown}), not a GenerateResponse")
    if not isinstance(reply.text, str):
        raise _bad(f"text of type {type(reply.text).__name__}")
    raw = _optional_text("raw", reply.raw)
    model = _optional_text("model", reply.model)
    probs = None if reply.choice_probs is None else _probs(reply.choice_probs)
    usage = None if reply.usage is None else _usage(reply.usage)
    return replace(
        reply, text=_plain(reply.text), raw=raw, model=model, choice_probs=probs, usage=usage
    )


# What the runner makes of a failed call


def named(exc: BaseException) -> str:
    """``TimeoutError`` or ``TimeoutError: its message``."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def retry_seconds(value: Any) -> float | None:
    """A `retry_after` as seconds: a number, or a number as text, as a backend of one's
    own may pass on a ``Retry-After`` header ("30"); None for anything else (an HTTP date,
    nan), which leaves the backoff as it is."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    seconds = float(value)
    return None if math.isnan(seconds) else seconds


def waits_too_long(error: BackendError, wait: float, limit: float) -> BackendError:
    """`error`, for a server that asks to be called again only after `wait` seconds, more
    than `limit`: the call fails now (still retryable: a later run tries the trial again)."""
    return BackendError(
        f"{error.message} (the server asks to wait {wait:g}s before trying "
        f"again, more than {limit:g}s: not tried again in this run)",
        kind=error.kind,
        retryable=error.retryable,
        retry_after=wait,
        raw=error.raw,
    )
