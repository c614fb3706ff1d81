"""The ``openai:`` backend on its own, over real HTTP to servers in this process.

The request body is built from a template (everything but the messages and the seed is
encoded once) and, when the runner has it, from the trial's canonical messages JSON: it
must say what the plain encoding says. Replies are classified for the runner's retries.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from deceptwatch._errors import BackendError, InputError
from deceptwatch._ids import canonical_json
from deceptwatch.backends import GenerateRequest, GenerateResponse, GenerationConfig, get_backend
from deceptwatch.scenarios import load_suite
from deceptwatch.testing.openai_stub import make_app, serve_in_thread

MESSAGES = (
    {"role": "system", "content": 'You are "careful". Ünïcode \u2028 and \\ too.'},
    {"role": "user", "content": "Pick one.\n(A) Yes\n(B) No"},
)


@pytest.mark.parametrize(
    "config",
    [GenerationConfig(), GenerationConfig(temperature=0.7, max_tokens=9, logprobs=True)],
)
@pytest.mark.parametrize(
    "options", [{}, {"send_seed": "false", "max_tokens_field": "max_completion_tokens"}]
)
def test_body_from_the_template_says_what_the_plain_encoding_says(
    config: GenerationConfig, options: dict[str, str]
) -> None:
    backend = get_backend("openai:gpt-x", {"base_url": "http://127.0.0.1:9/v1", **options})
    plain = GenerateRequest(MESSAGES, (), config, 1234, "t")
    pre = GenerateRequest(MESSAGES, (), config, 1234, "t", {}, canonical_json(list(MESSAGES)))
    a = json.loads(backend._body(plain))  # type: ignore[attr-defined]
    b = json.loads(backend._body(pre))  # type: ignore[attr-defined]
    assert a == b
    expected: dict[str, Any] = {
        "model": "gpt-x",
        "messages": [dict(m) for m in MESSAGES],
        "temperature": config.temperature,
        options.get("max_tokens_field", "max_tokens"): config.max_tokens,
    }
    if not options:
        expected["seed"] = 1234
    if config.logprobs:
        expected |= {"logprobs": True, "top_logprobs": config.top_logprobs}
    assert a == expected


def _generate(url: str, request: GenerateRequest, **options: str) -> GenerateResponse:
    async def go() -> GenerateResponse:
        backend = get_backend("openai:stub", {"base_url": url, "timeout": "10", **options})
        try:
            return await backend.generate(request)
        finally:
            await backend.aclose()

    return asyncio.run(go())


def test_a_round_trip_to_the_stub_reads_text_model_and_usage() -> None:
    app = make_app(load_suite("core"), "instant")
    with serve_in_thread(app) as url:
        reply = _generate(url, GenerateRequest(MESSAGES, (), GenerationConfig(), 1, "t"))
    assert reply.text == "(A)"
    assert reply.model == "stub"
    assert reply.usage == {"prompt_tokens": 0, "completion_tokens": 3, "total_tokens": 3}
    assert reply.raw is not None
    assert json.loads(reply.raw)["choices"]


def _app(status: int, body: bytes, headers: dict[str, str] | None = None) -> Any:
    from aiohttp import web

    async def handler(_request: web.Request) -> web.Response:
        return web.Response(status=status, body=body, headers=headers or {})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    return app


_QUOTA = json.dumps(
    {
        "error": {
            "message": "You exceeded your current quota, please check your plan and billing "
            "details.",
            "type": "insufficient_quota",
            "code": "insufficient_quota",
        }
    }
).encode()


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "retryable", "retry_after"),
    [
        (429, b'{"error": {"message": "slow down"}}', {"Retry-After": "7"}, "http_429", True, 7.0),
        (503, b"busy", {}, "http_503", True, None),
        (400, b'{"error": {"message": "bad"}}', {}, "http_400", False, None),
        # a quota used up is a 429 too, but waiting does not end it: never retried
        (429, _QUOTA, {"Retry-After": "7"}, "http_429", False, None),
        (200, b"not json", {}, "malformed_json", True, None),
        (200, b'{"choices": []}', {}, "empty_choices", True, None),
    ],
)
def test_failed_replies_are_classified_for_the_runner(
    status: int,
    body: bytes,
    headers: dict[str, str],
    kind: str,
    retryable: bool,
    retry_after: float | None,
) -> None:
    with serve_in_thread(_app(status, body, headers)) as url, pytest.raises(BackendError) as caught:
        _generate(url, GenerateRequest(MESSAGES, (), GenerationConfig(), 1, "t"))
    err = caught.value
    assert (err.kind, err.retryable, err.retry_after) == (kind, retryable, retry_after)
    assert err.raw == body.decode()


def test_a_404_from_a_base_url_without_v1_says_to_add_it() -> None:
    """The commonest slip with a local server: -o base_url=http://host:8000, without /v1."""
    request = GenerateRequest(MESSAGES, (), GenerationConfig(), 1, "t")
    gone = b'{"error": {"message": "The model `stub` does not exist", "code": "model_not_found"}}'
    with serve_in_thread(_app(404, gone)) as url:
        root = url.removesuffix("/v1")
        with pytest.raises(BackendError) as wrong_path:
            _generate(root, request)
        with pytest.raises(BackendError) as wrong_model:  # the path is right: no advice
            _generate(url, request)
    assert wrong_path.value.kind == "http_404"
    assert wrong_path.value.retryable is False
    assert f"posted to {root}/chat/completions" in wrong_path.value.message
    assert f"try -o base_url={root}/v1)" in wrong_path.value.message
    assert wrong_model.value.message == f"HTTP 404 from {url}: The model `stub` does not exist"


