"""The ``openai:`` backend's secrets and base URL: the API key read and checked, the base URL
checked before anything is written, both kept out of everything a reply leaves behind (the
key in any JSON escape of it, user info in a URL), and the headers that carry the key kept
from a proxy."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from deceptwatch._errors import InputError


def api_key(opts: Mapping[str, str]) -> str:
    """The API key, from the option, else from ``OPENAI_API_KEY``: printable ASCII, as it is
    sent in the Authorization header (a newline would split the header)."""
    key = opts.get("api_key") or os.environ.get("OPENAI_API_KEY") or ""
    if key and not (key.isascii() and key.isprintable()):
        source = "option api_key" if opts.get("api_key") else "$OPENAI_API_KEY"
        raise InputError(  # the key itself is not shown: it is a secret
            f"openai {source} holds a newline, control or non-ASCII character (it is sent "
            "as the Authorization header)",
            hint="copy the key again without the line end, e.g. "
            "export OPENAI_API_KEY=\"$(tr -d '\\r\\n' < key.txt)\"",
        )
    return key


def check_base_url(base: str, has_key: bool) -> None:
    """Refuse a base URL that every call would fail on, before anything is written."""
    example = "e.g. -o base_url=http://127.0.0.1:8000/v1"
    try:
        parts = urlsplit(base)
        host = parts.hostname
        parts.port  # noqa: B018  (raises ValueError for a bad or out-of-range port)
    except ValueError as exc:
        raise InputError(
            f"base_url {redact_url_safe(base)!r} has a bad port ({exc})",
            hint=f"a port is a number from 1 to 65535, {example}",
        ) from None
    if not base.startswith(("http://", "https://")) or not host:
        raise InputError(
            f"base_url {redact_url_safe(base)!r} is not an http(s) URL with a host",
            hint=example,
        )
    if parts.query or parts.fragment:
        raise InputError(
            f"base_url {redact_url(base)!r} has a query or fragment (?...): /chat/completions "
            "is appended to the path, which cannot follow a query",
            hint="give the URL without the ?...; a server that needs a query parameter is not "
            "supported by the openai backend, but Azure OpenAI's v1 API needs no api-version: "
            f"-o base_url={_azure_v1(parts.hostname or '')} (its key as api_key, "
            "the deployment as the model)",
        )
    path = parts.path.rstrip("/")
    if path.endswith("/chat/completions"):  # copied from a curl example of the endpoint
        root = redact_url(
            urlunsplit((parts.scheme, parts.netloc, path.removesuffix("/chat/completions"), "", ""))
        )
        raise InputError(
            f"base_url {redact_url(base)!r} ends in /chat/completions, which the "
            "openai backend appends to the base URL itself",
            hint=f"give the base URL without the endpoint: -o base_url={root}",
        )
    if has_key and (parts.username is not None or parts.password is not None):
        raise InputError(
            f"base_url {redact_url(base)!r} holds user:password@ and an API key is set: "
            "the two cannot both be sent (each is an Authorization header)",
            hint="drop the user:password@ from base_url, or unset OPENAI_API_KEY and -o api_key",
        )


def _azure_v1(host: str) -> str:
    """Azure OpenAI's v1 base URL for `host` when it is an Azure resource's, else a pattern."""
    if host.endswith((".openai.azure.com", ".cognitiveservices.azure.com", ".ai.azure.com")):
        return f"https://{host}/openai/v1"
    return "https://RESOURCE.openai.azure.com/openai/v1"


def redact_url_safe(url: str) -> str:
    """`redact_url`, or the URL cut at its user info when it cannot be parsed."""
    try:
        return redact_url(url)
    except ValueError:
        scheme, sep, rest = url.partition("://")
        return scheme + sep + rest.rpartition("@")[2] if sep else url


# Keys shorter than this are not looked for in replies (every "a" would go); shorter ones
# (a local server's "EMPTY" or "test") are redacted only as whole words.
_MIN_REDACTED = 4


def key_pattern(key: str) -> re.Pattern[str] | None:
    """A pattern for `key` as a reply may carry it: each character as itself or in any JSON
    escape of it (``\\uXXXX`` in either case, ``\\/``, ``\\"``, ``\\\\``). None for no key."""
    if len(key) < _MIN_REDACTED:
        return None
    parts = []
    for char in key:
        code = f"{ord(char):04x}"
        forms = [re.escape(char), r"\\u" + "".join(f"[{c}{c.upper()}]" for c in code)]
        if char in '/"\\':
            forms.append(re.escape("\\" + char))
        parts.append("(?:" + "|".join(forms) + ")")
    body = "".join(parts)
    if len(key) < 8:  # a short key only as a whole word, not inside every longer one
        body = rf"(?<![\w-]){body}(?![\w-])"
    return re.compile(body)


def redact_url(url: str) -> str:
    """The URL without user info (``user:password@``), which may hold a secret."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def request_headers(
    url: Any, api_key: str, identity: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str] | None, Any, dict[str, str] | None]:
    """The session's headers, each request's own (or None), the proxy (or None) and the
    CONNECT's headers (or None), for calls to `url`.

    The proxy is the one the environment gives for `url`, as aiohttp's ``trust_env`` reads
    it (``HTTP_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY``; credentials from the proxy's URL or
    ``~/.netrc``), read once per session where ``trust_env`` reads it per request.

    Through a proxy the API key (and the `identity` headers: the organization and project
    billed) goes in each request's headers, not the session's: aiohttp merges the session's
    headers into the proxy's and sends an Authorization among them as Proxy-Authorization,
    so the key would reach the proxy (in the CONNECT of an HTTPS call).
    The proxy's credentials go in the CONNECT of an HTTPS call (the request itself travels
    encrypted past the proxy), and in the request of a plain-HTTP one (which the proxy reads).
    """
    from aiohttp.helpers import get_env_proxy_for_url

    session = {"Content-Type": "application/json"}
    key = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    key.update(identity)
    try:
        proxy, auth = get_env_proxy_for_url(url)
    except LookupError:  # no proxy for this URL
        return {**session, **key}, None, None, None
    if auth is None:
        return session, key or None, proxy, None
    credentials = {"Proxy-Authorization": auth.encode()}
    if url.scheme == "https":
        return session, key or None, proxy, credentials
    return session, {**key, **credentials}, proxy, None
