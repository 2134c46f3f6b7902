"""Mutual TLS for the asyncio engine's raft connections.

``TLS(cert, key, ca)``: this node's certificate chain and key, and the CA that
signs every member's certificate. Every raft connection, in both directions,
then requires a peer certificate signed by that CA; a peer with none, with
another CA's, or speaking plaintext is refused and logged. Peers are addressed
by IP, so certificates are checked against the CA, not against host names: the
CA is the membership (issue a certificate only to a cluster's members).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Union

from .errors import InvalidConfigError

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class TLS:
    cert: PathLike
    key: PathLike
    ca: PathLike

    def _context(self, purpose: int) -> ssl.SSLContext:
        ctx = ssl.SSLContext(purpose)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(os.fspath(self.cert), os.fspath(self.key))
            ctx.load_verify_locations(os.fspath(self.ca))
        except (OSError, ssl.SSLError) as exc:
            raise InvalidConfigError(f"TLS: cannot load cert {self.cert}, key {self.key} or "
                                     f"CA {self.ca}: {exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def server_context(self) -> ssl.SSLContext:
        return self._context(ssl.PROTOCOL_TLS_SERVER)

    def client_context(self) -> ssl.SSLContext:
        ctx = self._context(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False  # see the module docstring
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx
