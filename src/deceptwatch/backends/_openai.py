"""``openai:MODEL`` — any OpenAI-compatible chat-completions endpoint, over aiohttp.

Base URL and key come from options (``base_url``, ``api_key``) or, as the official client
reads them, from ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``; a proxy, as it too reads it, from
``HTTPS_PROXY``/``HTTP_PROXY`` (credentials in its URL included) unless ``NO_PROXY`` names the
host. aiohttp is used because it holds thousands of requests per second on loopback where
httpx manages a few hundred.

This module makes one attempt per call. It classifies failures for the runner, which owns
retries: 429 (but for a used-up quota, ``insufficient_quota``), 408, 409 and 5xx are
retryable and carry the server's ``Retry-After``; connection errors, timeouts, truncated
bodies, malformed JSON, empty ``choices`` and a 200 that reports a failed generation
(OpenRouter's ``finish_reason: "error"``: the text before it is not scored) are retryable;
other 4xx are not; nor are TLS failures (an untrusted certificate, https to a plain-HTTP
server) and a proxy's 407. A failed call that the server redirected says where to (a 301 or
302 turns the POST into a GET; the key is not sent to another origin). The API key is sent
in a header and never recorded.

Options: ``base_url``, ``api_key``, ``timeout`` (seconds, 60), ``max_connections``,
``max_reply_mb`` (64: a longer reply is a ``too_large`` error), ``send_seed`` (``true``),
``max_tokens_field`` (``max_completion_tokens`` for OpenAI's
reasoning models), ``system`` (``merge`` folds system messages into the first user message,
for a server whose chat template refuses a system role), ``organization`` and ``project``
(else ``OPENAI_ORG_ID`` and ``OPENAI_PROJECT_ID``, as the official client reads them: sent as
``OpenAI-Organization`` and ``OpenAI-Project``).
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import json
import math
import os
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from deceptwatch._deadlines import Deadlines
from deceptwatch._errors import BackendError, InputError
from deceptwatch.backends._base import (
    SCOPE_HINT,
    BaseBackend,
    GenerateRequest,
    GenerateResponse,
    GenerationConfig,
)
from deceptwatch.backends._chat import MERGE_ADVICE, merge_system, system_option
from deceptwatch.backends._openai_reply import (
    cut_off_reasoning,
    error_message,
    failed_generation,
    split_chunks,
)
from deceptwatch.backends._openai_secrets import (
    api_key,
    check_base_url,
    key_pattern,
    redact_url,
    request_headers,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529})
_PLAIN = ("", "identity")  # Content-Encodings whose Content-Length is the body's own
_KNOWN_OPTIONS = frozenset(
    {
        "base_url",
        "api_key",
        "timeout",
        "max_connections",
        "max_reply_mb",
        "send_seed",
        "max_tokens_field",
        "system",
        "organization",
        "project",
    }
)
# Who a call is billed to, read as the official client reads them: an option, else the
# environment. Sent as headers with the key (never to a proxy).
_IDENTITY = (
    ("organization", "OPENAI_ORG_ID", "OpenAI-Organization", "org-..."),
    ("project", "OPENAI_PROJECT_ID", "OpenAI-Project", "proj_..."),
)


def _identity(opts: Mapping[str, str]) -> dict[str, str]:
    """The `_IDENTITY` headers to send: from the options, else from the environment."""
    headers = {}
    for option, variable, header, example in _IDENTITY:
        value = opts.get(option) or os.environ.get(variable) or ""
        if value and not (value.isascii() and value.isprintable()):
            source = f"option {option}" if opts.get(option) else f"${variable}"
            raise InputError(
                f"openai {source} must be printable ASCII (it is sent as the {header} "
                f"header): {value!r}",
                hint=f"give the id as the provider shows it, e.g. -o {option}={example}",
            )
        if value:
            headers[header] = value
    return headers


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" (formatdate's default): UTC, not local time
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - time.time())


_REFUSED = re.compile(
    r"unsupported|not supported|does not support|not allowed|not permitted|unknown|"
    r"unrecogni[sz]ed|extra (?:inputs|fields)|invalid"
)


def _named(field: str, message: str) -> bool:
    """Whether a server's error message names the request field `field` (quoted, as
    OpenAI, vLLM and pydantic-based servers quote it, or as a bare word)."""
    return re.search(rf"(?<![\w.-]){field}(?![\w-])", message) is not None


class OpenAIBackend(BaseBackend):
    name = "openai"
    uses_metadata = False

    def __init__(self, spec: str, options: Mapping[str, str] | None = None) -> None:
        super().__init__(spec, options)
        self.model = spec.partition(":")[2]
        if not self.model:
            raise InputError(
                f"model spec {spec!r} names no model",
                hint="write openai:MODEL, e.g. openai:gpt-4o-mini",
            )
        opts = dict(options or {})
        unknown = set(opts) - _KNOWN_OPTIONS
        if unknown:
            raise InputError(
                f"unknown option {sorted(unknown)[0]!r} for the openai backend",
                hint=f"known options: {', '.join(sorted(_KNOWN_OPTIONS))}; {SCOPE_HINT}",
            )
        base = opts.get("base_url") or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        base = base.strip()  # a "\r" from a .env file saved on Windows: one endpoint, one id
        scheme, sep, rest = base.partition("://")
        if sep and scheme.lower() in ("http", "https"):  # HTTP://: the same endpoint, one id
            base = scheme.lower() + sep + rest
        self._api_key = api_key(opts)
        check_base_url(base, bool(self._api_key))
        self.base_url = base.rstrip("/")
        self.public_url = redact_url(self.base_url)
        self._key_pattern = key_pattern(self._api_key)
        self._identity = _identity(opts)
        try:
            self.timeout = float(opts.get("timeout", "60"))
            self._max_connections = int(opts.get("max_connections", "0"))
            max_reply_mb = float(opts.get("max_reply_mb", "64"))
        except ValueError:
            raise InputError(
                "openai options timeout, max_connections and max_reply_mb must be numbers"
            ) from None
        if not (math.isfinite(max_reply_mb) and max_reply_mb > 0):
            raise InputError(
                f"openai option max_reply_mb={opts.get('max_reply_mb')!r} must be a positive "
                "number of megabytes (2**20 bytes)",
                hint="e.g. -o max_reply_mb=64",
            )
        self._max_reply = int(max_reply_mb * 2**20)
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise InputError(
                f"openai option timeout={opts.get('timeout')!r} must be a positive number of seconds",
                hint="e.g. -o timeout=60",
            )
        if self._max_connections < 0:
            raise InputError(
                "openai option max_connections must be 0 (as many as --concurrency) or more",
                hint="e.g. -o max_connections=64",
            )
        self.send_seed = opts.get("send_seed", "true").lower() in ("1", "true", "yes")
        self.max_tokens_field = opts.get("max_tokens_field", "max_tokens")
        self.system = system_option(opts, "openai")
        self._url = f"{self.base_url}/chat/completions"
        self._session: Any = None
        self._endpoint: Any = None
        self._deadlines = Deadlines(self.timeout)
        self._watchdog: asyncio.Task[None] | None = None
        self._limit = 64
        self._proxy: Any = None  # from the environment, read with the session
        self._proxy_headers: dict[str, str] | None = None
        self._request_headers: dict[str, str] | None = None  # the key, when through a proxy
        self._head_for: GenerationConfig | None = None
        self._head_text = ""

    def _redact(self, text: str) -> str:
        """`text` with this backend's API key replaced by ``[redacted]``: written plainly or
        JSON-escaped (``\\/`` for ``/``, ``\\u003d`` for ``=``, as Gson writes it), so that
        decoding a redacted reply cannot give the key back."""
        pattern = self._key_pattern
        if pattern is None:
            return text
        if "\\" not in text and self._api_key not in text:
            return text  # the common case: neither the key nor any escape in the reply
        return pattern.sub("[redacted]", text)

    def cache_key(self) -> dict[str, Any]:
        key = {"spec": self.spec, "base_url": self.public_url}
        if self.system != "keep":  # another prompt, so other ids; keep keeps its old ids
            key["system"] = self.system
        return key

    def describe(self) -> dict[str, Any]:
        return {**self.cache_key(), "timeout": self.timeout, **self._identity}

    def set_concurrency(self, n: int) -> None:
        """Bound the connection pool to the runner's concurrency unless set explicitly."""
        self._limit = self._max_connections or max(1, n)

    def connections(self, concurrency: int) -> int:
        """The most connections this backend holds open at `concurrency` calls at once."""
        return min(self._max_connections or concurrency, max(1, concurrency))

    async def _get_session(self) -> Any:
        if self._session is None:
            import aiohttp
            import yarl

            connector = aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=300)
            self._endpoint = yarl.URL(self._url)  # parsed once, not per request
            headers, self._request_headers, self._proxy, self._proxy_headers = request_headers(
                self._endpoint, self._api_key, self._identity
            )
            # No aiohttp timeout: it would schedule and cancel a timer per request. The
            # time limit is kept by one watchdog for all calls (`Deadlines`), over the
            # whole attempt (connecting, sending, reading), as aiohttp's `total` would.
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=headers,
                timeout=aiohttp.ClientTimeout(),
                raise_for_status=False,
            )
            self._deadlines = Deadlines(self.timeout)
            self._watchdog = asyncio.create_task(self._deadlines.watch())
        return self._session

    def _advice(self, status: int, said: str, retryable: bool = True) -> str:
        """What to change, where a failed call's status and message tell (or "")."""
        # A 404 that names a model is about the model, not the path: a base URL may
        # rightly lack /v1 (Gemini's ends in /v1beta/openai).
        if (
            status == 404
            and not urlsplit(self.public_url).path.rstrip("/").endswith("/v1")
            and "model" not in said.lower()
        ):
            return (
                f" (posted to {self.public_url}/chat/completions; vLLM, llama.cpp, Ollama "
                f"and most others serve it under /v1: try -o base_url={self.public_url}/v1)"
            )
        if status == 401 and not self._api_key:
            return " (no API key was sent: set OPENAI_API_KEY, or pass -o api_key=KEY)"
        if status == 429 and not retryable:
            return (
                " (the quota is used up, which waiting does not change: check the plan and "
                "billing of the key's organization, then rerun)"
            )
        if status != 400:
            return ""
        lowered = said.lower()
        if "maximum context length" in lowered or "context_length_exceeded" in lowered:
            return (
                " (the prompt and --max-tokens together exceed the model's context: lower "
                "--max-tokens, or run a model with a longer context)"
            )
        refused = _REFUSED.search(lowered) is not None
        # OpenAI's reasoning models: "Unsupported parameter: 'max_tokens' is not supported
        # with this model. Use 'max_completion_tokens' instead."
        if "max_completion_tokens" in lowered and self.max_tokens_field == "max_tokens":
            return " (pass -o max_tokens_field=max_completion_tokens)"
        # "Unsupported value: 'temperature' does not support 0.0 with this model. Only the
        # default (1) value is supported."
        if refused and _named("temperature", lowered):
            return " (if the model takes only its default temperature, pass --temperature 1)"
        asked = self._head_for is not None and self._head_for.logprobs
        if refused and asked and (_named("logprobs", lowered) or _named("top_logprobs", lowered)):
            return " (run without --logprobs)"
        if refused and self.send_seed and _named("seed", lowered):
            return " (pass -o send_seed=false: the server does not take a seed)"
        if self.system == "keep" and "system" in lowered:
            return f" (if the server's chat template refuses a system role, {MERGE_ADVICE})"
        return ""

    def _head(self, cfg: GenerationConfig) -> str:
        """The request body up to its messages: everything but messages and seed is the
        same for every request with these settings, so it is encoded once."""
        if self._head_for is not cfg:
            fixed: dict[str, Any] = {
                "model": self.model,
                "temperature": cfg.temperature,
                self.max_tokens_field: cfg.max_tokens,
            }
            if cfg.logprobs:
                fixed["logprobs"] = True
                if cfg.top_logprobs:
                    fixed["top_logprobs"] = cfg.top_logprobs
            self._head_text = json.dumps(fixed)[:-1] + ', "messages": '
            self._head_for = cfg
        return self._head_text

    def _body(self, request: GenerateRequest) -> bytes:
        messages = request.messages_json
        if self.system == "merge":
            messages = json.dumps(merge_system(request.messages))
        elif messages is None:
            messages = json.dumps(
                [{"role": m["role"], "content": m["content"]} for m in request.messages]
            )
        seed = f', "seed": {int(request.seed)}}}' if self.send_seed else "}"
        return (self._head(request.config) + messages + seed).encode("utf-8")

    async def generate(self, request: GenerateRequest) -> GenerateResponse:
        import aiohttp

        session = self._session or await self._get_session()
        deadlines = self._deadlines
        task = asyncio.current_task()
        assert task is not None
        deadlines.arm(task)
        try:
            async with session.post(
                self._endpoint,
                data=self._body(request),
                headers=self._request_headers,
                proxy=self._proxy,
                proxy_headers=self._proxy_headers,
            ) as resp:
                length = resp.content_length
                # A compressed body's Content-Length counts its compressed bytes, not the
                # ones it decompresses to (and keeps in memory): read it as one of unknown
                # length.
                encoding = resp.headers.get("Content-Encoding", "").strip().lower()
                if length is not None and length <= self._max_reply and encoding in _PLAIN:
                    raw_bytes = await resp.read()
                else:  # too long, or of unknown length: read no more than the cap
                    raw_bytes = await self._read_capped(resp)
                status = resp.status
                headers = resp.headers
                moved = self._redirect_note(resp) if resp.history else ""
        except asyncio.CancelledError:
            if not deadlines.timed_out(task):
                raise
            raise BackendError(
                f"no reply from {self.public_url} within {self.timeout:g}s",
                kind="timeout",
                retryable=True,
            ) from None
        except TimeoutError:
            raise BackendError(
                f"no reply from {self.public_url} within {self.timeout:g}s",
                kind="timeout",
                retryable=True,
            ) from None
        except aiohttp.ClientPayloadError as exc:
            raise BackendError(
                f"truncated reply: {exc}", kind="truncated", retryable=True
            ) from None
        except aiohttp.ClientProxyConnectionError as exc:
            raise BackendError(
                f"cannot connect to the proxy {redact_url(str(self._proxy))} (for "
                f"{self.public_url}): {exc.os_error.strerror or exc}",
                kind="connection",
                retryable=True,
            ) from None
        except aiohttp.ClientSSLError as exc:  # retrying does not change a certificate
            raise BackendError(
                f"cannot connect to {self.public_url} over TLS: {exc.os_error.strerror or exc}"
                f"{self._tls_advice(exc)}",
                kind="tls",
                retryable=False,
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise BackendError(
                f"cannot connect to {self.public_url}: {exc.os_error.strerror or exc}",
                kind="connection",
                retryable=True,
            ) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise BackendError(
                f"connection to {self.public_url} lost: {exc}", kind="connection", retryable=True
            ) from None
        except aiohttp.ClientHttpProxyError as exc:  # the CONNECT of an https call refused
            raise self._proxy_refused(exc.status, exc.message) from None
        except aiohttp.ClientError as exc:
            raise BackendError(
                f"HTTP client error: {exc}", kind="client_error", retryable=True
            ) from None
        finally:
            deadlines.disarm(task)
        # A server or proxy may echo the Authorization header (e.g. in a 401 or 500 body):
        # nothing derived from a reply may carry the key into the store, report or logs.
        raw = self._redact(raw_bytes.decode("utf-8", errors="replace"))
        if status == 407 and self._proxy is not None:
            raise self._proxy_refused(status, error_message(raw), raw)
        if status != 200:
            # A 429 for an exhausted quota (OpenAI's "insufficient_quota") does not pass
            # with time, as a rate limit does: retrying it only delays the stop.
            spent = status == 429 and "insufficient_quota" in raw
            retryable = (status in RETRYABLE_STATUS or status >= 500) and not spent
            # OpenAI's servers say themselves whether a retry can help; their SDK obeys it
            said_retry = headers.get("x-should-retry", "").strip().lower()
            if said_retry in ("true", "false"):
                retryable = said_retry == "true"
            said = self._redact(error_message(raw))  # decoded: escapes undone
            advice = moved or self._advice(status, said, retryable)
            raise BackendError(
                f"HTTP {status} from {self.public_url}: {said}{advice}",
                kind=f"http_{status}",
                retryable=retryable,
                retry_after=parse_retry_after(headers) if retryable else None,
                raw=raw,
            )
        try:
            data = json.loads(raw)
        except ValueError:
            kind = headers.get("Content-Type", "no Content-Type").partition(";")[0]
            shown = repr(" ".join(raw[:120].split())) if raw.strip() else "an empty body"
            raise BackendError(
                f"reply is not valid JSON ({kind}: {shown}){moved}",
                kind="malformed_json",
                retryable=True,
                raw=raw,
            ) from None
        if not isinstance(data, dict):
            raise BackendError(
                f"reply is not a JSON object{moved}", kind="malformed_json", retryable=True, raw=raw
            )
        choices = data.get("choices")
        first: dict[str, Any] = (
            choices[0]
            if isinstance(choices, list) and choices and isinstance(choices[0], dict)
            else {}
        )
        failed = failed_generation(data, first)
        if failed is not None:
            raise BackendError(
                f"the server answered 200 but reports that the generation failed: "
                f"{self._redact(failed)}",
                kind="generation_error",
                retryable=True,
                raw=raw,
            )
        if not isinstance(choices, list) or not choices:
            raise BackendError(
                "reply has no choices", kind="empty_choices", retryable=True, raw=raw
            )
        found = first.get("message")
        message: dict[str, Any] = found if isinstance(found, dict) else {}
        content = message.get("content")
        thought = ""
        if isinstance(content, list):  # chunks: Mistral's reasoning models (Magistral)
            content, thought = split_chunks(content)
        if not isinstance(content, str):
            refusal = message.get("refusal")
            content = refusal if isinstance(refusal, str) else ""
        if not content.strip() and first.get("finish_reason") == "length":
            content = cut_off_reasoning(message, thought) or content
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
        model = data.get("model")
        return GenerateResponse(
            text=self._redact(content),  # decoded: escapes undone
            raw=raw,
            model=self._redact(model) if isinstance(model, str) else None,
            usage={k: v for k, v in usage.items() if type(v) is int} if usage else None,
        )

    def _proxy_refused(self, status: int, said: str, raw: str | None = None) -> BackendError:
        """The error for a proxy's refusal of a call (its 407 asks for credentials)."""
        proxy = redact_url(str(self._proxy))
        advice = ""
        if status == 407:
            variable = "HTTPS_PROXY" if self._endpoint.scheme == "https" else "HTTP_PROXY"
            advice = (
                " (the proxy asks for credentials, or refuses those given: they go in its "
                f"URL, {variable}=http://USER:PASSWORD@{proxy.partition('://')[2]})"
            )
        return BackendError(
            f"the proxy {proxy} refused the call to {self.public_url}: HTTP {status} "
            f"{said}".rstrip()
            + advice,
            kind=f"proxy_{status}",
            retryable=status in RETRYABLE_STATUS or status >= 500,
            raw=raw,
        )

    def _tls_advice(self, exc: Exception) -> str:
        import aiohttp

        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            return (
                " (if the server's certificate is signed by a CA of your own, give the CA's "
                "PEM file as SSL_CERT_FILE=/path/to/ca.pem)"
            )
        if "WRONG_VERSION_NUMBER" in str(exc):
            plain = "http://" + self.public_url.removeprefix("https://")
            return f" (the server may speak plain HTTP: try -o base_url={plain})"
        return ""

    def _redirect_note(self, resp: Any) -> str:
        """What a failed call that the server redirected should say: where to, what the
        redirect did to the call, and the base URL to pass instead."""
        # without its query, which may carry a sign-in page's tokens
        final = self._redact(redact_url(str(resp.url.with_query(None).with_fragment(None))))
        path = resp.url.path.rstrip("/")
        changed = []
        to_get = [r.status for r in resp.history if r.status in (301, 302, 303)]
        if to_get:
            changed.append(f"a {to_get[0]} turns the POST into a GET")
        if self._api_key and resp.url.origin() != self._endpoint.origin():
            changed.append("the API key is not sent on to another host, port or scheme")
        if path.endswith("/chat/completions"):
            base = final.rstrip("/").removesuffix("/chat/completions")
            fix = f"pass -o base_url={base}"
        else:
            fix = "pass the server's own base URL as -o base_url"
        return (
            f" (the server redirected the call to {final}"
            + "".join(f"; {c}" for c in changed)
            + f": {fix})"
        )

    async def _read_capped(self, resp: Any) -> bytes:
        """The body of `resp`, or a `too_large` error once it passes ``max_reply_mb``: a
        reply is kept in memory, decoded and stored, so one unbounded body could take the
        whole machine's memory."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_any():
            size += len(chunk)
            if size > self._max_reply:
                resp.close()  # the connection is dropped, not drained
                raise BackendError(
                    f"HTTP {resp.status} reply from {self.public_url} is longer than "
                    f"{self._max_reply / 2**20:g} MB (option max_reply_mb): not read further "
                    f"(pass -o max_reply_mb=N to allow longer replies)",
                    kind="too_large",
                    retryable=False,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._session is not None:
            await self._session.close()
            self._session = None


def create(spec: str, options: Mapping[str, str]) -> OpenAIBackend:
    return OpenAIBackend(spec, options)
