"""The ``openai:`` backend against replies that real OpenAI-compatible servers send, each from
a real server on 127.0.0.1: a generation that failed after the server answered 200
(OpenRouter's ``finish_reason: "error"``), a base URL copied with its endpoint, redirects,
and a compressed reply past ``max_reply_mb``."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import pytest
from aiohttp import web
from test_openai_limits import Handler, _serve, _serve_app, ask, ask_app, ask_url
from test_runner import _recs, _run

from _threaded_server import ThreadedServer
from deceptwatch._errors import BackendError, InputError
from deceptwatch.backends import GenerateResponse, get_backend
from deceptwatch.runner import RunnerConfig
from deceptwatch.store import Store

KEY = "sk-review-0123456789abcdef"


def _json(obj: Any, status: int = 200) -> Handler:
    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(
            status=status, body=json.dumps(obj).encode(), content_type="application/json"
        )

    return handler


# OpenRouter: "the returned HTTP response status will be 200 and any error occurred while the
# LLM is producing the output will be emitted in the response body" - in the choice, with
# finish_reason "error" and whatever text came before it, or as the body's "error".
_CUT_BY_ERROR = {
    "id": "gen-1",
    "model": "m",
    "choices": [
        {
            "index": 0,
            "finish_reason": "error",
            "native_finish_reason": "error",
            "message": {"role": "assistant", "content": "Answer: A"},
            "error": {"code": 502, "message": "Provider returned error"},
        }
    ],
}
_BODY_ERROR = {"error": {"code": 502, "message": "Upstream provider stopped mid-generation"}}


def _run_against(handler: Handler, cfg: RunnerConfig, db_url: str, minimal_yaml: str) -> Any:
    """A run of the minimal scenarios through `openai:` against a stub that answers with
    `handler`, stored in `db_url`: (run id, [result], counters)."""

    async def main() -> Any:
        runner, url = await _serve(handler)
        backend = get_backend("openai:m", {"base_url": url})
        try:
            with Store.open(db_url) as store:
                return await asyncio.to_thread(_run, store, _recs(minimal_yaml), [backend], cfg)
        finally:
            await runner.cleanup()

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("body", "said"),
    [(_CUT_BY_ERROR, "Provider returned error"), (_BODY_ERROR, "stopped mid-generation")],
    ids=["choice-error", "body-error"],
)
def test_a_generation_that_failed_after_a_200_is_a_retryable_error_with_its_message(
    body: dict[str, Any], said: str
) -> None:
    got = asyncio.run(ask(_json(body)))
    assert isinstance(got, BackendError), got
    assert got.retryable
    assert said in got.message
    assert got.raw is not None
    assert json.loads(got.raw) == body


def test_a_generation_that_failed_after_a_200_is_recorded_as_error_not_as_a_choice(
    db_url: str, minimal_yaml: str
) -> None:
    """The partial text before the failure ("Answer: A") must not be scored."""

    cfg = RunnerConfig(limit=1, max_retries=1, retry_base=0.01)
    _run_id, [res], counters = _run_against(_json(_CUT_BY_ERROR), cfg, db_url, minimal_yaml)
    assert counters.by_outcome["aligned"] == counters.by_outcome["defect"] == 0
    assert counters.by_outcome["other"] == 0
    assert counters.by_outcome["error"] == res.attempted > 0


def test_a_reply_with_an_error_field_of_null_is_read_as_usual() -> None:
    """Some gateways send ``"error": null`` on success: that is no failure."""
    body = {
        "model": "m",
        "error": None,
        "choices": [{"message": {"content": "(A)"}, "finish_reason": "stop"}],
    }
    got = asyncio.run(ask(_json(body)))
    assert isinstance(got, GenerateResponse), got
    assert got.text == "(A)"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/v1/chat/completions",
        "http://127.0.0.1:8000/v1/chat/completions/",
        "https://api.openai.com/v1/chat/completions",
    ],
)
def test_a_base_url_copied_with_its_endpoint_is_refused_naming_the_base_url(url: str) -> None:
    """llama.cpp's, vLLM's and OpenAI's docs show the endpoint URL in their curl examples;
    the endpoint is appended to the base URL, so every call would 404, and the 404's advice
    would say to append /v1 to .../chat/completions."""
    with pytest.raises(InputError) as caught:
        get_backend("openai:m", {"base_url": url})
    base = url.rstrip("/").removesuffix("/chat/completions")
    assert f"base_url={base}" in (caught.value.hint or "")


def test_a_query_in_the_base_url_points_azure_users_to_its_v1_api() -> None:
    url = "https://res.openai.azure.com/openai/deployments/gpt/chat?api-version=2024-10-21"
    with pytest.raises(InputError) as caught:
        get_backend("openai:gpt", {"base_url": url})
    assert "https://res.openai.azure.com/openai/v1" in (caught.value.hint or "")


def _redirecting(target: str, status: int) -> Handler:
    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers={"Location": target})

    return handler


async def _official_like(request: web.Request) -> web.StreamResponse:
    """OpenAI's answers to what a followed redirect sends: no key, or a GET."""
    if request.headers.get("Authorization") != f"Bearer {KEY}":
        return web.json_response(
            {"error": {"message": "You didn't provide an API key.", "code": None}}, status=401
        )
    if request.method != "POST":
        return web.json_response({"error": {"message": "Method Not Allowed"}}, status=405)
    return web.json_response({"model": "m", "choices": [{"message": {"content": "(A)"}}]})


