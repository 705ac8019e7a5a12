"""One settings object, read from environment variables (prefix ``OPSLAKE_``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from opslake.errors import ConfigError

DEFAULT_METRICS_DIR = Path(__file__).resolve().parent.parent / "metrics"
DEFAULT_ALERTING_DIR = Path(__file__).resolve().parent.parent / "config" / "alerting"
DEFAULT_EGRESS_FILE = Path(__file__).resolve().parent.parent / "config" / "egress.yaml"
DEFAULT_ALERT_WEBHOOKS_DIR = Path(__file__).resolve().parent.parent / "config" / "alert_webhooks"
DEFAULT_TASKS_DIR = Path(__file__).resolve().parent.parent / "collection" / "tasks"


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
    #: Field mappings of the generic alert webhook, one YAML per sender
    #: (``OPSLAKE_ALERT_WEBHOOKS_DIR``).
    alert_webhooks_dir: Path = field(default_factory=lambda: DEFAULT_ALERT_WEBHOOKS_DIR)
    #: Collection tasks, one YAML each (``OPSLAKE_TASKS_DIR``; default the source tree's
    #: ``collection/tasks``, else ``./collection/tasks``).
    tasks_dir: Path = field(default_factory=lambda: DEFAULT_TASKS_DIR)
    #: The largest push body ``opslake serve`` accepts, as sent (``OPSLAKE_MAX_PUSH_BYTES``).
    max_push_bytes: int = 16 * 2**20
    #: The most a compressed push body may expand to (``OPSLAKE_MAX_DECODED_BYTES``):
    #: Prometheus sends 2,000-10,000 samples a request, a few hundred KiB decoded.
    max_decoded_bytes: int = 32 * 2**20
    #: The MQTT broker subscriptions publish to, ``host:port`` (``OPSLAKE_MQTT_BROKER``).
    mqtt_broker: tuple[str, int] | None = None
    #: Seconds between the data service's subscription passes; 0 turns them off
    #: (``OPSLAKE_SUBSCRIPTION_INTERVAL_S``).
    subscription_interval_s: float = 10.0
    #: Scale-out (``opslake cluster``): an existing Dask scheduler (``tcp://host:port``) that
    #: ``materialize --cluster`` submits to and local workers join; unset, the local one.
    dask_scheduler: str | None = None
    #: Port of the local Dask scheduler ``opslake cluster up`` starts.
    dask_port: int = 8786
    #: The one relational store (``postgresql://user:password@host:port/db``, PostgreSQL or a
    #: compatible database): identity, subscriptions, workbench, collection state, handling,
    #: Superset's metadata and Dagster's instance, a schema each. Unset, SQLite files under
    #: the state directory (the embedded default). Holds a password: kept out of ``repr``.
    database_url: str | None = field(default=None, repr=False)
    #: An existing PostgreSQL (``postgresql://user:password@host:port/db``) for the cluster's
    #: Dagster instance; unset, the local one ``opslake cluster up`` starts.
    postgres_url: str | None = None
    #: Port of the local PostgreSQL (loopback only); not 5432, which a system one may hold.
    postgres_port: int = 5433
    #: Port of the local S3 endpoint (moto) the cluster starts when the lake is not on S3.
    cluster_s3_port: int = 9400
    #: Working memory (MiB) a large silver table may sort in at once; beyond it the day is
    #: sorted shard by shard through spill files, so memory does not grow with the day.
    sort_memory_mb: int = 512
    #: Shards a day of the heavy tables is cut into (metric points and their rollups, by a
    #: stable hash of the entity): each shard is its own step, so one day spreads over
    #: the workers of a cluster. The same lake must be built with the same count.
    day_shards: int = 1
    #: Seconds a failed pipeline step waits before its first retry; the second waits three
    #: times as long (Dagster's exponential backoff). Read when the jobs are defined.
    step_retry_delay_s: float = 10.0
    #: Memory (MiB) DuckDB may use in one of the pipeline's connections before it spills
    #: to disk under the state directory (its own default is 80 % of the machine).
    duckdb_memory_mb: int = 2048
    #: The least severe Dagster event a run started by the CLI prints (``OPSLAKE_LOG_LEVEL``);
    #: the instance keeps every event for the UI whatever this says.
    log_level: str = "ERROR"
    #: The HMAC-SM3 key of the audit log (``opslake.security.audit``), created on first use;
    #: keep it apart from the log (another mount or owner). Unset: ``state_dir/keys/audit.key``.
    audit_key_file: Path | None = None
    #: The audit log's head is checkpointed (signed, into the lake and syslog) every this
    #: many entries, and after this many seconds with entries not yet checkpointed.
    audit_checkpoint_entries: int = 1000
    audit_checkpoint_seconds: int = 300
    #: Where checkpoints are also sent as syslog lines: ``host:port`` (UDP) or a socket
    #: path (``/dev/log``); unset, none are sent.
    audit_syslog: str | None = None
    #: Days back a landed batch id is looked for, so a redelivery within them (after
    #: midnight too) lands once: ``OPSLAKE_DEDUPE_DAYS``.
    dedupe_days: int = 7
    #: Scheduled backups kept under ``state_dir/backups`` (``opslake.security.backup``).
    backup_keep: int = 7
    #: Landing sources whose batches are stored SM4-GCM-encrypted under the data key
    #: (``OPSLAKE_LANDING_ENCRYPTED_SOURCES``, comma-separated, ``none`` for none): the
    #: exports that carry personal contacts (owner phone numbers, e-mail) by default.
    landing_encrypted_sources: tuple[str, ...] = ("cmdb", "itsm")
    #: Days a landed batch is kept once silver holds it (``OPSLAKE_LANDING_RETENTION_DAYS``);
    #: 0, the default, keeps landing forever (``opslake landing purge``).
    landing_retention_days: int = 0
    #: The environment variable holding the passphrase backups' keys are sealed under.
    backup_passphrase_env: str = "OPSLAKE_BACKUP_PASSPHRASE"
    #: Requests a user may make per UTC day through sessions (all of them together), as an
    #: API key's default quota is: ``OPSLAKE_SESSION_QUOTA``.
    session_quota_per_day: int = 10_000
    #: PEM certificate (chain) and private key ``opslake serve`` speaks TLS with (HTTPS and
    #: syslog over TLS); both or neither (``opslake.security.tls``).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: The password the MQTT subscriber signs in with (its user name is ``--mqtt-username``);
    #: an environment variable only, never a command-line argument (``ps`` shows those).
    mqtt_password: str | None = field(default=None, repr=False)
    #: The API key (scope ``platform:read``) the ``opslake-self`` collection task reads the
    #: data service's ``/metrics`` with (``OPSLAKE_SELF_API_KEY``); an environment variable
    #: only. Unset, the task reports the API's figures as unreadable.
    self_api_key: str | None = field(default=None, repr=False)
    #: The doors ``opslake serve`` opens in front of the Dagster UI and Superset: each its
    #: own port (the session cookie of the sign-in page is per host, so valid on each), the
    #: upstream a loopback URL. A port unset keeps that door shut (``opslake.api.gateway``).
    dagster_door_port: int | None = None
    superset_door_port: int | None = None
    dagster_upstream: str = "http://127.0.0.1:3001"
    superset_upstream: str = "http://127.0.0.1:8088"
    #: The Superset server ``opslake screens`` runs (``OPSLAKE_SUPERSET_*``): its virtualenv
    #: (default as ``infra/install-superset.sh`` puts it), address, metadata database (a
    #: SQLAlchemy URI, which may hold a password; unset, SQLite under the state directory),
    #: administrator (password unset: generated once and kept) and gunicorn workers.
    superset_venv: Path = field(default_factory=lambda: _superset_venv({}))
    superset_host: str = "127.0.0.1"
    superset_port: int = 8088
    superset_database_uri: str | None = field(default=None, repr=False)
    superset_admin_user: str = "admin"
    superset_admin_password: str | None = field(default=None, repr=False)
    superset_workers: int = 2
    #: The Chromium-based browser service reports are rendered with (``OPSLAKE_BROWSER``: its
    #: binary, e.g. a domestic build); unset, Debian's ``chromium`` from ``PATH``.
    browser: Path | None = None
    #: Secrets, like every setting read here and never shown (``repr`` leaves them out):
    #: the SM4 data key and the previous ones still read (``OPSLAKE_DATA_KEY``, hex;
    #: ``OPSLAKE_DATA_KEY_PREVIOUS``, comma-separated), the passphrase backups are sealed
    #: under (from the variable ``backup_passphrase_env`` names), and the API key an
    #: analyst's ``LakeClient.remote`` sends (``OPSLAKE_API_KEY``).
    data_key: str | None = field(default=None, repr=False)
    data_key_previous: str | None = field(default=None, repr=False)
    backup_passphrase: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    #: The environment as read, for values a configuration file names by variable (a
    #: ``notify.yaml`` receiver's ``url_env: OPSLAKE_DINGTALK_URL``); never shown.
    variables: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, str] | None = None,
    ) -> Settings:
        """Build settings from ``environ`` (defaults to ``os.environ``), ``overrides`` over it."""
        env = {**(os.environ if environ is None else environ), **(overrides or {})}
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
            metrics_dir=Path(env.get("OPSLAKE_METRICS_DIR", DEFAULT_METRICS_DIR))
            .expanduser()
            .resolve(),
            alerting_dir=Path(env.get("OPSLAKE_ALERTING_DIR", DEFAULT_ALERTING_DIR))
            .expanduser()
            .resolve(),
            egress_file=Path(env.get("OPSLAKE_EGRESS_FILE", DEFAULT_EGRESS_FILE))
            .expanduser()
            .resolve(),
            alert_webhooks_dir=Path(
                env.get("OPSLAKE_ALERT_WEBHOOKS_DIR") or DEFAULT_ALERT_WEBHOOKS_DIR
            )
            .expanduser()
            .resolve(),
            tasks_dir=Path(
                env.get("OPSLAKE_TASKS_DIR")
                or (DEFAULT_TASKS_DIR if DEFAULT_TASKS_DIR.is_dir() else "collection/tasks")
            )
            .expanduser()
            .resolve(),
            max_push_bytes=_positive(
                env, "OPSLAKE_MAX_PUSH_BYTES", 16 * 2**20, what="a positive number of bytes"
            ),
            max_decoded_bytes=_positive(
                env, "OPSLAKE_MAX_DECODED_BYTES", 32 * 2**20, what="a positive number of bytes"
            ),
            mqtt_broker=host_port(env["OPSLAKE_MQTT_BROKER"], "OPSLAKE_MQTT_BROKER")
            if env.get("OPSLAKE_MQTT_BROKER")
            else None,
            subscription_interval_s=_seconds(env, "OPSLAKE_SUBSCRIPTION_INTERVAL_S", 10.0),
            dask_scheduler=env.get("OPSLAKE_DASK_SCHEDULER") or None,
            dask_port=_port(env, "OPSLAKE_DASK_PORT", 8786),
            database_url=_database_url(env),
            postgres_url=env.get("OPSLAKE_POSTGRES_URL") or None,
            postgres_port=_port(env, "OPSLAKE_POSTGRES_PORT", 5433),
            cluster_s3_port=_port(env, "OPSLAKE_CLUSTER_S3_PORT", 9400),
            sort_memory_mb=_memory_mb(env, "OPSLAKE_SORT_MEMORY_MB", 512),
            day_shards=_day_shards(env),
            step_retry_delay_s=_seconds(env, "OPSLAKE_STEP_RETRY_DELAY_S", 10.0),
            duckdb_memory_mb=_memory_mb(env, "OPSLAKE_DUCKDB_MEMORY_MB", 2048),
            log_level=_log_level(env),
            audit_key_file=Path(env["OPSLAKE_AUDIT_KEY_FILE"]).expanduser().resolve()
            if env.get("OPSLAKE_AUDIT_KEY_FILE")
            else None,
            audit_checkpoint_entries=_positive(env, "OPSLAKE_AUDIT_CHECKPOINT_ENTRIES", 1000),
            audit_checkpoint_seconds=_positive(env, "OPSLAKE_AUDIT_CHECKPOINT_SECONDS", 300),
            audit_syslog=env.get("OPSLAKE_AUDIT_SYSLOG") or None,
            dedupe_days=_positive(env, "OPSLAKE_DEDUPE_DAYS", 7),
            backup_keep=_positive(env, "OPSLAKE_BACKUP_KEEP", 7),
            landing_encrypted_sources=_sources(
                env, "OPSLAKE_LANDING_ENCRYPTED_SOURCES", ("cmdb", "itsm")
            ),
            landing_retention_days=_positive(
                env,
                "OPSLAKE_LANDING_RETENTION_DAYS",
                0,
                least=0,
                what="a number of days (0 keeps landing forever)",
            ),
            backup_passphrase_env=env.get("OPSLAKE_BACKUP_PASSPHRASE_VAR")
            or "OPSLAKE_BACKUP_PASSPHRASE",
            session_quota_per_day=_positive(env, "OPSLAKE_SESSION_QUOTA", 10_000),
            tls_cert=_tls_path(env, "OPSLAKE_TLS_CERT", "OPSLAKE_TLS_KEY"),
            tls_key=_tls_path(env, "OPSLAKE_TLS_KEY", "OPSLAKE_TLS_CERT"),
            mqtt_password=env.get("OPSLAKE_MQTT_PASSWORD") or None,
            self_api_key=env.get("OPSLAKE_SELF_API_KEY") or None,
            dagster_door_port=_door_port(env, "OPSLAKE_DAGSTER_DOOR_PORT"),
            superset_door_port=_door_port(env, "OPSLAKE_SUPERSET_DOOR_PORT"),
            dagster_upstream=_upstream(env, "OPSLAKE_DAGSTER_UPSTREAM", "http://127.0.0.1:3001"),
            # Superset's own port (opslake.screens.server) unless the upstream is named.
            superset_upstream=_upstream(
                env,
                "OPSLAKE_SUPERSET_UPSTREAM",
                f"http://127.0.0.1:{_port(env, 'OPSLAKE_SUPERSET_PORT', 8088)}",
            ),
            superset_venv=_superset_venv(env),
            superset_host=env.get("OPSLAKE_SUPERSET_HOST") or "127.0.0.1",
            superset_port=_port(env, "OPSLAKE_SUPERSET_PORT", 8088),
            superset_database_uri=env.get("OPSLAKE_SUPERSET_DATABASE_URI") or None,
            superset_admin_user=env.get("OPSLAKE_SUPERSET_ADMIN_USER") or "admin",
            superset_admin_password=env.get("OPSLAKE_SUPERSET_ADMIN_PASSWORD") or None,
            superset_workers=_positive(
                env, "OPSLAKE_SUPERSET_WORKERS", 2, most=32, what="a number of workers (1-32)"
            ),
            browser=Path(env["OPSLAKE_BROWSER"]).expanduser()
            if env.get("OPSLAKE_BROWSER")
            else None,
            data_key=env.get("OPSLAKE_DATA_KEY", "").strip() or None,
            data_key_previous=env.get("OPSLAKE_DATA_KEY_PREVIOUS", "").strip() or None,
            backup_passphrase=env.get(
                env.get("OPSLAKE_BACKUP_PASSPHRASE_VAR") or "OPSLAKE_BACKUP_PASSPHRASE"
            )
            or None,
            api_key=env.get("OPSLAKE_API_KEY") or None,
            variables=env,
        )

    def or_from(self, environ: Mapping[str, str] | None) -> Settings:
        """These settings, or those of ``environ`` where a caller passes its own (tests do)."""
        return self if environ is None else Settings.from_env(environ)

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

    @property
    def audit_key_path(self) -> Path:
        """The audit log's HMAC key file: ``audit_key_file``, else ``state_dir/keys/audit.key``."""
        return self.audit_key_file or self.state_dir / "keys" / "audit.key"

    @property
    def events_log(self) -> Path:
        """Where runs started by the CLI append every Dagster event (DEBUG included)."""
        return self.state_dir / "logs" / "dagster-events.log"

    @property
    def backups_dir(self) -> Path:
        """Where the scheduled backup job writes its archives."""
        return self.state_dir / "backups"

    @property
    def cluster_dir(self) -> Path:
        """The local cluster's state: PID files, logs, PostgreSQL's data, its Dagster instance."""
        return self.state_dir / "cluster"


