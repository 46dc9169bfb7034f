"""A TCP fault proxy for tests: sits between the gateway and a dependency (Redis, a collector)
on a loopback port, and a test switches what it does to the traffic at any time.

Modes: `forward` (a plain proxy), `refuse` (nothing listens: connections are refused, and open
ones are reset), `blackhole` (connections are accepted, bytes swallowed, nothing ever answered),
`pause` (bytes are held, and delivered when the mode changes) and `slow` (each chunk waits
`delay_s` before it is passed on). It runs its own event loop on a daemon thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Coroutine
from typing import Any, Literal

__all__ = ["FaultProxy", "Mode"]

Mode = Literal["forward", "refuse", "blackhole", "pause", "slow"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class FaultProxy:
    """Proxies 127.0.0.1:`port` to 127.0.0.1:`target_port`; `set()` switches the fault."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = _free_port()
        self.mode: Mode = "forward"
        self.delay_s = 0.0
        self.connections = 0  # accepted so far, for tests that want to see traffic
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()  # clear while paused
        self._flowing.set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        self._run(self._listen())
        return self

    def __exit__(self, *exc: object) -> None:
        self._run(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def set(self, mode: Mode, delay_s: float = 0.0) -> None:
        """Switches the fault; `refuse` also resets every open connection."""
        self.delay_s = delay_s
        self.mode = mode
        flow = self._flowing.clear if mode == "pause" else self._flowing.set
        self._loop.call_soon_threadsafe(flow)
        if mode == "refuse":
            self._run(self._close())
        elif self._server is None:
            self._run(self._listen())

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(5)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            if self.mode == "blackhole":
                while await reader.read(65536):
                    pass
                return
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                return
            self._writers.add(up_writer)
            try:
                await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
            finally:
                self._writers.discard(up_writer)
                up_writer.close()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                if self.mode == "blackhole":
                    continue
                if self.mode == "slow":
                    await asyncio.sleep(self.delay_s)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
