"""An asyncio TCP proxy on loopback that adds latency, stops forwarding, resets or refuses on command."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct

from tests.support.redis_server import LOOPBACK

_CHUNK_BYTES = 64 * 1024


class _Link:
    """One proxied connection: the client's streams, the upstream's, and the tasks pumping between them."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None

    def abort(self) -> None:
        """Close both sockets with RST (SO_LINGER 0), as a crashed peer or a middlebox would."""
        for writer in (self.client, self.upstream):
            if writer is None or writer.transport.is_closing():
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target_host:target_port`, with faults switched at run time.

    Knobs, all effective immediately, also on open connections:
    - `latency_s` + up to `jitter_s` (seeded RNG) before each chunk, in each direction. Chunks keep
      their order: a delayed chunk delays the ones behind it, as on a slow link.
    - `blackhole()` / `restore()`: data is held, not dropped, and connections stay open; on restore
      the held bytes arrive late, which is exactly what a client that gave up must not misread.
    - `reset_all()`: every open connection is aborted with RST on both sides.
    - `refuse()` / `accept()`: close and reopen the listener (same port); new connections are refused
      in between, open ones are untouched.

    `close()` aborts everything and awaits every task it started.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        latency_s: float = 0.0,
        jitter_s: float = 0.0,
        seed: int = 0,
        connect_timeout_s: float = 2.0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.latency_s = latency_s
        self.jitter_s = jitter_s
        self.connect_timeout_s = connect_timeout_s
        self.port = 0
        self.connections_opened = 0
        self._rng = random.Random(seed)
        self._forwarding = asyncio.Event()
        self._forwarding.set()
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def open_connections(self) -> int:
        return len(self._links)

    @property
    def blackholed(self) -> bool:
        return not self._forwarding.is_set()

    def url_for(self, db: int = 0, *, scheme: str = "redis", password: str | None = None) -> str:
        """A Redis URL through this proxy (the proxy speaks plain TCP, so `rediss` passes through)."""
        auth = f":{password}@" if password is not None else ""
        return f"{scheme}://{auth}{LOOPBACK}:{self.port}/{db}"

    async def start(self) -> TcpProxy:
        """Listen on a free loopback port (or the port of an earlier `start`, after `refuse()`)."""
        if self._closed:
            raise RuntimeError("TcpProxy is closed")
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, LOOPBACK, self.port)
            self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def accept(self) -> None:
        """Listen again on the same port after `refuse()`."""
        await self.start()

    def refuse(self) -> None:
        """Close the listener: new connections get ECONNREFUSED; open ones carry on."""
        if self._server is not None:
            self._server.close()
            self._server = None

    def blackhole(self) -> None:
        self._forwarding.clear()

    def restore(self) -> None:
        self._forwarding.set()

    def reset_all(self) -> int:
        """Abort every open connection with RST; returns how many there were."""
        links = list(self._links)
        for link in links:
            link.abort()
        return len(links)

    async def close(self) -> None:
        self._closed = True
        self.refuse()
        self.reset_all()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- one connection ---------------------------------------------------------------------------

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        link = _Link(client_writer)
        if self._closed:  # accepted just before close(): nobody would await this task
            link.abort()
            return
        self._tasks.add(task)
        self.connections_opened += 1
        self._links.add(link)
        try:
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    upstream_reader, link.upstream = await asyncio.open_connection(
                        self.target_host, self.target_port
                    )
            except OSError:
                # An unreachable target looks to the client like a reset, not like a silent hang.
                link.abort()
                return
            pumps = [
                asyncio.create_task(self._pump(client_reader, link.upstream)),
                asyncio.create_task(self._pump(upstream_reader, client_writer)),
            ]
            try:
                # Redis clients never half-close: when either side is done the connection is.
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
            for writer in (client_writer, link.upstream):
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        except asyncio.CancelledError:
            # Only close() cancels this task. Ending it normally matters: asyncio's stream server
            # logs a cancelled connection task as an unhandled error.
            link.abort()
        finally:
            self._links.discard(link)
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(_CHUNK_BYTES):
                delay_s = self.latency_s + (self._rng.uniform(0, self.jitter_s) if self.jitter_s else 0.0)
                if delay_s > 0:
                    await asyncio.sleep(delay_s)
                await self._forwarding.wait()
                writer.write(chunk)
                await writer.drain()
        except OSError:
            return  # reset by either peer (or by reset_all): the link is over