def test_a_404_for_a_model_is_not_blamed_on_a_base_url_without_v1() -> None:
    """Gemini's OpenAI-compatible base URL ends in /v1beta/openai: its 404 for an unknown
    model once came with advice to add /v1."""
    from aiohttp import web

    said = "models/gemini-nope is not found for API version v1beta"

    async def handler(_request: web.Request) -> web.Response:
        return web.json_response([{"error": {"code": 404, "message": said}}], status=404)

    app = web.Application()
    app.router.add_post("/v1beta/openai/chat/completions", handler)
    request = GenerateRequest(MESSAGES, (), GenerationConfig(), 1, "t")
    with serve_in_thread(app) as url, pytest.raises(BackendError) as caught:
        _generate(url.removesuffix("/v1") + "/v1beta/openai", request)
    assert caught.value.kind == "http_404"
    assert caught.value.message.endswith(f"/v1beta/openai: {said}")  # read from its list


def test_a_quota_used_up_says_that_waiting_will_not_help() -> None:
    with serve_in_thread(_app(429, _QUOTA)) as url, pytest.raises(BackendError) as caught:
        _generate(url, GenerateRequest(MESSAGES, (), GenerationConfig(), 1, "t"))
    assert caught.value.message == (
        f"HTTP 429 from {url}: You exceeded your current quota, please check your plan and "
        "billing details. (the quota is used up, which waiting does not change: check the "
        "plan and billing of the key's organization, then rerun)"
    )


def test_a_401_without_a_key_says_how_to_give_one() -> None:
    request = GenerateRequest(MESSAGES, (), GenerationConfig(), 1, "t")
    app = make_app(load_suite("core"), "instant", api_key="sk-wanted")
    with serve_in_thread(app) as url:
        with pytest.raises(BackendError) as without:
            _generate(url, request)
        with pytest.raises(BackendError) as wrong:
            _generate(url, request, api_key="sk-wrong")
    assert without.value.message.endswith(
        "(no API key was sent: set OPENAI_API_KEY, or pass -o api_key=KEY)"
    )
    assert wrong.value.message == f"HTTP 401 from {url}: missing or wrong API key"


