"""The syslog receiver lands UDP and TCP messages (both TCP framings) in durable batches."""

from __future__ import annotations

import asyncio
import socket

from opslake.ingest.listeners.syslog import SyslogReceiver, serve
from opslake.ingest.parsers import syslog as parser
from opslake.lake.landing import LandingZone


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_udp_and_tcp_messages_are_landed_and_parse(landing: LandingZone) -> None:
    udp_port, tcp_port = _free_port(socket.SOCK_DGRAM), _free_port(socket.SOCK_STREAM)

    async def scenario() -> SyslogReceiver:
        receiver = SyslogReceiver(landing, flush_seconds=0.2)
        close = await serve(receiver, "127.0.0.1", udp_port, tcp_port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(
                b"<34>1 2026-03-02T10:00:00Z web-01 sshd 42 - - Failed password",
                ("127.0.0.1", udp_port),
            )
            udp.sendto(b"<13>Mar  2 10:00:01 web-02 cron[7]: job done", ("127.0.0.1", udp_port))
        _, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
        framed = b"<14>1 2026-03-02T10:00:02Z db-01 mysqld - - - counted\nframe"
        writer.write(b"<14>1 2026-03-02T10:00:03Z db-01 mysqld - - - newline framed\n")
        writer.write(str(len(framed)).encode() + b" " + framed)
        await writer.drain()
        writer.close()
        await asyncio.sleep(0.6)
        await close()
        return receiver

    receiver = asyncio.run(scenario())
    lines = []
    for batch in receiver.landed:
        assert batch.connector == "syslog-receiver/1.0"
        result = parser.parse(landing.read(batch), batch)
        assert not result.rejects
        lines += result.table.column("message").to_pylist()
    assert sorted(lines) == sorted(
        ["Failed password", "job done", "newline framed", "counted frame"]
    )
    assert sum(len(landing.batches("syslog", d)) for d in landing.days("syslog")) == len(
        receiver.landed
    )
