"""A TLS connection that one thread may read while others write.

Forwarding (forwarding.py) reads replies on one thread and sends requests from
the callers' threads, on one connection. An ``ssl.SSLSocket`` cannot be used
like that: OpenSSL forbids using one SSL object from two threads at once, and
CPython releases the GIL inside SSL_read/SSL_write. So the TLS state machine is
an ``SSLObject`` over memory buffers, touched only under ``lock``; the socket
itself carries the encrypted bytes. Sending holds ``send_lock`` across
encrypting and sending so records leave in the order they were made, and never
holds ``lock`` while it waits on the socket (a reader must always be able to
take in what the peer sends, or two peers writing large frames would stall).
"""

from __future__ import annotations

import socket
import ssl
import threading

_CHUNK = 256 * 1024


class TLSChannel:
    """``recv``/``sendall``/``close`` as a socket has, over TLS. The handshake
    runs in the constructor (with the socket's timeout), before any thread
    shares it."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, *,
                 server_side: bool) -> None:
        self.sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side)
        self.lock = threading.Lock()
        self.send_lock = threading.Lock()
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._feed()
        self._flush()

    def _feed(self) -> bool:
        data = self.sock.recv(_CHUNK)
        if not data:
            return False
        with self.lock:
            self._incoming.write(data)
        return True

    def _flush(self) -> None:
        """Send what the TLS object produced (with send_lock held, or alone)."""
        with self.lock:
            data = self._outgoing.read()
        if data:
            self.sock.sendall(data)

    def sendall(self, data: bytes) -> None:
        with self.send_lock:
            view = memoryview(data)
            while view:
                with self.lock:
                    n = self._tls.write(view[:_CHUNK])
                view = view[n:]
                self._flush()

    def recv(self, n: int) -> bytes:
        """Up to ``n`` bytes; b"" once the peer closed."""
        while True:
            with self.lock:
                try:
                    return self._tls.read(n)
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLZeroReturnError:
                    return b""
                produced = self._outgoing.pending  # e.g. an answer to a key update
            if produced and self.send_lock.acquire(blocking=False):
                try:
                    self._flush()
                finally:
                    self.send_lock.release()
            if not self._feed():
                return b""

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)

    def close(self) -> None:
        self.sock.close()