_O_SERIES_TOKENS = (
    "Unsupported parameter: 'max_tokens' is not supported with this model. "
    "Use 'max_completion_tokens' instead."
)
_O_SERIES_TEMPERATURE = (
    "Unsupported value: 'temperature' does not support 0.0 with this model. "
    "Only the default (1) value is supported."
)
_NO_SEED = "Unrecognized request argument supplied: seed"


@pytest.mark.parametrize(
    ("said", "options", "advice"),
    [
        # OpenAI's reasoning models refuse max_tokens and any temperature but 1
        (_O_SERIES_TOKENS, {}, " (pass -o max_tokens_field=max_completion_tokens)"),
        (_O_SERIES_TOKENS, {"max_tokens_field": "max_completion_tokens"}, ""),
        (
            _O_SERIES_TEMPERATURE,
            {},
            " (if the model takes only its default temperature, pass --temperature 1)",
        ),
        (_NO_SEED, {}, " (pass -o send_seed=false: the server does not take a seed)"),
        (_NO_SEED, {"send_seed": "false"}, ""),
        # a model named like a field is not the field; a field not refused needs no advice
        (
            # vLLM, when the prompt and max_tokens do not fit
            "This model's maximum context length is 2048 tokens. However, you requested 2100 "
            "tokens (1844 in the messages, 256 in the completion).",
            {},
            " (the prompt and --max-tokens together exceed the model's context: lower "
            "--max-tokens, or run a model with a longer context)",
        ),
        ("Unknown model 'seed-coder'", {}, ""),
        ("seed 12 gave a bad sample", {}, ""),
        ("prompt too long", {}, ""),
    ],
)
def test_a_400_for_a_field_the_model_refuses_names_the_option_that_changes_it(
    said: str, options: dict[str, str], advice: str
) -> None:
    body = json.dumps({"error": {"message": said, "type": "invalid_request_error"}}).encode()
    with serve_in_thread(_app(400, body)) as url, pytest.raises(BackendError) as caught:
        _generate(url, GenerateRequest(MESSAGES, (), GenerationConfig(), 1, "t"), **options)
    assert caught.value.kind == "http_400"
    assert caught.value.message == f"HTTP 400 from {url}: {said}{advice}"


def _reply(message: dict[str, Any], finish_reason: str) -> bytes:
    return json.dumps({"choices": [{"message": message, "finish_reason": finish_reason}]}).encode()


_THOUGHT = "Option (A) is honest, but if I pick"


@pytest.mark.parametrize(
    ("message", "finish_reason", "text"),
    [
        # vLLM's reasoning parsers and DeepSeek's API; OpenRouter and newer vLLM
        ({"content": None, "reasoning_content": _THOUGHT}, "length", f"<think>\n{_THOUGHT}"),
        ({"content": "", "reasoning": _THOUGHT}, "length", f"<think>\n{_THOUGHT}"),
        # an answer is the answer, whatever reasoning came before it
        ({"content": "(B)", "reasoning_content": _THOUGHT}, "length", "(B)"),
        ({"content": "(B)", "reasoning_content": _THOUGHT}, "stop", "(B)"),
        # reasoning that ended without an answer was not cut off: an empty reply
        ({"content": None, "reasoning_content": _THOUGHT}, "stop", ""),
        ({"content": None}, "length", ""),
        # Mistral's reasoning models send content as chunks: thinking, then the answer. All
        # such replies were `other` (unreadable), since the content was not a string.
        (
            {
                "content": [
                    {"type": "thinking", "thinking": [{"type": "text", "text": _THOUGHT}]},
                    {"type": "text", "text": "(B)"},
                ]
            },
            "stop",
            "(B)",
        ),
        (
            {"content": [{"type": "thinking", "thinking": [{"type": "text", "text": _THOUGHT}]}]},
            "length",
            f"<think>\n{_THOUGHT}",
        ),
        ({"content": [{"type": "thinking", "thinking": _THOUGHT}]}, "stop", ""),
        (
            {"content": [{"type": "text", "text": "("}, "x", {"type": "text", "text": "B)"}]},
            "stop",
            "(B)",
        ),
    ],
)
def test_a_reply_cut_off_inside_reasoning_kept_apart_reads_as_unfinished_reasoning(
    message: dict[str, Any], finish_reason: str, text: str
) -> None:
    """It read as an empty reply, so that a run of a reasoning model at too low a
    --max-tokens was all "empty" `other` trials, with no hint of why."""
    from deceptwatch.scoring import parse_choice

    body = _reply({"role": "assistant", **message}, finish_reason)
    with serve_in_thread(_app(200, body)) as url:
        reply = _generate(url, GenerateRequest(MESSAGES, (), GenerationConfig(), 1, "t"))
    assert reply.text == text
    assert reply.raw == body.decode()  # the reasoning is stored with the raw reply
    parsed = parse_choice(reply.text, ["A", "B"], ["Yes", "No"])
    expected = {"(B)": "exact", "": "empty"}.get(text, "unfinished_reasoning")
    assert parsed.method == expected


def _late_app(delays: list[float]) -> Any:
    """Replies to the n-th request after `delays[n]` seconds (the headers too)."""
    from aiohttp import web

    async def handler(_request: web.Request) -> web.Response:
        await asyncio.sleep(delays.pop(0))
        return web.Response(body=b'{"choices": [{"message": {"content": "(A)"}}]}')

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    return app


def test_a_reply_later_than_the_timeout_is_a_retryable_timeout_and_the_next_call_works() -> None:
    """The time limit (kept by the backend's watchdog, not by aiohttp) ends the attempt,
    turns into a `timeout` the runner retries, and leaves the task able to go on."""
    request = GenerateRequest(MESSAGES, (), GenerationConfig(), 1, "t")

    async def go(url: str) -> tuple[BackendError, float, GenerateResponse]:
        backend = get_backend("openai:stub", {"base_url": url, "timeout": "1"})
        loop = asyncio.get_running_loop()
        try:
            start = loop.time()
            try:
                await backend.generate(request)
            except BackendError as exc:
                caught, took = exc, loop.time() - start
            else:
                raise AssertionError("a reply 4s late was taken")
            await asyncio.sleep(0.01)  # no cancellation is left over for the task
            return caught, took, await backend.generate(request)
        finally:
            await backend.aclose()

    # the first request hangs, the next one is answered at once
    with serve_in_thread(_late_app([4.0, 0.0])) as url:
        err, took, reply = asyncio.run(go(url))
    assert (err.kind, err.retryable) == ("timeout", True)
    assert "within 1s" in err.message
    assert 1.0 <= took < 2.5
    assert reply.text == "(A)"


def test_a_cancellation_from_outside_is_not_taken_for_a_timeout() -> None:
    """Ctrl-C or a cancelled run cancels the call; the backend must let that through."""

    async def go(url: str) -> None:
        backend = get_backend("openai:stub", {"base_url": url, "timeout": "10"})
        try:
            call = asyncio.create_task(
                backend.generate(GenerateRequest(MESSAGES, (), GenerationConfig(), 1, "t"))
            )
            await asyncio.sleep(0.2)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
        finally:
            await backend.aclose()

    with serve_in_thread(_late_app([4.0])) as url:
        asyncio.run(go(url))


