"""Start, stop and find the Superset server that shows the screens.

Superset lives in its own virtualenv (``infra/install-superset.sh``; its pins clash with the
pipeline's). Everything it writes stays under ``<state dir>/superset``: the generated
``superset_config.py``, the secret key and admin password (0600, generated at first start
unless given), the SQLite metadata database (PostgreSQL through
``OPSLAKE_SUPERSET_DATABASE_URI``), the log and the PID file. The gunicorn master leads its own
session and process group; stopping sends the group TERM, then KILL.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from opslake.errors import ConfigError, NotFoundError, SupersetError
from opslake.lake import shared_db
from opslake.settings import Settings

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "infra" / "install-superset.sh"
CLI_RUNNER = REPO / "infra" / "superset" / "superset_cli.py"
#: Where the modules Superset's config loads live (they run in Superset's venv): the sign-in
#: hook behind OpsLake's door (opslake_remote_user) and the DuckDB file lock (opslake_duckdb).
SUPERSET_HOOKS = REPO / "infra" / "superset"
STOP_GRACE_S = 15.0
#: Stands for the admin password in CLI arguments; infra/superset/superset_cli.py substitutes
#: it from the environment.
ADMIN_PASSWORD_ARG = "{env:OPSLAKE_SUPERSET_ADMIN_PASSWORD}"
# Bumped when what the one-off bootstrap does changes, so existing state dirs redo it.
BOOTSTRAP_VERSION = 1


@dataclass(frozen=True)
class SupersetConfig:
    """How and where the Superset server runs (environment variables ``OPSLAKE_SUPERSET_*``)."""

    venv: Path
    #: Everything Superset writes: config, secrets, metadata DB, log, PID file.
    state: Path
    warehouse: Path
    timezone: str
    host: str = "127.0.0.1"
    port: int = 8088
    #: SQLAlchemy URI of Superset's metadata database; None: SQLite under ``state``.
    metadata_uri: str | None = field(default=None, repr=False)
    #: The schema of ``metadata_uri`` to create before Superset makes its tables there (the
    #: installation's database, ``OPSLAKE_DATABASE_URL``); None: the URI's database as is.
    metadata_schema: str | None = None
    admin_username: str = "admin"
    #: None: generated once and kept in ``state/admin-password``.
    admin_password: str | None = field(default=None, repr=False)
    workers: int = 2
    #: Behind OpsLake's door (``OPSLAKE_SUPERSET_DOOR_PORT`` set): users are signed in by
    #: the door's headers (AUTH_REMOTE_USER), trusted only with :func:`gateway_secret`.
    door: bool = False
    #: The Chromium-based browser reports render with (``OPSLAKE_BROWSER``); None: ``PATH``'s.
    browser: Path | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, environ: Mapping[str, str] | None = None
    ) -> SupersetConfig:
        """``settings``' Superset (``OPSLAKE_SUPERSET_*``) over its state dir, warehouse and
        time zone; ``environ``, where given, stands for the environment those are read from."""
        given = settings.or_from(environ)
        # Unless told otherwise, the metadata joins the installation's database, a schema of
        # its own (as Dagster's instance and OpsLake's own stores do).
        shared = given.database_url if given.superset_database_uri is None else None
        return cls(
            venv=given.superset_venv,
            state=settings.state_dir / "superset",
            warehouse=settings.warehouse_path,
            timezone=settings.timezone,
            host=given.superset_host,
            port=given.superset_port,
            metadata_uri=shared_db.schema_url(shared, shared_db.SUPERSET)
            if shared
            else given.superset_database_uri,
            metadata_schema=shared_db.SUPERSET if shared else None,
            admin_username=given.superset_admin_user,
            admin_password=given.superset_admin_password,
            workers=given.superset_workers,
            door=settings.superset_door_port is not None,
            browser=given.browser,
        )

    @property
    def url(self) -> str:
        """Base URL of the web server."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        """The gunicorn master's PID."""
        return self.state / "superset.pid"

    @property
    def log_file(self) -> Path:
        """Superset's and gunicorn's output."""
        return self.state / "superset.log"

    @property
    def config_file(self) -> Path:
        """The generated ``superset_config.py``."""
        return self.state / "superset_config.py"

    @property
    def metadata_database(self) -> str:
        """The metadata database URI actually used."""
        return self.metadata_uri or f"sqlite:///{self.state / 'superset.db'}"

    def password(self) -> str:
        """The admin password: from the environment, else generated once and kept (0600)."""
        if self.admin_password:
            return self.admin_password
        return _secret_file(self.state / "admin-password", lambda: secrets.token_urlsafe(18))