def _database_url(env: Mapping[str, str]) -> str | None:
    raw = env.get("OPSLAKE_DATABASE_URL") or None
    if raw is not None and raw.partition("://")[0].split("+")[0] not in ("postgresql", "postgres"):
        raise ConfigError(
            "OPSLAKE_DATABASE_URL must be a PostgreSQL URL "
            "(postgresql://user:password@host:port/database); unset it for the embedded SQLite"
        )
    return raw


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    """A TCP port from ``env[name]``; a clear error when it is not one."""
    raw = env.get(name) or str(default)
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"{name}={raw!r} is not a TCP port; use a number from 1 to 65535")
    return int(raw)


def host_port(value: str, name: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) as a pair; a clear error naming ``name`` otherwise."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name}={value!r} is not HOST:PORT; use e.g. 127.0.0.1:1883")
    return host.strip("[]"), int(port)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A number of seconds, 0 or more, from ``env[name]``; a clear error otherwise."""
    raw = env.get(name) or str(default)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # NaN too
        raise ConfigError(
            f"{name}={raw!r} is not a number of seconds; use e.g. {default:g} (0 turns it off)"
        )
    return value


def _door_port(env: Mapping[str, str], name: str) -> int | None:
    """A door's port from ``env[name]``, or None (the door stays shut) when unset."""
    return _port(env, name, 0) if env.get(name) else None


def _upstream(env: Mapping[str, str], name: str, default: str) -> str:
    """An upstream's base URL (``http(s)://host:port``); a clear error when it is not one."""
    raw = (env.get(name) or default).rstrip("/")
    scheme, _, rest = raw.partition("://")
    if scheme not in ("http", "https") or not rest or "/" in rest or "@" in rest:
        raise ConfigError(
            f"{name}={raw!r} is not an upstream base URL; use http://HOST:PORT "
            f"with no path (default {default})"
        )
    return raw


def _tls_path(env: Mapping[str, str], name: str, partner: str) -> Path | None:
    """``env[name]`` as a path; a clear error when its partner (cert or key) is missing."""
    if not env.get(name):
        return None
    if not env.get(partner):
        raise ConfigError(
            f"{name} is set but {partner} is not; set both (`opslake tls "
            "self-signed --out DIR` makes a pair and prints them) or neither"
        )
    return Path(env[name]).expanduser().resolve()


def _day_shards(env: Mapping[str, str]) -> int:
    """``OPSLAKE_SHARDS``; a clear error when it is not a shard count."""
    raw = env.get("OPSLAKE_SHARDS") or "1"
    if not raw.isdigit() or not 1 <= int(raw) <= 256:
        raise ConfigError(
            f"OPSLAKE_SHARDS={raw!r} is not a shard count; use a whole number "
            "from 1 (default: a day is one step) to 256"
        )
    return int(raw)