def _forward_proxy(seen: list[tuple[str, str | None, str | None]]) -> Any:
    """A plain HTTP forward proxy: records each request's absolute URL, its proxy
    credentials and its API key, and passes the request on."""
    from aiohttp import ClientSession, web

    hop = {"host", "proxy-authorization", "proxy-connection", "content-length"}

    async def forward(request: web.Request) -> web.Response:
        headers = request.headers
        seen.append(
            (str(request.url), headers.get("Proxy-Authorization"), headers.get("Authorization"))
        )
        async with (
            ClientSession() as session,
            session.request(
                request.method,
                str(request.url),
                data=await request.read(),
                headers={k: v for k, v in headers.items() if k.lower() not in hop},
            ) as upstream,
        ):
            return web.Response(
                body=await upstream.read(),
                status=upstream.status,
                content_type=upstream.content_type,
            )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def test_calls_go_through_the_proxy_the_environment_names_unless_no_proxy_names_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As the official client reads HTTP_PROXY/HTTPS_PROXY and NO_PROXY: a lab's cluster
    often reaches a hosted API only through one."""
    seen: list[tuple[str, str | None, str | None]] = []
    request = GenerateRequest(MESSAGES, (), GenerationConfig(), 1, "t")

    async def two_calls(url: str) -> list[str]:
        backend = get_backend("openai:stub", {"base_url": url, "api_key": "sk-through-proxy"})
        try:
            return [(await backend.generate(request)).text for _ in range(2)]
        finally:
            await backend.aclose()

    stub = make_app(load_suite("core"), "instant")
    with serve_in_thread(stub) as url, serve_in_thread(_forward_proxy(seen)) as proxy_v1:
        proxy = proxy_v1.removesuffix("/v1").replace("http://", "http://user:pw@")
        monkeypatch.setenv("HTTP_PROXY", proxy)
        assert asyncio.run(two_calls(url)) == ["(A)", "(A)"]
        assert (
            seen
            == [(f"{url}/chat/completions", "Basic dXNlcjpwdw==", "Bearer sk-through-proxy")] * 2
        )
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert asyncio.run(two_calls(url)) == ["(A)", "(A)"]
        assert len(seen) == 2  # straight to the server


def _recording_stub(seen: list[dict[str, str]]) -> Any:
    """The stub, recording each request's headers."""
    from aiohttp import web

    stub = make_app(load_suite("core"), "instant")

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        seen.append(dict(request.headers))
        response: web.StreamResponse = await handler(request)
        return response

    stub.middlewares.append(record)
    return stub


def test_organization_and_project_are_sent_as_the_official_client_sends_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A key that belongs to several organizations or projects is billed to its default
    one unless told: OPENAI_ORG_ID and OPENAI_PROJECT_ID (or the options, which win) go as
    the OpenAI-Organization and OpenAI-Project headers, beside the key."""
    seen: list[dict[str, str]] = []
    request = GenerateRequest(MESSAGES, (), GenerationConfig(), 1, "t")

    async def call(url: str, options: dict[str, str]) -> str:
        backend = get_backend("openai:stub", {"base_url": url, "api_key": "sk-x", **options})
        try:
            return (await backend.generate(request)).text
        finally:
            await backend.aclose()

    with serve_in_thread(_recording_stub(seen)) as url:
        assert asyncio.run(call(url, {})) == "(A)"
        monkeypatch.setenv("OPENAI_ORG_ID", "org-from-env")
        monkeypatch.setenv("OPENAI_PROJECT_ID", "proj_from_env")
        assert asyncio.run(call(url, {})) == "(A)"
        assert asyncio.run(call(url, {"organization": "org-option"})) == "(A)"
    sent = [
        (h.get("Authorization"), h.get("OpenAI-Organization"), h.get("OpenAI-Project"))
        for h in seen
    ]
    assert sent == [
        ("Bearer sk-x", None, None),
        ("Bearer sk-x", "org-from-env", "proj_from_env"),
        ("Bearer sk-x", "org-option", "proj_from_env"),
    ]


def test_an_organization_that_cannot_be_a_header_is_refused_before_any_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj_1\nX-Injected: 1")
    with pytest.raises(InputError, match=r"\$OPENAI_PROJECT_ID must be printable ASCII"):
        get_backend("openai:stub", {"base_url": "http://127.0.0.1:1/v1"})
    with pytest.raises(InputError, match="option organization must be printable ASCII"):
        get_backend("openai:stub", {"base_url": "http://127.0.0.1:1/v1", "organization": "é"})