def _secret_file(path: Path, make: Callable[[], str]) -> str:
    """Read a secret kept in ``path``, creating it (mode 0600, never wider) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(make() + "\n")
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    return path.read_text().strip()


def gateway_secret(config: SupersetConfig) -> str:
    """The secret the door sends Superset with a user's identity (``state/gateway-secret``,
    0600, made at first use): whoever holds it can sign in to Superset as anyone."""
    return _secret_file(config.state / "gateway-secret", lambda: secrets.token_urlsafe(32))


def _door_text(config: SupersetConfig) -> str:
    """The part of ``superset_config.py`` that lets OpsLake's door sign users in."""
    gateway_secret(config)
    return f"""
# Behind OpsLake's door (opslake serve --superset-door): the user and roles come from the
# door's headers, trusted only with the secret in gateway-secret; a browser without them is
# signed out.
from flask_appbuilder.security.manager import AUTH_REMOTE_USER
from opslake_remote_user import mutator

AUTH_TYPE = AUTH_REMOTE_USER
# The REST login (/api/v1/security/login, provider db, JWT) that screens import and role
# provisioning use: under AUTH_REMOTE_USER, Flask-AppBuilder refuses provider db with 400
# ("Alternative authentication provider is not allowed") unless this is set. Only accounts
# with a password can use it: the service administrator; users the door creates have none.
AUTH_API_LOGIN_ALLOW_MULTIPLE_PROVIDERS = True
FLASK_APP_MUTATOR = mutator(Path({str(config.state / "gateway-secret")!r}),
                            reserved={config.admin_username!r})
"""


def _config_text(config: SupersetConfig) -> str:
    secret = config.state / "secret-key"
    _secret_file(secret, lambda: secrets.token_urlsafe(48))
    door = _door_text(config) if config.door else ""
    return f"""\
# Written by opslake (opslake/screens/server.py) at every start: change the OPSLAKE_SUPERSET_*
# settings, not this file.
import sys
from pathlib import Path

sys.path.insert(0, {str(SUPERSET_HOOKS)!r})
import opslake_duckdb  # noqa: E402

SECRET_KEY = Path({str(secret)!r}).read_text().strip()
# The warehouse connection reads its live views' lake directories and no other file, and
# runs SELECTs only (DuckDB would let the allowed directories be written).
opslake_duckdb.install()
SQL_QUERY_MUTATOR = opslake_duckdb.only_select
SQLALCHEMY_DATABASE_URI = {config.metadata_database!r}
# Screens are Chinese first; Traditional Chinese and English stay one click away (the
# screens themselves come in each language: <slug>, <slug>-zh-tw, <slug>-en).
BABEL_DEFAULT_LOCALE = "zh"
LANGUAGES = {{
    "zh": {{"flag": "cn", "name": "简体中文"}},
    "zh_TW": {{"flag": "tw", "name": "繁體中文"}},
    "en": {{"flag": "us", "name": "English"}},
}}
SUPERSET_WEBSERVER_TIMEOUT = 120
# Loopback HTTP: no TLS redirect; the default content security policy stays on.
CONTENT_SECURITY_POLICY_WARNING = False
FEATURE_FLAGS = {{"DASHBOARD_RBAC": False, "TAGGING_SYSTEM": False}}
# No PUBLIC_ROLE_LIKE: with it set, JWT-authenticated REST calls fail on this version.
{door}"""


def running_pid(config: SupersetConfig) -> int | None:
    """PID of the running gunicorn master, or None (a stale PID file is removed)."""
    try:
        pid = int(config.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        proc = psutil.Process(pid)
        # Guards against a PID reused by another program after a crash.
        alive = proc.status() != psutil.STATUS_ZOMBIE and any(
            "gunicorn" in part for part in proc.cmdline()[:2]
        )
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        alive = False
    if not alive:
        config.pid_file.unlink(missing_ok=True)
        return None
    return pid


def _env(config: SupersetConfig) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    }
    env.update(
        SUPERSET_CONFIG_PATH=str(config.config_file),
        SUPERSET_HOME=str(config.state),
        PATH=f"{config.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
        PYTHONUNBUFFERED="1",
    )
    return env


def _python(config: SupersetConfig) -> Path:
    python = config.venv / "bin" / "python"
    if not (config.venv / "bin" / "gunicorn").exists() or not python.exists():
        raise ConfigError(
            f"Superset is not installed in {config.venv}; run "
            f"`bash {INSTALL_SCRIPT.relative_to(REPO)}` (or set "
            "OPSLAKE_SUPERSET_VENV to where it is installed)"
        )
    return python


def _bootstrap(config: SupersetConfig, say: Callable[[str], None]) -> None:
    """``db upgrade``, admin creation and ``init``, once per Superset version and database."""
    python = _python(config)
    version = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('apache-superset'))"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    stamp = config.state / "bootstrap.json"
    want = {
        "bootstrap": BOOTSTRAP_VERSION,
        "superset": version,
        "database": hashlib.sha256(config.metadata_database.encode()).hexdigest()[:16],
        "admin": config.admin_username,
    }
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return
    say(
        f"superset {version}: upgrading the metadata database, creating "
        f"{config.admin_username!r}, syncing roles (first start, ~1 min)"
    )
    run_cli(
        config,
        "bootstrap",
        [
            ["db", "upgrade"],
            [
                "fab",
                "create-admin",
                "--username",
                config.admin_username,
                "--firstname",
                "OpsLake",
                "--lastname",
                "Admin",
                "--email",
                f"{config.admin_username}@opslake.invalid",
                "--password",
                ADMIN_PASSWORD_ARG,
            ],
            ["init"],
        ],
    )
    stamp.write_text(json.dumps(want))


