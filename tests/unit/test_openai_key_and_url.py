"""The openai backend's key and base URL: a key a server echoes JSON-escaped (``\\/`` for
``/``, Gson's ``\\u003d`` for ``=``) is redacted in everything decoded from the reply, and
base URLs or keys that every call would fail on are refused up front (exit 2)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from test_openai_limits import ask

from deceptwatch._errors import BackendError, InputError
from deceptwatch.backends import get_backend

KEY = "sk-proj/AbC9=xYz+12"


def _escaped(key: str) -> str:
    """`key` as a Java server (Gson) writes it into JSON: ``/`` as ``\\/``, ``=`` and ``+``
    as ``\\u003d`` and ``\\u002b``."""
    return key.replace("/", "\\/").replace("=", "\\u003d").replace("+", "\\u002B")


async def _ask(key: str, status: int, body: str) -> Any:
    """One call of an openai backend with `key` to a loopback server that answers `body`."""

    async def completions(_request: web.Request) -> web.Response:
        return web.Response(status=status, text=body, content_type="application/json")

    return await ask(completions, api_key=key)


def _echo(key: str) -> str:
    said = f"Invalid Authorization: Bearer {_escaped(key)}"
    return '{"error": {"message": "' + said + '"}}'


@pytest.mark.parametrize("key", [KEY, "sk-1234"])
def test_a_key_echoed_json_escaped_in_an_error_is_redacted(key: str) -> None:
    exc = asyncio.run(_ask(key, 401, _echo(key)))
    assert isinstance(exc, BackendError)
    assert key not in str(exc)
    assert key not in json.loads(exc.raw or "null")["error"]["message"]
    assert "[redacted]" in str(exc)


def test_a_key_echoed_json_escaped_in_a_reply_is_redacted() -> None:
    content = f"you sent Bearer {_escaped(KEY)}"
    body = '{"model": "m", "choices": [{"message": {"content": "' + content + '"}}]}'
    reply = asyncio.run(_ask(KEY, 200, body))
    assert KEY not in reply.text
    assert "[redacted]" in reply.text
    assert KEY not in json.dumps(json.loads(reply.raw), ensure_ascii=False)


def test_a_short_key_is_redacted_as_a_word_only() -> None:
    backend = get_backend("openai:m", {"base_url": "http://127.0.0.1:9/v1", "api_key": "EMPTY"})
    assert backend._redact("Bearer EMPTY") == "Bearer [redacted]"
    assert backend._redact("EMPTYING the queue") == "EMPTYING the queue"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"base_url": "http://127.0.0.1:99999/v1"}, "base_url .* has a bad port"),
        ({"base_url": "http://127.0.0.1:80a/v1"}, "base_url .* has a bad port"),
        ({"base_url": "http://127.0.0.1:9/v1?api-version=2024"}, "has a query"),
        (
            {"base_url": "http://u:secretpw@127.0.0.1:9/v1", "api_key": "sk-abcdefgh"},
            "holds user:password@ and an API key",
        ),
        ({"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-abc\n"}, "api_key holds a newline"),
        ({"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-a\rb"}, "api_key holds a newline"),
        ({"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-a\x01b"}, "api_key holds a newline"),
    ],
)
def test_a_base_url_or_key_every_call_would_fail_on_is_refused(
    options: dict[str, str], message: str
) -> None:
    with pytest.raises(InputError, match=message) as caught:
        get_backend("openai:m", options)
    assert caught.value.hint
    assert "secretpw" not in str(caught.value)
    assert "sk-a" not in str(caught.value)


def test_a_key_with_a_line_end_in_the_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-abcdefgh\n")
    with pytest.raises(InputError, match=r"\$OPENAI_API_KEY holds a newline"):
        get_backend("openai:m", {"base_url": "http://127.0.0.1:9/v1"})
