"""What to simulate, the simulation clock, and seeded random streams."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np

from opslake.errors import ConfigError

DAY_S = 86_400
HOUR_S = 3_600
#: Asia/Shanghai has no daylight saving, so local time is a fixed offset from UTC.
LOCAL_OFFSET_S = 8 * HOUR_S
#: Smallest estate that still holds at least one object of every type.
MIN_ENTITIES = 30


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate: seed, estate size, number of days from ``start``, scrape step."""

    seed: int = 7
    entities: int = 500
    days: int = 3
    start: date = date(2026, 11, 20)
    step_seconds: int = 60

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ConfigError(f"seed {self.seed} is negative; use 0 or a positive integer")
        if self.entities < MIN_ENTITIES:
            raise ConfigError(f"entities={self.entities} is too small; use at least "
                              f"{MIN_ENTITIES} so every type of object exists")
        if self.days < 1:
            raise ConfigError(f"days={self.days}; simulate at least one day")
        if not 10 <= self.step_seconds <= HOUR_S or HOUR_S % self.step_seconds:
            raise ConfigError(f"step_seconds={self.step_seconds} must divide an hour evenly "
                              "and be between 10 and 3600 (e.g. 15, 30, 60)")

    @property
    def start_ts(self) -> int:
        """Epoch seconds of the first simulated instant (``start`` 00:00 UTC)."""
        return int(datetime(self.start.year, self.start.month, self.start.day,
                            tzinfo=UTC).timestamp())

    @property
    def end_ts(self) -> int:
        """Epoch seconds just after the last simulated instant."""
        return self.start_ts + self.days * DAY_S

    def day(self, index: int) -> str:
        """ISO date of day ``index`` (0-based), the ``dt`` partition of its batches."""
        return (self.start + timedelta(days=index)).isoformat()

    def day_start(self, index: int) -> int:
        """Epoch seconds of 00:00 UTC of day ``index``."""
        return self.start_ts + index * DAY_S

    def day_of(self, ts: float) -> int:
        """Index of the day that holds epoch second ``ts``."""
        return int((ts - self.start_ts) // DAY_S)

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form for the ground truth."""
        return {"seed": self.seed, "entities": self.entities, "days": self.days,
                "start": self.start.isoformat(), "step_seconds": self.step_seconds}


def rng_for(seed: int, *keys: str | int) -> np.random.Generator:
    """An independent random stream per (seed, component, ...) so components don't interact.

    Adding draws to one component must not shift the numbers another one sees, or a small
    change would rewrite every landed file.
    """
    words = [seed] + [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return np.random.default_rng(words)


def iso(ts: float) -> str:
    """Epoch seconds as ISO 8601 UTC with a ``Z`` (whole seconds)."""
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_ms(ts_ms: int) -> str:
    """Epoch milliseconds as RFC 3339 UTC with milliseconds."""
    whole, ms = divmod(int(ts_ms), 1000)
    return datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms:03d}Z"


def iso_ms_many(ts_ms: np.ndarray) -> list[str]:
    """Vectorised :func:`iso_ms` for an array of epoch milliseconds."""
    text = np.datetime_as_string(np.asarray(ts_ms, dtype=np.int64).astype("datetime64[ms]"),
                                 unit="ms")
    return [t + "Z" for t in text.tolist()]
