"""A fault-injecting OpenAI-compatible chat-completions server, for reliability tests.

It answers ``POST /v1/chat/completions`` on 127.0.0.1 with the scripted policies of
`deceptwatch.testing.openai_stub` (which read only the prompt text), except that a configurable
share of requests fail, each in one of these ways (`FAULT_KINDS`):

- ``http_500``: a 500 with a JSON error body;
- ``http_429``: a 429 with a ``Retry-After`` header (`retry_after` seconds);
- ``timeout``: the server hangs for `hang` seconds (longer than the client's timeout), then
  answers normally, to a client that has given up;
- ``reset``: the connection is reset (RST) before any reply;
- ``malformed_json``: a 200 whose body is not valid JSON;
- ``empty_choices``: a 200 with ``"choices": []``;
- ``truncated``: a 200 that promises a full body (``Content-Length``), sends half of it and
  closes the connection.

Which fault (if any) a request gets is a pure function of the seed, the prompt and how many
times this server has seen that prompt before, so a run against it is reproducible whatever
the order in which requests arrive. Every request and every fault is counted by kind in
`FaultStats`, with the set of prompts that were answered in full.

The server is bounded: after `max_requests` requests it answers 503 to everything else
(counted as ``budget``), and it stops itself after `max_duration` seconds. With `api_key`
set it answers 401 to any request whose ``Authorization`` header does not carry that key, so
that a test can prove a key was sent. `echo_key_in_errors` makes its 500 bodies quote the
``Authorization`` header they received, as some proxies do, to test that a client never
records such text verbatim.

Start it from a test with `FaultServer` (a context manager serving from a background
thread), or standalone with ``python -m deceptwatch.testing.faults --rate http_500=0.1 ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from deceptwatch.scenarios import ScenarioRecord
from deceptwatch.testing.openai_stub import POLICIES, PolicyIndex, free_port

FAULT_KINDS: tuple[str, ...] = (
    "http_500",
    "http_429",
    "timeout",
    "reset",
    "malformed_json",
    "empty_choices",
    "truncated",
)
# What the openai backend records (responses.error_kind) for each injected fault.
CLIENT_ERROR_KIND: dict[str, str] = {
    "http_500": "http_500",
    "http_429": "http_429",
    "timeout": "timeout",
    "reset": "connection",
    "malformed_json": "malformed_json",
    "empty_choices": "empty_choices",
    "truncated": "truncated",
}


@dataclass(frozen=True)
class FaultConfig:
    """What the server does. `rates` maps fault kinds to the share of requests that get them."""

    policy: str = "consistent"
    rates: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0
    latency: float = 0.0  # seconds before each normal reply
    retry_after: float = 1.0  # the Retry-After of a 429, in seconds
    hang: float = 2.0  # how long a `timeout` fault hangs; set it above the client's timeout
    max_requests: int = 100_000
    max_duration: float = 300.0
    api_key: str | None = None
    echo_key_in_errors: bool = False

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}; use one of {POLICIES}")
        unknown = set(self.rates) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kind {sorted(unknown)[0]!r}; use {FAULT_KINDS}")
        if any(not 0.0 <= r <= 1.0 for r in self.rates.values()):
            raise ValueError("every fault rate must lie in [0, 1]")
        if sum(self.rates.values()) > 1.0 + 1e-9:
            raise ValueError("fault rates add up to more than 1")
        if self.max_requests < 1 or self.max_duration <= 0:
            raise ValueError("max_requests and max_duration must be positive")


@dataclass
class FaultStats:
    """What the server saw and did. Updated from the server's thread; read after a run."""

    requests: int = 0
    ok: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    attempts: Counter[str] = field(default_factory=Counter)  # prompt digest -> requests
    answered: set[str] = field(default_factory=set)  # prompt digests answered in full
    log: list[tuple[str, float, str | None]] = field(default_factory=list)  # (digest, t, fault)
    unauthorized: int = 0
    budget_exhausted: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "ok": self.ok,
                "faults": dict(sorted(self.faults.items())),
                "unauthorized": self.unauthorized,
                "budget_exhausted": self.budget_exhausted,
                "prompts": len(self.attempts),
            }


