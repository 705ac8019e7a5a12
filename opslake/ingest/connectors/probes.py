"""Synthetic probes: HTTP and TCP checks, landed as one JSON object per check.

Lines follow the ``probes`` format of docs/sources.md (``ts``, ``probe_id``, ``target``,
``entity_id``, ``kind``, ``ok``, ``latency_ms``, ``status_code``, ``error``) and are parsed
by ``opslake.ingest.parsers.probes``. A failed check is a result (``ok: false`` with the
error), not an exception: the probe exists to record that the target is down.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx

from opslake.ingest.connectors.base import Connector, aware
from opslake.lake.landing import LandedBatch, LandingZone


class Probe(Connector):
    """One check; ``collect`` runs it once and lands its result as a one-line batch."""

    version = "1"
    source = "probes"
    fmt = "json"
    kind: str

    def __init__(self, probe_id: str, entity_id: str | None, timeout: float = 5.0) -> None:
        self.probe_id, self.entity_id, self.timeout = probe_id, entity_id, timeout

    @property
    def target(self) -> str:
        raise NotImplementedError

    def _check(self) -> tuple[bool, int | None, str | None]:
        """(ok, status_code, error) of one check."""
        raise NotImplementedError

    def check(self, now: datetime) -> dict[str, Any]:
        """Run the check once; the result as a probes-format record (``ts`` = ``now``)."""
        started = time.perf_counter()
        ok, status, error = self._check()
        latency_ms = round((time.perf_counter() - started) * 1000, 3)
        return {
            "ts": aware(now).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "probe_id": self.probe_id,
            "target": self.target,
            "entity_id": self.entity_id,
            "kind": self.kind,
            "ok": ok,
            "latency_ms": latency_ms,
            "status_code": status,
            "error": error,
        }

    def collect(self, landing: LandingZone, now: datetime) -> list[LandedBatch]:
        return [self.land(landing, _json_lines([self.check(now)]), now)]


class HttpProbe(Probe):
    """GET ``url``; ok when it answers 2xx or 3xx within ``timeout`` seconds."""

    name = "probe-http"
    kind = "http"

    def __init__(
        self, url: str, probe_id: str, entity_id: str | None = None, timeout: float = 5.0
    ) -> None:
        super().__init__(probe_id, entity_id, timeout)
        self.url = url

    @property
    def target(self) -> str:
        return self.url

    def _check(self) -> tuple[bool, int | None, str | None]:
        try:
            response = httpx.get(self.url, timeout=self.timeout)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return False, None, error
        if response.status_code >= 400:
            error = f"HTTP {response.status_code} {response.reason_phrase}"
            return False, response.status_code, error
        return True, response.status_code, None


class TcpProbe(Probe):
    """Open a TCP connection to ``host:port``; ok when it connects within ``timeout``."""

    name = "probe-tcp"
    kind = "tcp"

    def __init__(
        self,
        host: str,
        port: int,
        probe_id: str,
        entity_id: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        super().__init__(probe_id, entity_id, timeout)
        self.host, self.port = host, port

    @property
    def target(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def _check(self) -> tuple[bool, int | None, str | None]:
        try:
            with socket.create_connection((self.host, self.port), timeout=self.timeout):
                return True, None, None
        except OSError as exc:
            return False, None, f"{type(exc).__name__}: {exc.strerror or exc}"


class ProbeSuite(Connector):
    """Several probes run in turn, landed as one batch (one line per check)."""

    name = "probe-suite"
    version = "1"
    source = "probes"
    fmt = "json"

    def __init__(self, probes: Sequence[Probe]) -> None:
        self.probes = list(probes)

    def collect(self, landing: LandingZone, now: datetime) -> list[LandedBatch]:
        if not self.probes:
            return []
        return [self.land(landing, _json_lines([p.check(now) for p in self.probes]), now)]


def _json_lines(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
