"""A userspace TCP proxy in front of each node, with a rule per directed link.

Every node's raft address, as the *other* nodes know it, is a port of this
proxy; the proxy forwards to the node's real port. libraft opens one outgoing
connection per peer and starts it with a 24-byte preamble (protocol, sender
id, address length: little-endian u64s), so the proxy in front of node ``dst``
learns the sender ``src`` of every connection and applies the rule of the
directed link ``src -> dst`` to it. Messages from ``dst`` back to ``src``
travel on ``dst``'s own connection to ``src``'s proxy: cutting one direction
leaves the other alone.

Link modes:

* ``up``: forward (after ``delay`` seconds per chunk, if set);
* ``blackhole``: stop forwarding, keep the connections open (TCP back-pressure
  fills the sender's buffers; nothing fails fast). When the link comes back
  its connections are reset, so no byte held back is ever delivered out of
  place: the sender reconnects, as after a real partition;
* ``refuse``: reset existing connections, and reset new ones at once (fails fast).

Bytes are never dropped from the middle of a stream: libraft trusts its input,
and a stream with a hole is not something TCP can produce.

All sockets live on one asyncio loop in a daemon thread; the public methods
are thread-safe and return once the rule is in force.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..local_cluster import free_port

__all__ = ["LinkProxy", "MODES"]

MODES = ("up", "blackhole", "refuse")
_PREAMBLE = 24
_CHUNK = 64 * 1024


@dataclass
class _Link:
    mode: str = "up"
    delay: float = 0.0
    open: asyncio.Event = field(default_factory=asyncio.Event)
    conns: set = field(default_factory=set)   # of (reader-writer pairs' writers)
    dirty: bool = False                       # held bytes back while blackholed
    connections: int = 0                      # accepted over the link's life


class LinkProxy:
    """``LinkProxy({node_id: real_port})``: ``ports[node_id]`` is where peers
    must connect to reach ``node_id``."""

    def __init__(self, targets: dict[int, int], host: str = "127.0.0.1") -> None:
        self.host = host
        self.targets = dict(targets)
        self.ports = {i: free_port() for i in self.targets}
        self._loop = asyncio.new_event_loop()
        self._links: dict[tuple[int, int], _Link] = {}
        self._servers: list[asyncio.base_events.Server] = []
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="jepsen-proxy", daemon=True)
        self._closed = False

    # ---------------------------------------------------------- lifecycle

    def start(self) -> LinkProxy:
        self._thread.start()
        self._call(self._start())
        return self

    async def _start(self) -> None:
        for src in self.targets:
            for dst in self.targets:
                if src != dst:
                    link = _Link()
                    link.open.set()
                    self._links[(src, dst)] = link
        for dst, port in self.ports.items():
            server = await asyncio.start_server(
                lambda r, w, dst=dst: self._accept(dst, r, w), self.host, port)
            self._servers.append(server)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            try:
                self._call(self._close(), timeout=10)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()

    async def _close(self) -> None:
        for server in self._servers:
            server.close()
        for link in self._links.values():
            link.open.set()
            self._reset(link)
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> LinkProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # ---------------------------------------------------------- rules

    def set_link(self, src: int, dst: int, mode: str, delay: float | None = None) -> None:
        self.set_links([(src, dst)], mode, delay)

    def set_links(self, links: Iterable[tuple[int, int]], mode: str,
                  delay: float | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self._call(self._set(list(links), mode, delay))

    async def _set(self, links: list[tuple[int, int]], mode: str, delay: float | None) -> None:
        for key in links:
            link = self._links[key]
            if delay is not None:
                link.delay = delay
            if mode == link.mode:
                continue
            old, link.mode = link.mode, mode
            if mode == "up":
                if old == "blackhole" and link.dirty:
                    self._reset(link)
                link.dirty = False
                link.open.set()
            elif mode == "blackhole":
                link.open.clear()
            else:
                link.open.set()
                self._reset(link)

    def partition(self, *groups: Iterable[int]) -> None:
        """Black-hole every link between different groups (both directions)."""
        where = {n: g for g, members in enumerate(groups) for n in members}
        cut = [(a, b) for (a, b) in self._links if where.get(a, -1) != where.get(b, -2)]
        self.heal()
        self.set_links(cut, "blackhole")

    def isolate(self, node: int, mode: str = "blackhole") -> None:
        self.set_links([k for k in self._links if node in k], mode)

    def heal(self) -> None:
        """Every link up, no delay."""
        self.set_links(list(self._links), "up", delay=0.0)

    def modes(self) -> dict[tuple[int, int], str]:
        return {k: (v.mode if not v.delay else f"{v.mode}+{v.delay:.3f}s")
                for k, v in self._links.items()}

    def connections(self) -> dict[tuple[int, int], int]:
        """Connections accepted per link so far (a self-test: links are used)."""
        return {k: v.connections for k, v in self._links.items()}

    # ---------------------------------------------------------- forwarding

    @staticmethod
    def _reset(link: _Link) -> None:
        for writer in list(link.conns):
            transport = writer.transport
            if transport is not None and not transport.is_closing():
                transport.abort()
        link.conns.clear()

    async def _accept(self, dst: int, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        upstream = link = None
        try:
            preamble = await reader.readexactly(_PREAMBLE)
            _, src, _ = struct.unpack("<QQQ", preamble)
            link = self._links.get((src, dst))
            if link is None or link.mode == "refuse":
                writer.transport.abort()
                return
            link.connections += 1
            up_reader, upstream = await asyncio.open_connection(self.host, self.targets[dst])
            link.conns.update((writer, upstream))
            await self._forward(link, preamble, upstream)
            await asyncio.gather(self._pump(link, reader, upstream),
                                 self._pump(link, up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    w.transport.abort()
                    if link is not None:
                        link.conns.discard(w)

    async def _pump(self, link: _Link, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                await self._forward(link, data, writer)
        finally:
            writer.transport.abort()   # one side gone: so is the other

    async def _forward(self, link: _Link, data: bytes, writer: asyncio.StreamWriter) -> None:
        if not link.open.is_set():
            link.dirty = True
            await link.open.wait()
            if writer.transport.is_closing():
                raise ConnectionResetError("link reset")
        if link.delay:
            await asyncio.sleep(link.delay)
        if writer.transport.is_closing():
            raise ConnectionResetError("link reset")
        writer.write(data)
        await writer.drain()
