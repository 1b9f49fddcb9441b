"""uvicorn's HTTP/1.1 protocol with TCP_NODELAY on every connection.

With ``--workers N`` uvicorn's supervisor hands the listening socket to the workers
without TCP_NODELAY (uvicorn issue 3149), so a keep-alive response waits for
Nagle's algorithm: about 40 ms on every call after the first.  The benchmarks
(`til-cds bench`) measured /healthz at 44 ms instead of 0.5 ms; this protocol class
sets the option on each accepted connection.
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["NoDelayH11Protocol"]


class NoDelayH11Protocol(H11Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        connection = transport.get_extra_info("socket")
        if connection is not None and connection.family in (socket.AF_INET, socket.AF_INET6):
            try:
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass  # not a TCP socket after all: nothing to tune
        super().connection_made(transport)  # type: ignore[arg-type]