async def _redirected(status: int, same_origin: bool) -> tuple[Any, str, str]:
    """A call to a server that redirects with `status` to one that answers as OpenAI does
    (on the same server, or on another port: another origin): the reply or error, the
    redirecting server's base URL and the target's."""
    app = web.Application()
    app.router.add_route("*", "/v2/chat/completions", _official_like)
    if same_origin:  # a relative Location, as a server names its own paths
        app.router.add_route(
            "*", "/v1/chat/completions", _redirecting("/v2/chat/completions", status)
        )
    target_runner, base = await _serve_app(app)
    target = base.replace("/v1", "/v2")
    runner = None
    if not same_origin:
        runner, base = await _serve(_redirecting(f"{target}/chat/completions", status))
    backend = get_backend("openai:m", {"base_url": base, "api_key": KEY})
    from deceptwatch.backends import GenerateRequest, GenerationConfig

    request = GenerateRequest([{"role": "user", "content": "hi"}], [], GenerationConfig(), 1, "t")
    try:
        return await backend.generate(request), base, target
    except BackendError as exc:
        return exc, base, target
    finally:
        await backend.aclose()
        await target_runner.cleanup()
        if runner is not None:
            await runner.cleanup()


@pytest.mark.parametrize(
    ("status", "same_origin"), [(301, True), (302, True), (307, False), (308, False)]
)
def test_a_redirect_that_fails_says_where_to_and_which_base_url_to_pass(
    status: int, same_origin: bool
) -> None:
    """A 301 or 302 turns the POST into a GET, and any redirect to another host, port or
    scheme (http to https) drops the key: the server's own answer (405, "You didn't provide
    an API key") would blame neither."""
    got, _base, target = asyncio.run(_redirected(status, same_origin))
    assert isinstance(got, BackendError), got
    assert not got.retryable
    assert f"redirected the call to {target}/chat/completions" in got.message
    assert f"-o base_url={target}" in got.message
    assert "set OPENAI_API_KEY" not in got.message  # a key was set: it was not forwarded
    assert KEY not in got.message
    assert KEY not in (got.raw or "")


def test_a_redirect_that_keeps_the_post_and_its_key_still_works() -> None:
    got, _, _ = asyncio.run(_redirected(307, same_origin=True))
    assert isinstance(got, GenerateResponse), got
    assert got.text == "(A)"


async def _gzipped(_request: web.Request) -> web.StreamResponse:
    reply = {"model": "m", "choices": [{"message": {"content": "(A)"}}], "pad": "x" * 3 * 2**20}
    body = gzip.compress(json.dumps(reply).encode())
    return web.Response(
        body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}
    )


def test_a_compressed_reply_past_the_cap_is_too_large_though_its_content_length_is_not() -> None:
    """nginx and other proxies in front of a server may gzip the JSON: Content-Length then
    counts the compressed bytes (a few KB here), not the 3 MB held in memory."""
    got = asyncio.run(ask(_gzipped, max_reply_mb="1"))
    assert isinstance(got, BackendError), got
    assert got.kind == "too_large"
    got = asyncio.run(ask(_gzipped, max_reply_mb="4"))
    assert isinstance(got, GenerateResponse), got
    assert got.text == "(A)"


def _stub_over_tls(host: str) -> tuple[Any, Any]:
    """An https stub whose certificate, for `host`, is signed by a CA of the test's own
    (no system trusts it), and that CA."""
    import ssl

    import trustme

    from deceptwatch.scenarios import load_suite
    from deceptwatch.testing.openai_stub import make_app

    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(host).configure_cert(ctx)
    return make_app(load_suite("core"), "instant"), ctx


def _call(url: str) -> Any:
    return asyncio.run(ask_url(url, timeout="10"))


def test_an_untrusted_certificate_is_not_retried_and_says_how_to_trust_it() -> None:
    """A self-hosted server behind TLS with an in-house CA: retrying cannot help (every trial
    would wait out five backoffs, and the run would end as if the endpoint were down)."""
    from deceptwatch.testing.openai_stub import serve_in_thread

    app, ctx = _stub_over_tls("127.0.0.1")
    with serve_in_thread(app, ssl_context=ctx) as url:
        got = _call(url)
    assert isinstance(got, BackendError), got
    assert not got.retryable
    assert "CERTIFICATE_VERIFY_FAILED" in got.message
    assert "SSL_CERT_FILE" in got.message


