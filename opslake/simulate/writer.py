"""Landing writes of the simulator: deterministic batch ids and received-at times."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from opslake.lake.landing import LandingZone
from opslake.simulate.config import HOUR_S, SimulationConfig
from opslake.simulate.truth import SOURCES, GroundTruth

CONNECTOR = "opslake-simulator"
GROUND_TRUTH = ("simulator", "ground_truth.json")
#: File extension (landing ``fmt``) per source, as in docs/sources.md.
FORMATS = {
    "prometheus": "prom",
    "alertmanager": "json",
    "itsm": "csv",
    "cmdb": "json",
    "syslog": "log",
    "probes": "json",
}


class SimulatorLanding:
    """Writes batches through the real landing writer; every batch is received at its end."""

    def __init__(self, landing: LandingZone, cfg: SimulationConfig) -> None:
        self.landing, self.cfg = landing, cfg
        self.batches = dict.fromkeys(SOURCES, 0)

    def _write(
        self, source: str, batch_id: str, day: int, received: int, data: bytes | Iterable[bytes]
    ) -> None:
        self.landing.write(
            source,
            data,
            fmt=FORMATS[source],
            batch_id=batch_id,
            received_at=datetime.fromtimestamp(received, UTC),
            dt=self.cfg.day(day),
            connector=CONNECTOR,
        )
        self.batches[source] += 1

    def hourly(self, day: int, hour: int, chunks: Iterable[bytes]) -> None:
        """One hour of Prometheus scrapes, e.g. batch ``prom-2026-11-20T03``."""
        self._write(
            "prometheus",
            f"prom-{self.cfg.day(day)}T{hour:02d}",
            day,
            self.cfg.day_start(day) + (hour + 1) * HOUR_S,
            chunks,
        )

    def daily(self, source: str, day: int, data: bytes) -> None:
        """One day of ``source``, e.g. batch ``syslog-2026-11-20``."""
        self._write(source, f"{source}-{self.cfg.day(day)}", day, self.cfg.day_start(day + 1), data)

    def ground_truth(self, truth: GroundTruth) -> str:
        """Store the ground truth next to the lake's layers; returns its path."""
        path = self.landing.lake.path(*GROUND_TRUTH)
        self.landing.lake.put_atomic(path, [truth.to_json()])
        return path
