"""A small TCP proxy the tests put in front of PostgreSQL or RabbitMQ to inject faults.

It only ever listens on and connects to 127.0.0.1 addresses the test gives it. Modes:

- ``forward``: pass bytes both ways (optionally each chunk delayed by ``latency_s``);
- ``cut()``: close every open connection and refuse new ones (accept, then close);
- ``stall()``: keep connections open but stop forwarding (a hung peer);
- ``restore()``: back to forwarding.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class Proxy:
    """An asyncio TCP proxy from ``127.0.0.1:<port>`` to ``target_host:target_port``."""

    target_host: str
    target_port: int
    latency_s: float = 0.0
    port: int = 0
    _server: asyncio.base_events.Server | None = None
    _mode: str = "forward"
    _flowing: asyncio.Event = field(default_factory=asyncio.Event)
    _pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    connections_made: int = 0

    async def start(self) -> Proxy:
        """Listen on an ephemeral port of 127.0.0.1; returns self (see ``port``)."""
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, template: str) -> str:
        """``template`` with ``{port}`` replaced by the proxy's port."""
        return template.format(port=self.port)

    async def stop(self) -> None:
        """Close the listener and every connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._close_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        """Drop every connection now and refuse new ones until :meth:`restore`."""
        self._mode = "cut"
        self._flowing.set()
        self._close_all()

    def stall(self) -> None:
        """Stop forwarding bytes (connections stay open) until :meth:`restore`."""
        self._mode = "stall"
        self._flowing.clear()

    def restore(self, latency_s: float | None = None) -> None:
        """Forward again (optionally with a new per-chunk latency)."""
        if latency_s is not None:
            self.latency_s = latency_s
        self._mode = "forward"
        self._flowing.set()

    def _close_all(self) -> None:
        for client, upstream in list(self._pairs):
            for writer in (client, upstream):
                with contextlib.suppress(Exception):
                    writer.transport.abort()
        self._pairs.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._mode == "cut":
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.connections_made += 1
        pair = (writer, up_writer)
        self._pairs.add(pair)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst, pair))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while True:
                chunk = await src.read(65536)
                if not chunk:
                    break
                await self._flowing.wait()
                if self._mode == "cut" or pair not in self._pairs:
                    break
                if self.latency_s:
                    await asyncio.sleep(self.latency_s)
                dst.write(chunk)
                await dst.drain()
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._pairs.discard(pair)
            for writer in pair:
                with contextlib.suppress(Exception):
                    writer.transport.abort()