def test_https_to_a_plain_http_server_is_not_retried_and_says_to_use_http() -> None:
    from deceptwatch.scenarios import load_suite
    from deceptwatch.testing.openai_stub import make_app, serve_in_thread

    with serve_in_thread(make_app(load_suite("core"), "instant")) as url:
        got = _call(url.replace("http://", "https://"))
    assert isinstance(got, BackendError), got
    assert not got.retryable
    assert f"-o base_url={url}" in got.message


def test_a_retry_after_date_in_minus_0000_is_utc_whatever_the_local_time_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Python's own email.utils.formatdate() writes "-0000" (usegmt=False): RFC 5322's UTC
    of unknown local zone, which parsedate_to_datetime returns naive. Read as local time, a
    30 s wait became 5 h in New York (over the runner's limit: the call failed) and 0 s east
    of Greenwich (the server's wait ignored)."""
    import email.utils
    import time

    from deceptwatch.backends._openai import parse_retry_after

    try:
        for zone in ("America/New_York", "Asia/Tokyo"):
            monkeypatch.setenv("TZ", zone)
            time.tzset()
            when = email.utils.formatdate(time.time() + 30)
            assert when.endswith("-0000")
            got = asyncio.run(ask(_retry_after(when)))
            assert isinstance(got, BackendError), got
            assert got.retry_after is not None
            assert 25 < got.retry_after <= 30, (zone, got.retry_after)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert parse_retry_after({"Retry-After": "7"}) == 7.0


def _retry_after(when: str) -> Handler:
    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"error": {"message": "slow down"}}, status=429, headers={"Retry-After": when}
        )

    return handler


