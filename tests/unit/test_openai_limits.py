"""The openai backend's limits, on a real loopback server: a reply longer than
``max_reply_mb`` is not read on (with or without a Content-Length), and with
``max_connections`` below the runner's concurrency no call spends its time limit waiting for
a pooled connection."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from test_runner import _recs, _run

from deceptwatch._errors import BackendError, InputError
from deceptwatch.backends import get_backend
from deceptwatch.backends._base import GenerateRequest, GenerationConfig
from deceptwatch.runner import RunnerConfig
from deceptwatch.store import Store

REPLY = b'{"model": "m", "choices": [{"message": {"content": "(A)"}}]}'
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _app(handler: Handler) -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    return app


async def _serve_app(app: web.Application) -> tuple[web.AppRunner, str]:
    """`app` served on 127.0.0.1: its runner and base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/v1"


async def _serve(handler: Handler) -> tuple[web.AppRunner, str]:
    return await _serve_app(_app(handler))


async def ask(handler: Handler, config: GenerationConfig | None = None, **options: str) -> Any:
    """One call of an openai backend with `options` to a loopback server run by `handler`:
    its reply, or the error it raised."""
    return await ask_app(_app(handler), config, **options)


async def ask_app(
    app: web.Application, config: GenerationConfig | None = None, **options: str
) -> Any:
    """One call of an openai backend with `options` (and generation `config`) to `app`,
    served on 127.0.0.1: its reply, or the error it raised."""
    runner, url = await _serve_app(app)
    try:
        return await ask_url(url, config, **options)
    finally:
        await runner.cleanup()


async def ask_url(url: str, config: GenerationConfig | None = None, **options: str) -> Any:
    """One call of an openai backend with `options` to the server at base `url`: its reply,
    or the error it raised."""
    backend = get_backend("openai:m", {"base_url": url, **options})
    request = GenerateRequest(
        messages=[{"role": "user", "content": "hi"}],
        choices=[],
        config=config or GenerationConfig(),
        seed=1,
        trial_id="t",
    )
    try:
        return await backend.generate(request)
    except BackendError as exc:
        return exc
    finally:
        await backend.aclose()


def _padded(n_bytes: int) -> bytes:
    """A well-formed reply of about `n_bytes` (padding inside a field nobody reads)."""
    pad = b"x" * max(0, n_bytes - len(REPLY) - 12)
    return REPLY[:-1] + b', "pad": "' + pad + b'"}'


async def _whole(_request: web.Request) -> web.StreamResponse:
    return web.Response(body=_padded(3 * 2**20), content_type="application/json")


async def _chunked(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    body = _padded(3 * 2**20)
    for i in range(0, len(body), 65536):
        await resp.write(body[i : i + 65536])
    await resp.write_eof()
    return resp


@pytest.mark.parametrize("handler", [_whole, _chunked], ids=["content-length", "chunked"])
def test_a_reply_past_the_cap_is_an_error_and_one_below_it_is_read(handler: Handler) -> None:
    exc = asyncio.run(ask(handler, max_reply_mb="2"))
    assert isinstance(exc, BackendError)
    assert exc.kind == "too_large"
    assert not exc.retryable
    assert "max_reply_mb" in str(exc)
    reply = asyncio.run(ask(handler, max_reply_mb="4"))
    assert reply.text == "(A)"
    assert len(reply.raw) > 3 * 2**20 - 100


@pytest.mark.parametrize("value", ["0", "-1", "nan", "lots"])
def test_a_bad_reply_cap_is_bad_input(value: str) -> None:
    with pytest.raises(InputError, match="max_reply_mb"):
        get_backend("openai:m", {"base_url": "http://127.0.0.1:9/v1", "max_reply_mb": value})


def test_fewer_connections_than_concurrency_runs_fewer_calls_at_once(
    db_url: str, minimal_yaml: str
) -> None:
    in_flight = [0, 0]  # now, most

    async def slow(_request: web.Request) -> web.StreamResponse:
        in_flight[0] += 1
        in_flight[1] = max(in_flight)
        await asyncio.sleep(0.25)
        in_flight[0] -= 1
        return web.Response(body=REPLY, content_type="application/json")

    async def main() -> list[Any]:
        runner, url = await _serve(slow)
        # Each call alone takes 0.25 s, within its 0.6 s; four calls queued for one
        # connection would take 1 s, and the later ones would time out waiting.
        backend = get_backend(
            "openai:m", {"base_url": url, "max_connections": "1", "timeout": "0.6"}
        )
        cfg = RunnerConfig(concurrency=4, limit=2, max_retries=0)
        try:
            with Store.open(db_url) as store:
                return await asyncio.to_thread(_run, store, _recs(minimal_yaml), [backend], cfg)
        finally:
            await runner.cleanup()

    _run_id, [res], _ = asyncio.run(main())
    assert res.attempted >= 4  # enough calls that four queued would time out
    assert res.errors == 0
    assert in_flight[1] == 1
