"""One settings object, read from environment variables (prefix ``OPSLAKE_``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from opslake.errors import ConfigError

DEFAULT_METRICS_DIR = Path(__file__).resolve().parent.parent / "metrics"
DEFAULT_ALERTING_DIR = Path(__file__).resolve().parent.parent / "config" / "alerting"
DEFAULT_EGRESS_FILE = Path(__file__).resolve().parent.parent / "config" / "egress.yaml"


@dataclass(frozen=True)
class Settings:
    """Where the lake lives and how OpsLake talks to it.

    ``home`` is a local directory or ``s3://bucket/prefix``; with S3, ``s3_endpoint`` names
    any S3-compatible endpoint and credentials come from the usual ``AWS_*`` variables, never
    from files in the repository. The serving warehouse and Dagster's instance stay on local
    disk (``state_dir``) because DuckDB and Dagster need a POSIX file system.
    """

    home: str = "./var"
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    state_dir: Path = field(default_factory=lambda: Path("./var"))
    timezone: str = "Asia/Shanghai"
    partition_start: date = date(2025, 1, 1)
    #: The metrics catalog's definitions (YAML); the repository's ``metrics/`` by default.
    metrics_dir: Path = field(default_factory=lambda: DEFAULT_METRICS_DIR)
    #: Convergence rules, runbooks, notification routes and the duty roster (YAML).
    alerting_dir: Path = field(default_factory=lambda: DEFAULT_ALERTING_DIR)
    #: The administrator's allow-list of webhook destinations (``opslake.security.egress``).
    egress_file: Path = field(default_factory=lambda: DEFAULT_EGRESS_FILE)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (defaults to ``os.environ``)."""
        env = os.environ if environ is None else environ
        home = env.get("OPSLAKE_HOME", "./var")
        is_s3 = home.startswith("s3://")
        if not is_s3:
            home = str(Path(home).expanduser().resolve())
        state_default = "./var" if is_s3 else home
        state_dir = Path(env.get("OPSLAKE_STATE_DIR", state_default)).expanduser().resolve()
        start_raw = env.get("OPSLAKE_PARTITION_START", "2025-01-01")
        try:
            start = date.fromisoformat(start_raw)
        except ValueError as exc:
            raise ConfigError(
                f"OPSLAKE_PARTITION_START={start_raw!r} is not a date; use YYYY-MM-DD."
            ) from exc
        endpoint = env.get("OPSLAKE_S3_ENDPOINT") or None
        if endpoint and not is_s3:
            raise ConfigError(
                "OPSLAKE_S3_ENDPOINT is set but OPSLAKE_HOME is not an s3:// URI; "
                "set OPSLAKE_HOME=s3://bucket/prefix or unset the endpoint."
            )
        return cls(
            home=home,
            s3_endpoint=endpoint,
            s3_region=env.get("OPSLAKE_S3_REGION", "us-east-1"),
            state_dir=state_dir,
            timezone=env.get("OPSLAKE_TIMEZONE", "Asia/Shanghai"),
            partition_start=start,
            metrics_dir=Path(env.get("OPSLAKE_METRICS_DIR", DEFAULT_METRICS_DIR)).expanduser()
            .resolve(),
            alerting_dir=Path(env.get("OPSLAKE_ALERTING_DIR", DEFAULT_ALERTING_DIR))
            .expanduser().resolve(),
            egress_file=Path(env.get("OPSLAKE_EGRESS_FILE", DEFAULT_EGRESS_FILE)).expanduser()
            .resolve(),
        )

    @property
    def is_object_store(self) -> bool:
        """True when the lake root is an S3 URI."""
        return self.home.startswith("s3://")

    @property
    def warehouse_path(self) -> Path:
        """The serving DuckDB file that readers open read-only."""
        return self.state_dir / "warehouse.duckdb"

    @property
    def dagster_home(self) -> Path:
        """Dagster's persistent instance (run history, materializations)."""
        return self.state_dir / "dagster"