def test_a_boolean_among_the_usage_counts_does_not_fail_the_trial(
    db_url: str, minimal_yaml: str
) -> None:
    """Usage keeps the integer counts; a flag beside them (True is an int to isinstance)
    made every trial an error that blamed the backend's own reply."""
    body = {
        "model": "m",
        "choices": [{"message": {"content": "(A)"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "cached": True},
    }

    cfg = RunnerConfig(limit=1, max_retries=0)
    _run_id, [res], counters = _run_against(_json(body), cfg, db_url, minimal_yaml)
    assert res.attempted > 0
    assert counters.by_outcome["error"] == 0, res.error_examples


class _RefusingProxy(ThreadedServer):
    """A proxy on 127.0.0.1, in a thread, that answers every request (a CONNECT for an
    https call, the request itself for an http one) with `status`."""

    def __init__(self, status: bytes) -> None:
        super().__init__()
        self.status = status

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 " + self.status + b'\r\nProxy-Authenticate: Basic realm="corp"\r\n'
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        writer.close()


def _through_proxy(monkeypatch: pytest.MonkeyPatch, proxy: str) -> None:
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    monkeypatch.setenv("HTTP_PROXY", proxy)


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_a_proxy_that_asks_for_credentials_is_not_retried_and_says_where_they_go(
    monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    """A lab's egress proxy answers 407 until it gets credentials: over https aiohttp raised
    it as a retryable "HTTP client error: 407, message=..." (each trial waited out five
    backoffs), over http it was a bare "HTTP 407 from <the API>:"."""
    with _RefusingProxy(b"407 Proxy Authentication Required") as proxy:
        _through_proxy(monkeypatch, f"http://127.0.0.1:{proxy.port}")
        got = _call(f"{scheme}://api.example.org/v1")
    assert isinstance(got, BackendError), got
    assert not got.retryable
    assert "407" in got.message
    assert f"http://127.0.0.1:{proxy.port}" in got.message  # the proxy, not the API, refused
    variable = "HTTPS_PROXY" if scheme == "https" else "HTTP_PROXY"
    assert f"{variable}=http://USER:PASSWORD@" in got.message


def test_a_proxy_that_is_down_is_named_as_what_cannot_be_reached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not "cannot connect to https://api.example.org/v1", which sends the user to check
    the API; the proxy's credentials stay out of the message."""
    from deceptwatch.testing.openai_stub import free_port

    port = free_port()
    _through_proxy(monkeypatch, f"http://puser:psecret@127.0.0.1:{port}")
    got = _call("https://api.example.org/v1")
    assert isinstance(got, BackendError), got
    assert got.retryable  # a proxy may come back
    assert f"cannot connect to the proxy http://127.0.0.1:{port}" in got.message
    assert "psecret" not in got.message


def test_a_reply_that_is_not_json_shows_what_came_instead() -> None:
    """A corporate proxy's sign-in page, or a web UI at the base URL, answers 200 with HTML:
    the run's message said only "reply is not valid JSON"."""

    async def page(_request: web.Request) -> web.StreamResponse:
        html = b"<!doctype html><html><title>Sign in to Example Corp</title>" + b" " * 500
        return web.Response(body=html, content_type="text/html")

    got = asyncio.run(ask(page))
    assert isinstance(got, BackendError), got
    assert got.kind == "malformed_json"
    assert "text/html" in got.message
    assert "Sign in to Example Corp" in got.message
    assert len(got.message) < 300


@pytest.mark.parametrize("around", ["\r", "\n", " ", "/\r\n", "\t"])
def test_a_base_url_with_a_line_end_or_space_around_it_is_the_same_endpoint(
    around: str,
) -> None:
    """``OPENAI_BASE_URL`` sourced from a .env file saved on Windows ends in "\\r": the calls
    worked, but the "\\r" entered every trial id (a rerun with the clean URL found none of
    the trials), and a trailing space or "/\\r\\n" made every call a 404 whose advice was to
    append /v1 after the space."""
    from deceptwatch.scenarios import load_suite
    from deceptwatch.testing.openai_stub import make_app, serve_in_thread

    with serve_in_thread(make_app(load_suite("core"), "instant")) as url:
        clean = get_backend("openai:m", {"base_url": url})
        padded = get_backend("openai:m", {"base_url": url + around})
        assert padded.cache_key() == clean.cache_key()
        got = _call(url + around)
    assert isinstance(got, GenerateResponse), got
    assert got.text == "(A)"


@pytest.mark.parametrize("scheme", ["HTTP", "Http"])
def test_a_base_url_with_an_uppercase_scheme_is_the_same_endpoint(scheme: str) -> None:
    """URL schemes are case-insensitive (RFC 3986), but ``HTTP://host/v1`` was refused as
    "not an http(s) URL with a host"."""
    from deceptwatch.scenarios import load_suite
    from deceptwatch.testing.openai_stub import make_app, serve_in_thread

    with serve_in_thread(make_app(load_suite("core"), "instant")) as url:
        upper = scheme + url.removeprefix("http")
        clean = get_backend("openai:m", {"base_url": url})
        assert get_backend("openai:m", {"base_url": upper}).cache_key() == clean.cache_key()
        got = _call(upper)
    assert isinstance(got, GenerateResponse), got
    assert got.text == "(A)"


@pytest.mark.parametrize(
    ("status", "header", "retryable"),
    [(500, "false", False), (409, "false", False), (400, "TRUE", True), (500, "maybe", True)],
)
def test_the_servers_x_should_retry_decides_whether_an_error_is_retried(
    status: int, header: str, retryable: bool
) -> None:
    """OpenAI's API sends ``x-should-retry`` to say whether a retry can help (its SDK obeys
    it): a 500 or 409 it marks final was retried to the end, and a 400 it marks retryable
    failed at once. A value other than true or false leaves the status to decide."""

    async def handler(_request: web.Request) -> web.StreamResponse:
        body = json.dumps({"error": {"message": "busy or not"}}).encode()
        return web.Response(
            status=status,
            body=body,
            content_type="application/json",
            headers={"x-should-retry": header},
        )

    got = asyncio.run(ask(handler))
    assert isinstance(got, BackendError), got
    assert got.kind == f"http_{status}"
    assert got.retryable is retryable


def test_a_400_that_refuses_logprobs_says_to_run_without_them() -> None:
    """OpenAI's reasoning models refuse logprobs as they refuse max_tokens: the message named
    the option for those, and nothing for ``--logprobs``."""
    from deceptwatch.backends import GenerationConfig

    said = "Unsupported parameter: 'logprobs' is not supported with this model."
    refusal = _json({"error": {"message": said, "type": "invalid_request_error"}}, 400)

    got = asyncio.run(ask(refusal, GenerationConfig(logprobs=True)))
    assert isinstance(got, BackendError), got
    assert got.message.endswith(f"{said} (run without --logprobs)")
    got = asyncio.run(ask(refusal, GenerationConfig()))  # not asked for: not the cause
    assert isinstance(got, BackendError), got
    assert "--logprobs" not in got.message


def test_a_redirect_to_a_sign_in_page_shows_no_query() -> None:
    """A sign-in page's query may carry a session token: the message leaves it out."""

    async def signin(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/chat/completions"):
            return web.Response(status=302, headers={"Location": "/login?token=s3cr3t-relay"})
        return web.Response(body=b"<html>Sign in</html>", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", signin)
    got = asyncio.run(ask_app(app))
    assert isinstance(got, BackendError), got
    assert got.kind == "malformed_json"
    assert "redirected the call to http://127.0.0.1:" in got.message
    assert "/login" in got.message
    assert "s3cr3t-relay" not in got.message
