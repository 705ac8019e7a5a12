"""What to simulate, the simulation clock, and seeded random streams."""

from __future__ import annotations

import hashlib
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
    #: Realism (all 0: the CMDB export is exactly the topology faults spread on, and noise
    #: alerts fall at random). ``cmdb_missing``: share of relations the export lacks;
    #: ``cmdb_stale``: share it records pointing at the wrong CI (another CI of the right
    #: type); ``unknown_cis``: share of VMs and containers that report metrics (and logs)
    #: but are not in the CMDB; ``off_topology``: chance that a fault also reaches one or
    #: two CIs no relation leads to; ``noise_overlap``: unrelated short anomalies (with
    #: the alerts their metrics raise) per fault, starting around the fault's start.
    #: :meth:`realistic` gives the demo's values.
    cmdb_missing: float = 0.0
    cmdb_stale: float = 0.0
    unknown_cis: float = 0.0
    off_topology: float = 0.0
    noise_overlap: float = 0.0

    @classmethod
    def realistic(cls, **fields: object) -> SimulationConfig:
        """A config with :data:`REALISM` (about 10 % of relations missing or stale, some
        unknown CIs, faults that leave the recorded topology, noise during faults)."""
        return cls(**{**REALISM, **fields})  # type: ignore[arg-type]

    @property
    def is_realistic(self) -> bool:
        """Whether any realism knob is on."""
        return any(getattr(self, k) for k in REALISM)

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ConfigError(f"seed {self.seed} is negative; use 0 or a positive integer")
        if self.entities < MIN_ENTITIES:
            raise ConfigError(
                f"entities={self.entities} is too small; use at least "
                f"{MIN_ENTITIES} so every type of object exists"
            )
        if self.days < 1:
            raise ConfigError(f"days={self.days}; simulate at least one day")
        if not 10 <= self.step_seconds <= HOUR_S or HOUR_S % self.step_seconds:
            raise ConfigError(
                f"step_seconds={self.step_seconds} must divide an hour evenly "
                "and be between 10 and 3600 (e.g. 15, 30, 60)"
            )
        for name in ("cmdb_missing", "cmdb_stale", "unknown_cis", "off_topology"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}={getattr(self, name)} must be a share in [0, 1]")
        if self.cmdb_missing + self.cmdb_stale > 1.0:
            raise ConfigError("cmdb_missing + cmdb_stale is more than all relations")
        if not 0.0 <= self.noise_overlap <= 10.0:
            raise ConfigError(f"noise_overlap={self.noise_overlap} must be in [0, 10] per fault")

    @property
    def start_ts(self) -> int:
        """Epoch seconds of the first simulated instant (``start`` 00:00 UTC)."""
        return int(
            datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC).timestamp()
        )

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
        out: dict[str, object] = {
            "seed": self.seed,
            "entities": self.entities,
            "days": self.days,
            "start": self.start.isoformat(),
            "step_seconds": self.step_seconds,
        }
        if self.is_realistic:
            out.update({k: getattr(self, k) for k in REALISM})
        return out


#: The realism of ``opslake simulate --realistic`` (and :meth:`SimulationConfig.realistic`):
#: about 10 % of the CMDB's relations missing (6 %) or stale (4 %), 3 % of VMs and
#: containers unknown to it, a quarter of faults reaching a CI off the recorded topology,
#: and about one unrelated anomaly per fault overlapping it.
REALISM: dict[str, float] = {
    "cmdb_missing": 0.06,
    "cmdb_stale": 0.04,
    "unknown_cis": 0.03,
    "off_topology": 0.25,
    "noise_overlap": 1.0,
}


def unit_hash(seed: int, *keys: str | int) -> float:
    """A stable number in [0, 1) for (seed, keys): a draw that does not depend on order."""
    digest = hashlib.blake2b("\x1f".join(map(str, (seed, *keys))).encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2**64


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
    text = np.datetime_as_string(
        np.asarray(ts_ms, dtype=np.int64).astype("datetime64[ms]"), unit="ms"
    )
    return [t + "Z" for t in text.tolist()]