def _sources(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """Landing source names, comma-separated, from ``name`` (``none``: no source)."""
    raw = env.get(name, "").strip()
    if raw.lower() == "none":
        return ()
    names = tuple(sorted({part.strip() for part in raw.split(",") if part.strip()})) or default
    bad = [n for n in names if not n.replace("-", "").replace("_", "").isalnum() or n != n.lower()]
    if bad:
        raise ConfigError(
            f"{name}={raw!r} names {bad[0]!r}, not a landing source; use "
            "lower-case source names separated by commas (e.g. cmdb,itsm) or none"
        )
    return names


def _superset_venv(env: Mapping[str, str]) -> Path:
    """Superset's virtualenv: ``OPSLAKE_SUPERSET_VENV``, else where the install script puts it."""
    if env.get("OPSLAKE_SUPERSET_VENV"):
        return Path(env["OPSLAKE_SUPERSET_VENV"]).expanduser()
    cache = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME", "~")) / ".cache")
    return Path(cache).expanduser() / "opslake" / "superset-venv"


def _memory_mb(env: Mapping[str, str], name: str, default: int) -> int:
    """A memory budget in MiB from ``name``; a clear error when it is not a sensible one."""
    return _positive(env, name, default, least=64, what="a memory budget in MiB")


def _log_level(env: Mapping[str, str]) -> str:
    """``OPSLAKE_LOG_LEVEL``; a clear error when it is not a level."""
    raw = (env.get("OPSLAKE_LOG_LEVEL") or "ERROR").upper()
    if raw not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(
            f"OPSLAKE_LOG_LEVEL={raw!r} is not a log level; use DEBUG, INFO, "
            "WARNING (default), ERROR or CRITICAL"
        )
    return raw


def _positive(
    env: Mapping[str, str],
    name: str,
    default: int,
    *,
    least: int = 1,
    most: int | None = None,
    what: str = "a positive whole number",
) -> int:
    """A whole number of at least ``least`` (at most ``most``) from ``name``; else a clear error."""
    raw = env.get(name) or str(default)
    if not raw.isdigit() or int(raw) < least or (most is not None and int(raw) > most):
        raise ConfigError(
            f"{name}={raw!r} is not {what}; use a whole number of at least "
            f"{least} (default {default})"
        )
    return int(raw)
