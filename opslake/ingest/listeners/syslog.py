"""Syslog receiver: RFC 5424 / RFC 3164 over UDP and TCP, landed in small durable batches.

UDP carries no acknowledgement, so durability is bounded by the flush interval: lines are
buffered for at most ``flush_seconds`` (or ``flush_lines`` lines) and then landed as one
batch through the landing writer. TCP accepts both framings of RFC 6587: newline-delimited
and octet-counting (``<len> <msg>``). Syslog over TLS (RFC 5425) is TCP inside TLS 1.2+ on
its own port, and accepts octet-counting only, as that RFC requires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from opslake.lake.landing import LandedBatch, LandingZone

SOURCE = "syslog"
CONNECTOR = "syslog-receiver/1.0"
#: Longest line kept whole (RFC 5424 receivers must accept 480 octets, should 2048).
MAX_LINE = 64 * 1024

log = logging.getLogger(__name__)


@dataclass
class SyslogReceiver:
    """Buffers received lines and lands them as ``syslog`` batches."""

    landing: LandingZone
    flush_lines: int = 5000
    flush_seconds: float = 1.0
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _lines: list[bytes] = field(default_factory=list, init=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    landed: list[LandedBatch] = field(default_factory=list, init=False)

    async def add(self, line: bytes) -> None:
        """Queue one syslog message (framing already removed)."""
        line = line.rstrip(b"\r\n").replace(b"\n", b" ")[:MAX_LINE]
        if not line:
            return
        self._lines.append(line)
        if len(self._lines) >= self.flush_lines:
            await self.flush()

    async def flush(self) -> LandedBatch | None:
        """Land what is buffered as one batch (off the event loop)."""
        async with self._lock:
            if not self._lines:
                return None
            body = b"\n".join(self._lines) + b"\n"
            self._lines = []
            received = self.clock()
            batch = await asyncio.to_thread(
                self.landing.write,
                SOURCE,
                body,
                fmt="log",
                received_at=received,
                connector=CONNECTOR,
            )
            self.landed.append(batch)
            return batch

    async def run_flusher(self) -> None:
        """Flush every ``flush_seconds`` until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(self.flush_seconds)
                await self.flush()
        finally:
            await asyncio.shield(self.flush())


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, receiver: SyslogReceiver) -> None:
        self.receiver = receiver
        self.tasks: set[asyncio.Task] = set()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        # One datagram is one message (RFC 5426).
        task = asyncio.ensure_future(self.receiver.add(data))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


async def _read_tcp(
    receiver: SyslogReceiver,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    octet_counted_only: bool = False,
) -> None:
    try:
        while not reader.at_eof():
            first = await reader.read(1)
            if not first:
                break
            if octet_counted_only and not first.isdigit():
                log.warning(
                    "syslog over TLS from %s is not octet-counted (RFC 5425); closed "
                    "the connection: configure the sender for octet-counted framing "
                    '(rsyslog: TCP_Framing="octet-counted")',
                    writer.get_extra_info("peername"),
                )
                break
            if first.isdigit():
                # Octet counting: "<length> <message>".
                digits = first + await reader.readuntil(b" ")
                length = int(digits[:-1])
                await receiver.add(await reader.readexactly(min(length, MAX_LINE)))
                if length > MAX_LINE:
                    await reader.readexactly(length - MAX_LINE)
            else:
                await receiver.add(first + await reader.readline())
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, ConnectionError):
        pass  # a broken sender: what arrived whole is kept, the rest is the sender's to resend
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def serve(
    receiver: SyslogReceiver,
    host: str,
    udp_port: int | None,
    tcp_port: int | None,
    tls_port: int | None = None,
    tls: ssl.SSLContext | None = None,
) -> Callable[[], asyncio.Future]:
    """Start the listeners on the ports given and the flusher; returns an async ``close``.

    ``tls_port`` receives syslog over TLS (RFC 5425) with the server context ``tls``
    (``opslake.security.tls.server_context``).
    """
    if (tls_port is None) != (tls is None):
        raise ValueError("syslog over TLS needs both a port and a server context")
    loop = asyncio.get_running_loop()
    transports: list[asyncio.BaseTransport] = []
    servers: list[asyncio.Server] = []
    if udp_port is not None:
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(receiver), local_addr=(host, udp_port)
        )
        transports.append(transport)
    if tcp_port is not None:
        servers.append(
            await asyncio.start_server(
                lambda r, w: _read_tcp(receiver, r, w), host, tcp_port, limit=MAX_LINE + 16
            )
        )
    if tls_port is not None:
        servers.append(
            await asyncio.start_server(
                lambda r, w: _read_tcp(receiver, r, w, octet_counted_only=True),
                host,
                tls_port,
                limit=MAX_LINE + 16,
                ssl=tls,
            )
        )
    flusher = asyncio.ensure_future(receiver.run_flusher())

    async def close() -> None:
        for transport in transports:
            transport.close()
        for server in servers:
            server.close()
            await server.wait_closed()
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher

    return close