def prompt_digest(messages: Sequence[Mapping[str, Any]]) -> str:
    """sha256 of the canonical JSON of the chat messages (role and content only)."""
    canon = [{"role": str(m.get("role")), "content": str(m.get("content"))} for m in messages]
    text = json.dumps(canon, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def choose_fault(config: FaultConfig, digest: str, attempt: int) -> str | None:
    """The fault for the `attempt`-th request (0-based) of a prompt, or None: deterministic."""
    if not config.rates:
        return None
    u = random.Random(f"{config.seed}:{digest}:{attempt}").random()
    edge = 0.0
    for kind in FAULT_KINDS:
        edge += config.rates.get(kind, 0.0)
        if u < edge:
            return kind
    return None


def _reply(text: str, model: str, n: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-fault-{n}",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 3, "total_tokens": 3},
    }


def _reset(request: Any) -> None:
    """Abort the connection with a TCP RST (SO_LINGER 0), before any reply is sent."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def make_fault_app(
    records: Sequence[ScenarioRecord], config: FaultConfig, stats: FaultStats | None = None
) -> Any:
    """The aiohttp application; `stats` collects what happened."""
    from aiohttp import web

    index = PolicyIndex(records)
    counter = stats if stats is not None else FaultStats()
    started = time.monotonic()

    def error_body(message: str, kind: str, request: web.Request) -> bytes:
        if config.echo_key_in_errors:
            message += f" (request had Authorization: {request.headers.get('Authorization')})"
        return json.dumps({"error": {"message": message, "type": kind}}).encode()

    async def completions(request: web.Request) -> web.StreamResponse:
        with counter.lock:
            counter.requests += 1
            n = counter.requests
        if n > config.max_requests:
            with counter.lock:
                counter.budget_exhausted += 1
            return web.Response(
                status=503,
                body=error_body("fault server request budget exhausted", "budget", request),
                content_type="application/json",
            )
        authorized = f"Bearer {config.api_key}"
        if config.api_key is not None and request.headers.get("Authorization") != authorized:
            with counter.lock:
                counter.unauthorized += 1
            return web.Response(
                status=401,
                body=json.dumps(
                    {"error": {"message": "missing or wrong API key", "type": "auth"}}
                ).encode(),
                content_type="application/json",
            )
        body = await request.json()
        messages = body.get("messages", [])
        digest = prompt_digest(messages)
        with counter.lock:
            attempt = counter.attempts[digest]
            counter.attempts[digest] += 1
        kind = choose_fault(config, digest, attempt)
        with counter.lock:
            counter.log.append((digest, time.monotonic(), kind))
        model = str(body.get("model", "fault-stub"))
        full = json.dumps(_reply(index.choose(config.policy, messages), model, n)).encode()
        if kind is not None:
            with counter.lock:
                counter.faults[kind] += 1
        if kind == "http_500":
            return web.Response(
                status=500,
                body=error_body("injected internal server error", "server_error", request),
                content_type="application/json",
            )
        if kind == "http_429":
            return web.Response(
                status=429,
                body=error_body("injected rate limit", "rate_limit", request),
                content_type="application/json",
                headers={"Retry-After": f"{config.retry_after:g}"},
            )
        if kind == "timeout":
            left = config.max_duration - (time.monotonic() - started)
            await asyncio.sleep(max(0.0, min(config.hang, left)))
            return web.Response(body=full, content_type="application/json")
        if kind == "reset":
            _reset(request)
            return web.Response(status=500)  # never reaches the client
        if kind == "malformed_json":
            return web.Response(body=full[: len(full) // 2], content_type="application/json")
        if kind == "empty_choices":
            empty = {"id": f"chatcmpl-fault-{n}", "object": "chat.completion", "choices": []}
            return web.Response(body=json.dumps(empty).encode(), content_type="application/json")
        if kind == "truncated":
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.content_length = len(full)
            await resp.prepare(request)
            await resp.write(full[: len(full) // 2])
            if request.transport is not None:
                request.transport.close()  # FIN before the promised length: a cut-off body
            return resp
        if config.latency > 0:
            await asyncio.sleep(config.latency)
        with counter.lock:
            counter.ok += 1
            counter.answered.add(digest)
        return web.Response(body=full, content_type="application/json")

    async def models(_request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fault-stub"}]})

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/v1/models", models)
    return app


class FaultServer:
    """Serve `make_fault_app` on 127.0.0.1 from a background thread.

    Use as a context manager; ``url`` is the ``/v1`` base URL and ``stats`` the live counts.
    The server stops when the context exits or after ``config.max_duration`` seconds.
    """

    def __init__(
        self, records: Sequence[ScenarioRecord], config: FaultConfig, port: int | None = None
    ) -> None:
        self.config = config
        self.stats = FaultStats()
        self.app = make_fault_app(records, config, self.stats)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _serve(self, started: threading.Event) -> None:
        from aiohttp import web

        loop = self._loop
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(
            self.app, access_log=None, shutdown_timeout=0.5, handler_cancellation=True
        )
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", self.port, backlog=1024)
            loop.run_until_complete(site.start())
        except BaseException as exc:
            self._error = exc
            started.set()
            return
        started.set()
        loop.call_later(self.config.max_duration, loop.stop)
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    def start(self) -> FaultServer:
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(started,), name="fault-server", daemon=True
        )
        self._thread.start()
        if not started.wait(10) or self._error is not None:
            raise RuntimeError(f"fault server did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._thread.is_alive() and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def fault_server(
    records: Sequence[ScenarioRecord], config: FaultConfig, port: int | None = None
) -> Iterator[FaultServer]:
    """`FaultServer` as a function: ``with fault_server(records, cfg) as srv: srv.url``."""
    with FaultServer(records, config, port) as server:
        yield server


def parse_rates(pairs: Sequence[str]) -> dict[str, float]:
    """``KIND=RATE`` strings (e.g. ``http_500=0.1``) to a rates mapping."""
    rates: dict[str, float] = {}
    for p in pairs:
        kind, sep, value = p.partition("=")
        if not sep:
            raise ValueError(f"--rate {p!r} is not KIND=RATE")
        rates[kind] = float(value)
    return rates


def main(argv: Sequence[str] | None = None) -> None:
    from deceptwatch.scenarios import load_suites

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="consistent", choices=POLICIES)
    parser.add_argument("--suite", action="append", default=None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate", action="append", default=[], help="KIND=RATE, repeatable")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--retry-after", type=float, default=1.0)
    parser.add_argument("--hang", type=float, default=2.0)
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--max-duration", type=float, default=300.0)
    args = parser.parse_args(argv)
    config = FaultConfig(
        policy=args.policy,
        rates=parse_rates(args.rate),
        seed=args.seed,
        latency=args.latency,
        retry_after=args.retry_after,
        hang=args.hang,
        max_requests=args.max_requests,
        max_duration=args.max_duration,
    )
    server = FaultServer(load_suites(args.suite or ["core"]), config, args.port or None)
    server.start()
    print(f"listening on {server.url}", flush=True)
    try:
        while server._thread is not None and server._thread.is_alive():
            server._thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        print(json.dumps(server.stats.snapshot()), flush=True)


if __name__ == "__main__":
    main()