def run_cli(config: SupersetConfig, what: str, commands: list[list[str]]) -> None:
    """Run ``superset`` CLI commands in one interpreter of Superset's venv, output to the log."""
    python = _python(config)
    config.state.mkdir(parents=True, exist_ok=True)
    with open(config.log_file, "ab") as log:
        log.write(f"--- {time.strftime('%FT%TZ', time.gmtime())} {what}\n".encode())
        log.flush()
        # The password travels in the environment, not in argv (which `ps` shows to all).
        env = _env(config) | {"OPSLAKE_SUPERSET_ADMIN_PASSWORD": config.password()}
        done = subprocess.run(
            [str(python), str(CLI_RUNNER), *map(json.dumps, commands)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=config.state,
            timeout=900,
            check=False,
        )
    if done.returncode != 0:
        raise SupersetError(
            f"Superset's {what} failed (exit {done.returncode}); "
            f"see {config.log_file}:\n{_tail(config.log_file)}"
        )


def reset_admin_password(config: SupersetConfig) -> None:
    """Give the admin the configured password (after OPSLAKE_SUPERSET_ADMIN_PASSWORD changed)."""
    run_cli(
        config,
        "admin password reset",
        [
            [
                "fab",
                "reset-password",
                "--username",
                config.admin_username,
                "--password",
                ADMIN_PASSWORD_ARG,
            ]
        ],
    )


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def _port_in_use(host: str, port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_healthy(
    url: str, timeout: float = 180.0, pid: int | None = None, log: Path | None = None
) -> None:
    """Wait until ``url/health`` answers OK; fail early when ``pid`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=3).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if pid is not None and not psutil.pid_exists(pid):
            raise SupersetError(
                f"Superset exited during start; log {log}:\n{_tail(log) if log else ''}"
            )
        if time.monotonic() > deadline:
            raise SupersetError(
                f"Superset did not answer {url}/health within {timeout:.0f}s; "
                f"log {log}:\n{_tail(log) if log else ''}"
            )
        time.sleep(0.5)


def prepare(config: SupersetConfig, say: Callable[[str], None] = print) -> None:
    """Write ``superset_config.py`` and bring the metadata database up to this Superset
    (``db upgrade``, the admin, ``init``: once per version and database); starts no server."""
    config.state.mkdir(parents=True, exist_ok=True)
    os.chmod(config.state, 0o700)
    text = _config_text(config)
    fd = os.open(config.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    if config.metadata_uri and config.metadata_schema:
        shared_db.create_schema(config.metadata_uri, config.metadata_schema)
    _bootstrap(config, say)


def start_server(config: SupersetConfig, say: Callable[[str], None] = print) -> int:
    """Bootstrap once, then start gunicorn in its own session; returns the master's PID.

    A server already running from this state dir is kept (idempotent).
    """
    if not re.fullmatch(r"[A-Za-z0-9._-]+", config.admin_username):
        raise ConfigError(
            f"OPSLAKE_SUPERSET_ADMIN_USER={config.admin_username!r}: use letters, "
            "digits, dot, dash or underscore"
        )
    pid = running_pid(config)
    if pid is not None:
        # A server started before OPSLAKE_SUPERSET_DOOR_PORT was set (or unset) does not
        # trust the door (or still does) until it restarts.
        stale = config.config_file.exists() and config.config_file.read_text() != _config_text(
            config
        )
        say(
            f"superset already running (pid {pid}) at {config.url}"
            + (
                "; it was started with other settings (OPSLAKE_SUPERSET_DOOR_PORT?): "
                "`opslake screens stop`, then `start`, to apply them"
                if stale
                else ""
            )
        )
        return pid
    if _port_in_use(config.host, config.port):
        raise ConfigError(
            f"{config.host}:{config.port} is already in use; stop what listens "
            "there or set OPSLAKE_SUPERSET_PORT"
        )
    prepare(config, say)
    gunicorn = config.venv / "bin" / "gunicorn"
    cmd = [
        str(gunicorn),
        "--bind",
        f"{config.host}:{config.port}",
        "--workers",
        str(config.workers),
        "--worker-class",
        "gthread",
        "--threads",
        "8",
        "--timeout",
        "120",
        "--graceful-timeout",
        "10",
        "--limit-request-line",
        "0",
        "--limit-request-field_size",
        "0",
        "superset.app:create_app()",
    ]
    with open(config.log_file, "ab") as log:
        log.write(f"--- {time.strftime('%FT%TZ', time.gmtime())} start: {' '.join(cmd)}\n".encode())
        log.flush()
        # Its own session: the group (master and workers) is stopped as one, and a closing
        # terminal or a finished `make` step does not take it down.
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_env(config),
            cwd=config.state,
            start_new_session=True,
        )
    config.pid_file.write_text(f"{proc.pid}\n")
    try:
        wait_healthy(config.url, pid=proc.pid, log=config.log_file)
    except SupersetError:
        stop_server(config)
        raise
    say(f"superset started (pid {proc.pid}) at {config.url}, log {config.log_file}")
    return proc.pid


def stop_server(config: SupersetConfig, say: Callable[[str], None] = print) -> bool:
    """Stop the server by its PID (the whole process group); False when none was running."""
    pid = running_pid(config)
    if pid is None:
        say("superset not running")
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and _group_alive(pid):
        time.sleep(0.2)
    if _group_alive(pid):
        say(f"superset did not stop on TERM within {STOP_GRACE_S:.0f}s; sending KILL")
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for _ in range(50):
            if not _group_alive(pid):
                break
            time.sleep(0.1)
    # Reap it when this process started it (tests), so no zombie is left behind.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    config.pid_file.unlink(missing_ok=True)
    say(f"superset stopped (pid {pid})")
    return True


def _group_alive(pgid: int) -> bool:
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(proc.info["pid"]) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return False


def require_warehouse(config: SupersetConfig) -> None:
    """Fail with the fix when there is no serving warehouse for the screens to read."""
    if not config.warehouse.exists():
        raise NotFoundError(
            f"no warehouse at {config.warehouse}; run `opslake warehouse build` "
            "first (after `opslake simulate` and `opslake materialize`)"
        )
