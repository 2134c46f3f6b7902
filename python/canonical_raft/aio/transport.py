"""TcpTransport: libraft's raft_uv wire protocol over asyncio streams, so
asyncio-engine nodes and uv-engine nodes form one cluster.

The protocol (ENGINE2_NOTES.md §3-4): a connector sends one handshake (u64 1,
u64 its id, u64 L, then its address NUL-padded to L bytes), then frames (a
16-byte preamble: type, 0, version, ..., u64 header length; the header; the
payload). Each node sends on connections it opened and reads on connections it
accepted. The core encodes and decodes the frames; this module only moves
bytes, reconnects with back-off, and refuses what is not the protocol (logged,
connection closed). With ``tls`` every connection, both ways, is mutual TLS.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct
from typing import TYPE_CHECKING, Callable, Dict, Optional

from .. import _core
from ..config import parse_address

if TYPE_CHECKING:
    from ..tls import TLS

log = logging.getLogger("canonical_raft.transport")
_LOG_BURST, _LOG_PERIOD = 10, 60.0  # refusals logged per period; the rest are counted

_HANDSHAKE = struct.Struct("<QQQ")
_PREAMBLE = struct.Struct("<BBBBIQ")
_MAX_ADDRESS = 1024
_MAX_HEADER = 8 * 1024 * 1024   # as raft_uv (fix_libraft.sh: message-length)
_QUEUE_LIMIT = 1024             # frames queued for a peer that is unreachable
_RETRY_MIN = 0.05

# (server_id, address, type, version, header, payload) -> 0 or a RAFT_* code
OnFrame = Callable[[int, str, int, int, bytes, bytes], int]


def handshake(node_id: int, address: str) -> bytes:
    raw = address.encode() + b"\0"
    padded = raw + b"\0" * (-len(raw) % 8)
    return _HANDSHAKE.pack(1, node_id, len(padded)) + padded


class _Peer:
    """Outgoing frames to one server, on a connection of ours."""

    def __init__(self, transport: TcpTransport, server_id: int, address: str) -> None:
        self.transport = transport
        self.server_id = server_id
        self.address = address
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.task = asyncio.ensure_future(self._run())

    def send(self, frame: bytes) -> None:
        if self.queue.qsize() >= _QUEUE_LIMIT:
            # Unreachable for long: drop the oldest; raft resends what matters.
            self.queue.get_nowait()
        self.queue.put_nowait(frame)

    async def _run(self) -> None:
        t = self.transport
        delay = _RETRY_MIN
        while True:
            writer = None
            try:
                host, port = parse_address(self.address)
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=t.client_ssl, server_hostname="" if t.client_ssl else None)
                writer.write(handshake(t.node_id, t.address))
                delay = _RETRY_MIN
                while True:
                    frame = await self.queue.get()
                    writer.write(frame)
                    # Coalesce what is queued already, then wait for the kernel.
                    while not self.queue.empty():
                        writer.write(self.queue.get_nowait())
                    await writer.drain()
            except asyncio.CancelledError:
                if writer is not None:
                    writer.close()
                raise
            except (OSError, ssl.SSLError, ValueError) as exc:
                log.debug("node %d: connection to %d at %s: %s", t.node_id, self.server_id,
                          self.address, exc)
                if writer is not None:
                    writer.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, t.retry_delay)


class TcpTransport:
    def __init__(self, node_id: int, address: str, on_frame: OnFrame, *,
                 bind_address: Optional[str] = None, tls: Optional[TLS] = None,
                 retry_delay: float = 1.0, max_message: int = 1 << 31) -> None:
        self.node_id = node_id
        self.address = address
        self.bind_address = bind_address or address
        self.on_frame = on_frame
        self.max_message = max_message
        self.retry_delay = max(retry_delay, _RETRY_MIN)  # the longest wait between connects
        self.server_ssl = tls.server_context() if tls is not None else None
        self.client_ssl = tls.client_context() if tls is not None else None
        self._server: Optional[asyncio.base_events.Server] = None
        self._peers: Dict[int, _Peer] = {}
        self._log_window, self._log_count, self._log_dropped = -_LOG_PERIOD, 0, 0
        self._inbound: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        host, port = parse_address(self.bind_address)
        # TLS is started by _serve itself, so a refused handshake is logged here.
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)

    def send(self, server_id: int, address: str, frame: bytes) -> None:
        peer = self._peers.get(server_id)
        if peer is not None and peer.address != address:
            peer.task.cancel()  # the configuration moved it: reconnect
            peer = None
        if peer is None:
            peer = self._peers[server_id] = _Peer(self, server_id, address)
        peer.send(frame)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for peer in self._peers.values():
            peer.task.cancel()
        for writer in list(self._inbound):
            writer.close()
        tasks = [p.task for p in self._peers.values()]
        self._peers.clear()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _log_refusal(self, peer: object, exc: Exception) -> None:
        """A flood of bad connections must not flood the log: the first few of a
        minute are logged, then one line says how many more were refused."""
        now = asyncio.get_running_loop().time()
        if now - self._log_window >= _LOG_PERIOD:
            if self._log_dropped:
                log.warning("node %d: refused %d more connections in the last %.0f s (not "
                            "logged one by one)", self.node_id, self._log_dropped, _LOG_PERIOD)
            self._log_window, self._log_count, self._log_dropped = now, 0, 0
        self._log_count += 1
        if self._log_count <= _LOG_BURST:
            log.warning("node %d: refused a connection from %s: %s", self.node_id, peer, exc)
        else:
            self._log_dropped += 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._inbound.add(writer)
        peer = writer.get_extra_info("peername")
        try:
            if self.server_ssl is not None:
                try:
                    await writer.start_tls(self.server_ssl)
                except (ssl.SSLError, OSError) as exc:
                    raise _Refused(f"TLS handshake failed ({exc!r})") from None
            protocol, server_id, length = _HANDSHAKE.unpack(await reader.readexactly(24))
            if protocol != 1 or not 0 < length <= _MAX_ADDRESS:
                raise _Refused(f"bad handshake (protocol {protocol}, address length {length})")
            address = (await reader.readexactly(length)).split(b"\0", 1)[0].decode(
                "ascii", "replace")
            while True:
                type_, _, version, _, _, header_len = _PREAMBLE.unpack(
                    await reader.readexactly(16))
                if not 0 < header_len <= _MAX_HEADER:
                    raise _Refused(f"header length {header_len}")
                header = await reader.readexactly(header_len)
                payload_len = _core.payload_length(type_, version, header)
                if payload_len < 0:
                    raise _Refused(f"malformed message of type {type_} "
                                   f"({_core.strerror(-payload_len)})")
                if payload_len > self.max_message:
                    raise _Refused(f"payload of {payload_len} bytes")
                payload = await reader.readexactly(payload_len) if payload_len else b""
                rc = self.on_frame(server_id, address, type_, version, header, payload)
                if rc != 0:
                    raise _Refused(f"message of type {type_}: {_core.strerror(rc)}")
        except _Refused as exc:
            self._log_refusal(peer, exc)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            pass  # the peer went away (or failed the TLS handshake: logged by ssl)
        finally:
            self._inbound.discard(writer)
            writer.close()


class _Refused(Exception):
    pass
