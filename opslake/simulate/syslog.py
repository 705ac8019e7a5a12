"""Syslog (RFC 5424) from servers, platforms, network and security devices, one batch a day.

The hostname is the CI's CMDB ``name``, never its entity id, so the conformer has to map it
through the CMDB. Background lines are mostly informational; during a fault the reached CIs
log errors (the cause logs critical lines). A few lines come from hosts the CMDB does not
know, and a few lines carry no PRI at all (they must be quarantined).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opslake.simulate.catalog import UNKNOWN_HOSTS
from opslake.simulate.cmdb import CmdbHistory
from opslake.simulate.config import DAY_S, SimulationConfig, iso_ms, iso_ms_many, rng_for
from opslake.simulate.estate import Estate
from opslake.simulate.faults import Impact
from opslake.simulate.truth import Tally

# Facilities: 0 kern, 3 daemon, 4 auth, 9 cron, 10 authpriv, 16-23 local0-7.
KERN, DAEMON, AUTH, CRON, AUTHPRIV, LOCAL0, LOCAL4, LOCAL7 = 0, 3, 4, 9, 10, 16, 20, 23


@dataclass(frozen=True)
class Program:
    """A program that logs: its APP-NAME, facility and messages."""

    app: str
    facility: int
    background: tuple[tuple[int, str], ...]  # (severity, template)
    failure: tuple[str, ...]


_LINUX = (
    Program(
        "kernel",
        KERN,
        (
            (6, "NET: Registered PF_PACKET protocol family"),
            (
                4,
                (
                    "perf: interrupt took too long ({a} > {b}), lowering "
                    "kernel.perf_event_max_sample_rate to {c}"
                ),
            ),
            (6, "EXT4-fs (dm-0): re-mounted. Opts: (null)"),
        ),
        (
            "NMI watchdog: BUG: soft lockup - CPU#{a} stuck for {b}s!",
            "blk_update_request: I/O error, dev sdb, sector {c}",
        ),
    ),
    Program(
        "sshd",
        AUTHPRIV,
        (
            (6, "Accepted publickey for ops from {ip} port {port} ssh2"),
            (6, "Disconnected from user ops {ip} port {port}"),
            (5, ("Failed password for invalid user admin from {ip} port {port} ssh2")),
        ),
        ("fatal: Timeout before authentication for {ip} port {port}",),
    ),
    Program(
        "systemd",
        DAEMON,
        (
            (6, "Started Session {a} of user ops."),
            (6, "logrotate.service: Succeeded."),
            (5, "Starting Cleanup of Temporary Directories..."),
        ),
        ("node-exporter.service: Main process exited, code=killed, status=9/KILL",),
    ),
    Program(
        "crond",
        CRON,
        (
            (6, "(root) CMD (/usr/local/bin/backup.sh)"),
            (6, "(root) CMD (run-parts /etc/cron.hourly)"),
        ),
        (("(root) ERROR (failed to open PAM security session: Resource temporarily unavailable)"),),
    ),
)
_NGINX = Program(
    "nginx",
    LOCAL7,
    ((6, "GET /healthz HTTP/1.1 200 {a}"), (4, "upstream response time {b}ms exceeds 1000ms")),
    (
        (
            "upstream timed out (110: Connection timed out) while reading response "
            "header from upstream"
        ),
        "connect() failed (111: Connection refused) while connecting to upstream",
    ),
)
_DB = {
    "Dameng": "dmserver",
    "Kingbase": "kingbase",
    "Oracle": "mysqld",
    "OceanBase": "observer",
}
_DB_PROGRAM = (
    (
        (6, "checkpoint complete: wrote {a} buffers"),
        (4, "slow query: {b} ms, rows examined {c}"),
        (6, "connection authorized: user=app database=biz"),
    ),
    (
        "Too many connections",
        "lock wait timeout exceeded; try restarting transaction",
        "could not receive data from client: Connection reset by peer",
    ),
)
_PLATFORM = (
    (
        (6, "request served in {b} ms"),
        (6, "heartbeat ok, {a} workers idle"),
        (4, "GC pause {b} ms"),
    ),
    ("thread pool exhausted: {a} tasks rejected", "backend unavailable: read timeout"),
)
_NETWORK = (
    Program(
        "IFNET",
        LOCAL7,
        (
            (5, "Interface 10GE1/0/{a} changed state to up"),
            (6, "LLDP neighbor added on 10GE1/0/{a}"),
        ),
        (
            "Interface 10GE1/0/{a} CRC errors exceeded threshold ({c})",
            "Interface 10GE1/0/{a} changed state to down",
        ),
    ),
)
_SECURITY = {
    "firewall": Program(
        "firewalld",
        LOCAL4,
        (
            (6, "session created src={ip} dst=10.60.0.{a} dport=443 action=permit"),
            (5, "policy deny src={ip} dst=10.60.0.{a} dport={port}"),
        ),
        ("session table usage {a}% exceeds threshold",),
    ),
    "waf": Program(
        "waf",
        LOCAL4,
        (
            (5, "blocked SQL injection from {ip} uri=/api/v1/query"),
            (6, "rule set updated to version {c}"),
        ),
        ("detection engine overloaded, bypass mode enabled",),
    ),
    "ids": Program(
        "suricata",
        LOCAL4,
        ((5, "ET SCAN Nmap Scripting Engine from {ip}"), (6, "stats: {c} packets inspected")),
        ("packet drop rate {a}% on capture interface",),
    ),
    "bastion": Program(
        "jumpserver",
        AUTH,
        ((6, "user ops opened session to {ip}"), (5, "login failed for user audit from {ip}")),
        ("session recording storage unavailable",),
    ),
}
#: Lines per CI per day, by type.
RATE = {
    "host": 30,
    "vm": 20,
    "db": 25,
    "middleware": 15,
    "queue": 15,
    "identity": 20,
    "switch": 10,
    "firewall": 40,
    "waf": 30,
    "ids": 30,
    "bastion": 20,
    "storage": 8,
}


def programs(estate: Estate, entity_id: str) -> tuple[Program, ...]:
    """What logs on a CI of this type (and vendor)."""
    e = estate.entities[entity_id]
    if e.type in ("host", "vm"):
        return (*_LINUX, _NGINX) if e.type == "vm" else _LINUX
    if e.type == "db":
        return (Program(_DB.get(e.vendor, "mysqld"), LOCAL0, *_DB_PROGRAM),)
    if e.type in ("middleware", "queue", "identity"):
        name = {"middleware": "tongweb", "queue": "rocketmq", "identity": "iam"}[e.type]
        return (Program(name, LOCAL0, *_PLATFORM),)
    if e.type == "storage":
        return (
            Program(
                "oceanstor",
                LOCAL0,
                ((6, "pool {a} scrub finished"), (4, "disk {a} predicted failure count {c}")),
                ("I/O latency of pool {a} exceeds 100 ms",),
            ),
        )
    if e.type == "switch":
        return _NETWORK
    return (_SECURITY[e.type],) if e.type in _SECURITY else ()


class SyslogWriter:
    """Builds one day of syslog lines for the whole estate."""

    def __init__(
        self, cfg: SimulationConfig, estate: Estate, hist: CmdbHistory, impacts: list[Impact]
    ) -> None:
        self.cfg, self.estate, self.hist = cfg, estate, hist
        self.impacts = [
            i
            for i in impacts
            if i.entity_id in estate.entities and estate.entities[i.entity_id].type in RATE
        ]
        self.loggers = [e for t in RATE for e in estate.ids(t) if estate.entities[e].monitored]

    def day(self, day: int, logs: Tally, unmapped: Tally, malformed: Tally) -> bytes:
        """The day's batch, sorted by time; counts well-formed, unmapped and broken lines."""
        rng = rng_for(self.cfg.seed, "syslog", day)
        day0_ms = self.cfg.day_start(day) * 1000
        lines: list[tuple[int, str]] = []
        for eid in self.loggers:
            e = self.estate.entities[eid]
            progs = programs(self.estate, eid)
            n = int(rng.poisson(RATE[e.type]))
            times = np.sort(rng.integers(0, DAY_S * 1000, n)) + day0_ms
            pick = rng.integers(0, 1 << 30, (n, 6))
            stamps = iso_ms_many(times)
            for ts, stamp, r in zip(times.tolist(), stamps, pick.tolist(), strict=True):
                if not self.hist.alive(eid, ts / 1000):
                    continue
                prog = progs[r[0] % len(progs)]
                severity, template = prog.background[r[1] % len(prog.background)]
                lines.append((ts, self._line(stamp, e.name, prog, severity, template, r)))
                if eid in self.hist.unknown:
                    unmapped.add(self.cfg.day(day))
        day_end = self.cfg.day_start(day + 1)
        for imp in self.impacts:
            lo, hi = max(imp.start, self.cfg.day_start(day)), min(imp.end, day_end)
            if lo >= hi:
                continue
            e = self.estate.entities[imp.entity_id]
            progs = programs(self.estate, imp.entity_id)
            ts = lo * 1000 + int(rng.integers(0, 60_000))
            while ts < hi * 1000:
                r = rng.integers(0, 1 << 30, 6).tolist()
                prog = progs[r[0] % len(progs)]
                template = prog.failure[r[1] % len(prog.failure)]
                lines.append(
                    (
                        ts,
                        self._line(iso_ms(ts), e.name, prog, 2 if imp.hop == 0 else 3, template, r),
                    )
                )
                if imp.entity_id in self.hist.unknown:
                    unmapped.add(self.cfg.day(day))
                ts += int(rng.integers(60_000, 240_001))
        ymd = self.cfg.day(day)
        for k in range(3 + int(rng.integers(0, 4))):
            ts = day0_ms + int(rng.integers(0, DAY_S * 1000))
            r = rng.integers(0, 1 << 30, 6).tolist()
            host = UNKNOWN_HOSTS[k % len(UNKNOWN_HOSTS)]
            lines.append(
                (ts, self._line(iso_ms(ts), host, _LINUX[1], 6, _LINUX[1].background[0][1], r))
            )
            unmapped.add(ymd)
        logs.add(ymd, len(lines))
        # Relays that strip the PRI: neither RFC 5424 nor RFC 3164, so they are quarantined.
        for k in range(2):
            ts = day0_ms + int(rng.integers(0, DAY_S * 1000))
            eid = self.loggers[int(rng.integers(len(self.loggers)))]
            name = self.estate.entities[eid].name
            text = (
                f"1 {iso_ms(ts)} {name} kernel - - - EXT4-fs warning: mounting fs with errors"
                if k == 0
                else f"{iso_ms(ts)} {name} sshd: session closed"
            )
            lines.append((ts, text))
            malformed.add(ymd)
        lines.sort(key=lambda x: x[0])
        return ("\n".join(text for _, text in lines) + "\n").encode()

    def _line(
        self, stamp: str, host: str, prog: Program, severity: int, template: str, r: list[int]
    ) -> str:
        """One RFC 5424 line; ``r`` supplies the random parts of the message."""
        msg = template.format(
            a=r[2] % 48,
            b=100 + r[3] % 4900,
            c=r[4] % 100_000,
            ip=f"10.{r[5] % 200}.{r[2] % 250}.{r[3] % 250 + 1}",
            port=1024 + r[4] % 60_000,
        )
        procid = "-" if prog.facility in (LOCAL4, LOCAL7) else str(1000 + r[5] % 60_000)
        sd = f'[origin software="{prog.app}"]' if r[5] % 5 == 0 else "-"
        pri = prog.facility * 8 + severity
        return f"<{pri}>1 {stamp} {host} {prog.app} {procid} - {sd} {msg}"
