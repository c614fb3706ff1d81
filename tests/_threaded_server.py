"""A raw asyncio TCP server on 127.0.0.1, run in a thread, for tests that need a peer that
speaks bytes rather than an aiohttp app (proxies, mostly). Subclasses define `_handle`."""

from __future__ import annotations

import asyncio
import threading
from typing import Self


class ThreadedServer:
    """Serves `_handle` on a free port of 127.0.0.1 while in a ``with`` block; `url` is
    ``http://127.0.0.1:PORT`` once it is listening."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    def __enter__(self) -> Self:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
