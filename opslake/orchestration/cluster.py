"""The local scale-out cluster: PostgreSQL, an S3 endpoint, a Dask scheduler and its workers.

Each part is a process of its own, started in its own session, its PID in
``<state>/cluster/<part>.pid`` (what it was started with beside it, in ``<part>.json``) and
stopped by that PID. Workers share nothing but the lake (S3) and the Dagster instance
(PostgreSQL): each has its own scratch directory as home, temp and state directory.
``materialize --cluster`` (:class:`ClusterRuns`) submits the same jobs with the executor of
:mod:`opslake.orchestration.dask_steps`: one Dask task per step, on whichever worker is free.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Self
from urllib.parse import quote

import dagster as dg
import psutil
import psycopg2
import pyarrow.fs as pafs

from opslake.crypto import KEY_ENV, data_key
from opslake.errors import ClusterError, ConfigError
from opslake.orchestration import runner
from opslake.orchestration.dask_steps import TASK_PREFIX, cluster_job
from opslake.settings import Settings

if TYPE_CHECKING:
    from distributed import Client
    from psycopg2.extensions import connection

#: The lake on the cluster's own S3 endpoint when ``OPSLAKE_HOME`` is a local directory.
OWN_LAKE = "s3://opslake/lake"
PG_USER = "opslake"
PG_DATABASE = "dagster"
#: How dagster.yaml names the instance's PostgreSQL URL: read from the environment of each
#: process (this one, every worker), so the password is in no configuration file.
PG_URL_ENV = "DAGSTER_POSTGRES_URL"
#: The cluster's own S3 endpoint (moto) accepts any credentials; these are used when unset.
OWN_S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "opslake", "AWS_SECRET_ACCESS_KEY": "opslake"}
#: A task whose worker died is run again elsewhere; after this many deaths Dask gives up.
ALLOWED_FAILURES = 3
START_TIMEOUT_S = 90.0
STOP_GRACE_S = 20.0
#: How long a process's empty command line is read again before it counts as not ours: a
#: process caught in ``exec`` shows none for a moment (see ``_cmdline``).
EXEC_GRACE_S = 1.0
INSTALL_HINT = "run `bash infra/install-services.sh` (as root) to install PostgreSQL"


@dataclasses.dataclass(frozen=True)
class Part:
    """One part of the cluster as ``status`` shows it."""

    name: str
    pid: int | None
    port: int | None
    health: str
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class StepRun:
    """Which worker ran one step of one run, and for how long."""

    day: str
    job: str
    step: str
    worker: str
    seconds: float


class Cluster:
    """The cluster that ``settings`` describe: where its parts live and how to reach them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.cluster_dir

    # -- where things are -------------------------------------------------------------------
    @property
    def own_s3(self) -> bool:
        """Whether the cluster runs its own S3 endpoint: the lake is not on another one."""
        return not self.settings.is_object_store or self.settings.s3_endpoint == self.s3_endpoint

    @property
    def own_postgres(self) -> bool:
        """Whether the cluster runs its own PostgreSQL (no ``OPSLAKE_DATABASE_URL`` or
        ``OPSLAKE_POSTGRES_URL``)."""
        return self.settings.postgres_url is None and self.settings.database_url is None

    @property
    def own_scheduler(self) -> bool:
        """Whether the cluster runs its own Dask scheduler (no ``OPSLAKE_DASK_SCHEDULER``)."""
        return self.settings.dask_scheduler is None

    @property
    def s3_endpoint(self) -> str:
        """The cluster's own S3 endpoint (loopback)."""
        return f"http://127.0.0.1:{self.settings.cluster_s3_port}"

    @property
    def scheduler(self) -> str:
        """The Dask scheduler's address."""
        return self.settings.dask_scheduler or f"tcp://127.0.0.1:{self.settings.dask_port}"

    @property
    def lake_settings(self) -> Settings:
        """The settings with the lake the cluster works on (on S3)."""
        if not self.own_s3:
            return self.settings
        home = self.settings.home if self.settings.is_object_store else OWN_LAKE
        return dataclasses.replace(self.settings, home=home, s3_endpoint=self.s3_endpoint)

    @property
    def bucket(self) -> str:
        """The bucket of the lake on the cluster's own endpoint."""
        return self.lake_settings.home.removeprefix("s3://").split("/", 1)[0]

    def database_url(self) -> str:
        """The relational store's URL (libpq form): ``OPSLAKE_DATABASE_URL``, else
        ``OPSLAKE_POSTGRES_URL``, else the cluster's own PostgreSQL."""
        configured = self.settings.database_url or self.settings.postgres_url
        if configured:
            return configured
        return (
            f"postgresql://{PG_USER}:{quote(self._pg_password(), safe='')}@127.0.0.1:"
            f"{self.settings.postgres_port}/{PG_DATABASE}"
        )

    def postgres_url(self) -> str:
        """The Dagster instance's database, as SQLAlchemy names it: schema ``dagster`` of the
        relational store (:func:`runner.dagster_url`), or ``OPSLAKE_POSTGRES_URL`` as given."""
        return runner.dagster_url(self.settings, self.database_url()) or ""

    def up_database(self, say: Callable[[str], None] = print) -> str:
        """Start only the cluster's own PostgreSQL (idempotent); returns its URL."""
        _mkdir(self.dir, 0o711)
        if self.own_postgres:
            self._up_postgres(say)
        return self.database_url()

    def _pg_password(self) -> str:
        """The local PostgreSQL's password: generated once, kept readable by its owner only."""
        path = self.dir / "postgres-password"
        if not path.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(24) + "\n")
        os.chmod(path, 0o600)
        return path.read_text().strip()

    def environment(self) -> dict[str, str]:
        """Variables that point a process at the cluster's lake (exported by ``cluster env``)."""
        lake = self.lake_settings
        env = {
            "OPSLAKE_HOME": lake.home,
            "OPSLAKE_STATE_DIR": str(self.settings.state_dir),
            # Every host of the cluster shares one relational store (identity, subscriptions…).
            "OPSLAKE_DATABASE_URL": self.database_url(),
        }
        if lake.s3_endpoint:
            env["OPSLAKE_S3_ENDPOINT"] = lake.s3_endpoint
        if self.own_s3:
            env |= {k: os.environ.get(k, v) for k, v in OWN_S3_CREDENTIALS.items()}
        return env

    def use_lake(self) -> Settings:
        """The cluster lake's settings, with its credentials in this process's environment."""
        if self.own_s3:
            for name, value in OWN_S3_CREDENTIALS.items():
                os.environ.setdefault(name, value)
        return self.lake_settings

    # -- processes ------------------------------------------------------------------------
    def _pid_file(self, name: str) -> Path:
        return self.dir / f"{name}.pid"

    def _record(self, name: str) -> dict:
        try:
            return json.loads((self.dir / f"{name}.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def running(self, name: str) -> int | None:
        """PID of part ``name`` while it runs; a stale PID file is removed."""
        try:
            pid = int(self._pid_file(name).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        args = self._record(name).get("cmd", [])[1:]
        try:
            proc = psutil.Process(pid)
            # The command line's tail guards against a PID reused by another program; a
            # script's interpreter may stand before the command itself.
            alive = proc.status() != psutil.STATUS_ZOMBIE and _cmdline(proc)[-len(args) :] == args
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            alive = False
        if not alive:
            self._pid_file(name).unlink(missing_ok=True)
            return None
        return pid

    def _spawn(
        self,
        name: str,
        cmd: list[str],
        env: dict[str, str],
        cwd: Path,
        user: str | None = None,
        **record: object,
    ) -> int:
        logs = _mkdir(self.dir / "logs")
        with open(logs / f"{name}.log", "ab") as log:
            log.write(f"--- {time.strftime('%FT%TZ', time.gmtime())} {' '.join(cmd)}\n".encode())
            log.flush()
            # Its own session: a closing terminal or a finished test does not take it down,
            # and `down` stops exactly this PID.
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                user=user,
                start_new_session=True,
            )
        (self.dir / f"{name}.json").write_text(json.dumps({"cmd": cmd, **record}))
        self._pid_file(name).write_text(f"{proc.pid}\n")
        return proc.pid

    def _wait(self, name: str, pid: int, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            if self.running(name) is None:
                raise ClusterError(
                    f"{name} exited during start; see its log "
                    f"{self.dir / 'logs' / f'{name}.log'}:\n{self._tail(name)}"
                )
            if time.monotonic() > deadline:
                self.stop(name)
                raise ClusterError(
                    f"{name} (pid {pid}) was not ready within "
                    f"{START_TIMEOUT_S:.0f}s; see {self.dir / 'logs'}:\n"
                    f"{self._tail(name)}"
                )
            time.sleep(0.3)

    def _tail(self, name: str, lines: int = 20) -> str:
        with contextlib.suppress(FileNotFoundError):
            text = (self.dir / "logs" / f"{name}.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def stop(self, name: str) -> int | None:
        """Stop part ``name`` by its PID (TERM, KILL after a grace period); its PID or None."""
        pid = self.running(name)
        if pid is not None:
            # PostgreSQL's "fast" shutdown; TERM would wait for every client to disconnect.
            sig = signal.SIGINT if name == "postgres" else signal.SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            with contextlib.suppress(psutil.NoSuchProcess):
                proc = psutil.Process(pid)
                try:
                    proc.wait(STOP_GRACE_S)
                except psutil.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        self._pid_file(name).unlink(missing_ok=True)
        return pid

    def worker_names(self) -> list[str]:
        """Workers with a PID file, running or not, in order."""
        names = [p.stem for p in self.dir.glob("worker-*.pid")]
        return sorted(names, key=lambda n: int(n.rsplit("-", 1)[1]))

    # -- up -------------------------------------------------------------------------------
    def up(self, workers: int, say: Callable[[str], None] = print) -> None:
        """Start every part not yet running (idempotent); keep exactly ``workers`` workers."""
        if workers < 1:
            raise ConfigError("--workers must be at least 1")
        # Others may pass through (PostgreSQL runs as its own account) but not list it.
        _mkdir(self.dir, 0o711)
        if self.own_postgres:
            self._up_postgres(say)
        if self.own_s3:
            self._up_s3(say)
        if self.own_scheduler:
            self._up_scheduler(say)
        for extra in self.worker_names()[workers:]:
            self._stop_worker(extra, say)
        started = [self._up_worker(f"worker-{i}", say) for i in range(1, workers + 1)]
        if any(started):
            self._wait_workers([f"worker-{i}" for i in range(1, workers + 1)])
        self.instance()  # creates the instance's tables once, before any worker races to

    def _already(self, name: str, say: Callable[[str], None]) -> bool:
        pid = self.running(name)
        if pid is not None:
            say(f"{name} already running (pid {pid})")
        return pid is not None

    def _free(self, name: str, port: int, setting: str) -> None:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                raise ClusterError(
                    f"{name}: 127.0.0.1:{port} is already in use; stop what "
                    f"listens there or set {setting} to a free port"
                )

    def _up_postgres(self, say: Callable[[str], None]) -> None:
        if self._already("postgres", say):
            return
        self._free("postgres", self.settings.postgres_port, "OPSLAKE_POSTGRES_PORT")
        bindir = _postgres_bindir()
        # PostgreSQL refuses to run as root: as root, its files and process belong to the
        # 'postgres' account the Debian package creates.
        user = "postgres" if os.geteuid() == 0 else None
        data = self.dir / "postgres"
        if not (data / "PG_VERSION").exists():
            self._initdb(bindir, data, user)
        cmd = [
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"port={self.settings.postgres_port}",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
        ]
        pid = self._spawn(
            "postgres", cmd, _base_env(), cwd=data, user=user, port=self.settings.postgres_port
        )
        self._wait("postgres", pid, self._postgres_ready)
        self._create_database()
        say(f"postgres started (pid {pid}) on 127.0.0.1:{self.settings.postgres_port}, data {data}")

    def _initdb(self, bindir: Path, data: Path, user: str | None) -> None:
        data.mkdir(parents=True, exist_ok=True)
        pwfile = data.parent / ".initdb-password"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self._pg_password() + "\n")
        try:
            if user:
                account = pwd.getpwnam(user)
                _check_reachable(data, account)
                for path in (data, pwfile):
                    os.chown(path, account.pw_uid, account.pw_gid)
            done = subprocess.run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    PG_USER,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
                user=user,
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            shutil.rmtree(data, ignore_errors=True)
            raise ClusterError(f"initdb failed ({done.returncode}): {done.stderr.strip()[-1500:]}")

    def _connect_postgres(self, database: str) -> connection:
        return psycopg2.connect(
            host="127.0.0.1",
            port=self.settings.postgres_port,
            user=PG_USER,
            password=self._pg_password(),
            dbname=database,
            connect_timeout=3,
        )

    def _postgres_ready(self) -> bool:
        try:
            self._connect_postgres("postgres").close()
        except psycopg2.OperationalError:
            return False
        return True

    def _create_database(self) -> None:
        con = self._connect_postgres("postgres")
        try:
            con.autocommit = True
            with con.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{PG_DATABASE}"')
        finally:
            con.close()

    def _up_s3(self, say: Callable[[str], None]) -> None:
        if self._already("s3", say):
            return
        port = self.settings.cluster_s3_port
        self._free("s3", port, "OPSLAKE_CLUSTER_S3_PORT")
        moto = Path(sys.executable).with_name("moto_server")
        if not moto.exists():
            raise ClusterError(
                f"{moto} is missing; install the project's lock (`make install`), "
                "which brings moto[server], or put the lake on S3 "
                "(OPSLAKE_HOME=s3://…, OPSLAKE_S3_ENDPOINT)"
            )
        cmd = [str(moto), "-H", "127.0.0.1", "-p", str(port)]
        scratch = _mkdir(self.dir / "s3")
        # moto keeps an object in memory up to this size and spools the rest of it to a
        # temporary file: objects live on disk, so its memory does not grow with the lake.
        env = _base_env() | {
            "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(MOTO_BUFFER_BYTES),
            "TMPDIR": str(_mkdir(scratch / "objects")),
        }
        pid = self._spawn("s3", cmd, env, cwd=scratch, port=port)
        self._wait("s3", pid, lambda: _http_ok(f"{self.s3_endpoint}/"))
        self._restore_bucket()
        say(f"s3 started (pid {pid}) at {self.s3_endpoint}, lake {self.lake_settings.home}")

    def _s3_fs(self) -> pafs.S3FileSystem:
        creds = {k: os.environ.get(k, v) for k, v in OWN_S3_CREDENTIALS.items()}
        return pafs.S3FileSystem(
            access_key=creds["AWS_ACCESS_KEY_ID"],
            secret_key=creds["AWS_SECRET_ACCESS_KEY"],
            endpoint_override=self.s3_endpoint.removeprefix("http://"),
            scheme="http",
            region=self.settings.s3_region,
            allow_bucket_creation=True,
        )

    @property
    def _snapshot(self) -> Path:
        """Where ``down`` keeps the bucket: the local S3 endpoint holds objects in memory."""
        return self.dir / "s3-snapshot"

    def _restore_bucket(self) -> None:
        fs = self._s3_fs()
        fs.create_dir(self.bucket)
        if self._snapshot.is_dir():
            pafs.copy_files(
                str(self._snapshot),
                self.bucket,
                source_filesystem=pafs.LocalFileSystem(),
                destination_filesystem=fs,
            )

    def _save_bucket(self) -> None:
        staged = self.dir / "s3-snapshot.new"
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir()
        pafs.copy_files(
            self.bucket,
            str(staged),
            source_filesystem=self._s3_fs(),
            destination_filesystem=pafs.LocalFileSystem(),
        )
        shutil.rmtree(self._snapshot, ignore_errors=True)
        staged.rename(self._snapshot)

    def _up_scheduler(self, say: Callable[[str], None]) -> None:
        if self._already("scheduler", say):
            return
        port = self.settings.dask_port
        self._free("scheduler", port, "OPSLAKE_DASK_PORT")
        cmd = [_dask(), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]
        env = _base_env() | {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": str(ALLOWED_FAILURES)}
        pid = self._spawn("scheduler", cmd, env, cwd=_mkdir(self.dir / "scheduler"), port=port)
        self._wait("scheduler", pid, lambda: _tcp_open("127.0.0.1", port))
        say(f"scheduler started (pid {pid}) at {self.scheduler}")

    def _up_worker(self, name: str, say: Callable[[str], None]) -> bool:
        """Start worker ``name``; False when it already runs."""
        if self._already(name, say):
            return False
        previous = self._record(name).get("scratch")
        if previous:
            shutil.rmtree(previous, ignore_errors=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"opslake-{name}-"))
        cmd = [
            _dask(),
            "worker",
            self.scheduler,
            "--name",
            name,
            "--nthreads",
            "1",
            "--no-nanny",
            "--no-dashboard",
            "--local-directory",
            str(scratch / "dask"),
        ]
        if self.own_scheduler:
            cmd += ["--host", "127.0.0.1"]
        pid = self._spawn(name, cmd, self._worker_env(scratch), cwd=scratch, scratch=str(scratch))
        say(f"{name} started (pid {pid}), scratch {scratch}")
        return True

    def _worker_env(self, scratch: Path) -> dict[str, str]:
        """Nothing of this machine but the code: the lake, the instance, a scratch directory."""
        # Dagster is not thread-safe, so one thread per worker; the settings (timezone,
        # catalog, …) travel, this process's state directory does not.
        passed = {
            k: v
            for k, v in os.environ.items()
            if k.startswith(("OPSLAKE_", "AWS_")) and k != "OPSLAKE_STATE_DIR"
        }
        env = (
            _base_env()
            | passed
            | self.environment()
            | {
                "HOME": str(scratch),
                "TMPDIR": str(scratch),
                "OPSLAKE_STATE_DIR": str(scratch / "state"),
                "DAGSTER_HOME": str(scratch / "dagster"),
                # The one data key of the installation: every worker seals fields alike.
                KEY_ENV: data_key(self.settings).hex(),
                PG_URL_ENV: self.postgres_url(),
            }
        )
        for sub in ("dagster", "state"):
            (scratch / sub).mkdir()
        return env

    def _wait_workers(self, names: Sequence[str]) -> None:
        """Until every worker of ``names`` has joined; one exiting fails the start."""
        deadline = time.monotonic() + START_TIMEOUT_S
        with self.client() as client:
            while True:
                joined = {
                    w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()
                }
                if set(names) <= joined:
                    return
                for name in names:
                    if self.running(name) is None:
                        raise ClusterError(
                            f"{name} exited during start; see "
                            f"{self.dir / 'logs' / f'{name}.log'}:\n"
                            f"{self._tail(name)}"
                        )
                if time.monotonic() > deadline:
                    raise ClusterError(
                        f"workers {sorted(set(names) - joined)} did not join "
                        f"{self.scheduler} within {START_TIMEOUT_S:.0f}s; see "
                        f"{self.dir / 'logs'}"
                    )
                time.sleep(0.3)

    # -- down -----------------------------------------------------------------------------
    def down(self, say: Callable[[str], None] = print) -> None:
        """Stop every part by its PID, workers first; PostgreSQL's data and the lake stay."""
        for name in self.worker_names():
            self._stop_worker(name, say)
        if self.running("s3") is not None:
            self._save_bucket()
            say(f"s3 bucket {self.bucket!r} saved to {self._snapshot} (restored by `up`)")
        for name in ("scheduler", "s3", "postgres"):
            pid = self.stop(name)
            if pid is not None:
                say(f"{name} stopped (pid {pid})")

    def _stop_worker(self, name: str, say: Callable[[str], None]) -> None:
        pid = self.stop(name)
        scratch = self._record(name).get("scratch")
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        (self.dir / f"{name}.json").unlink(missing_ok=True)
        if pid is not None:
            say(f"{name} stopped (pid {pid})")

    # -- status ---------------------------------------------------------------------------
    def status(self) -> list[Part]:
        """Each part: its PID, port and whether it answers."""
        parts = []
        if self.own_postgres:
            pid = self.running("postgres")
            ok = pid is not None and self._postgres_ready()
            parts.append(
                Part(
                    "postgres",
                    pid,
                    self.settings.postgres_port,
                    _health(pid, ok),
                    f"database {PG_DATABASE}",
                )
            )
        else:
            parts.append(Part("postgres", None, None, "external", "OPSLAKE_POSTGRES_URL"))
        if self.own_s3:
            pid = self.running("s3")
            ok = pid is not None and _http_ok(f"{self.s3_endpoint}/")
            parts.append(
                Part(
                    "s3",
                    pid,
                    self.settings.cluster_s3_port,
                    _health(pid, ok),
                    self.lake_settings.home,
                )
            )
        else:
            parts.append(Part("s3", None, None, "external", self.settings.home))
        pid = self.running("scheduler") if self.own_scheduler else None
        ports: dict[str, int] = {}  # worker name → its port, for the workers that joined
        answered = False
        if pid is not None or not self.own_scheduler:
            with contextlib.suppress(ClusterError), self.client(timeout=3) as client:
                for address, info in client.scheduler_info(n_workers=-1)["workers"].items():
                    ports[info["name"]] = int(address.rsplit(":", 1)[1])
                answered = True
        health = (
            _health(pid, answered)
            if self.own_scheduler
            else ("external" if answered else "not answering")
        )
        parts.append(
            Part(
                "scheduler",
                pid,
                self.settings.dask_port if self.own_scheduler else None,
                health,
                f"{self.scheduler}, {len(ports)} worker(s) joined",
            )
        )
        for name in self.worker_names():
            pid = self.running(name)
            parts.append(
                Part(
                    name,
                    pid,
                    ports.get(name),
                    _health(pid, name in ports),
                    "joined the scheduler" if name in ports else "not joined",
                )
            )
        return parts

    # -- running jobs ---------------------------------------------------------------------
    @contextlib.contextmanager
    def client(self, timeout: float = 10) -> Iterator[Client]:
        """A Dask client of the scheduler; a clear error when it does not answer."""
        from distributed import Client

        try:
            client = Client(self.scheduler, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(
                f"no Dask scheduler answers at {self.scheduler} ({exc}); start "
                "the cluster with `opslake cluster up --workers 2`"
            ) from exc
        try:
            yield client
        finally:
            client.close()

    def instance_home(self) -> Path:
        """The directory of the cluster instance's dagster.yaml (its ``DAGSTER_HOME``)."""
        home = _mkdir(self.dir / "dagster")
        # The URL (with its password) comes from ${PG_URL_ENV} in each process (this one,
        # every worker), never from the file; workers share no disk to keep step output on.
        runner.write_config(home, {"env": PG_URL_ENV}, step_logs=False)
        return home

    def instance(self) -> dg.DagsterInstance:
        """The cluster's Dagster instance (PostgreSQL), its dagster.yaml under the cluster dir."""
        home = self.instance_home()
        os.environ[PG_URL_ENV] = runner.prepare_database(self.settings, self.database_url()) or ""
        return dg.DagsterInstance.from_config(str(home))


def _mkdir(path: Path, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    return path


def _health(pid: int | None, ok: bool) -> str:
    if pid is None:
        return "stopped"
    return "up" if ok else "not answering"


#: Bytes of an S3 object moto holds in memory; beyond, the object is a temporary file.
MOTO_BUFFER_BYTES = 256 * 1024


def _base_env() -> dict[str, str]:
    """The little of this process's environment every part needs: the path and the locale."""
    return {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")} | {
        "PYTHONUNBUFFERED": "1"
    }


def _dask() -> str:
    return str(Path(sys.executable).with_name("dask"))


def _postgres_bindir() -> Path:
    """Where PostgreSQL's server programs are: on PATH, else Debian's versioned directory."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "postgres").exists():
            return bindir
    raise ClusterError(
        f"PostgreSQL is not installed (no initdb/postgres found); {INSTALL_HINT}, "
        "or point OPSLAKE_POSTGRES_URL at an existing server"
    )


def _check_reachable(path: Path, account: pwd.struct_passwd) -> None:
    """Fail early when ``account`` cannot reach ``path`` (a parent without search access)."""
    for parent in path.parents:
        st = parent.stat()
        if (
            st.st_uid == account.pw_uid
            or st.st_mode & 0o001
            or (st.st_gid == account.pw_gid and st.st_mode & 0o010)
        ):
            continue
        raise ClusterError(
            f"PostgreSQL runs as {account.pw_name!r}, which cannot enter {parent} "
            f"(mode {st.st_mode & 0o777:o}); run `chmod o+x {parent}` or set "
            "OPSLAKE_STATE_DIR to a directory it can reach"
        )


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


def _cmdline(proc: psutil.Process) -> list[str]:
    """The command line of ``proc``, read again for up to ``EXEC_GRACE_S`` while it is empty.

    A process in ``exec`` has closed its close-on-exec files (so ``Popen`` has returned) before
    the kernel sets up its new arguments: for that moment its command line reads empty, and
    a part just started, or one that ``status`` or ``down`` looked at then, would have seemed
    gone and lost its PID file (seen under load). Only kernel threads stay empty.
    """
    deadline = time.monotonic() + EXEC_GRACE_S
    while not (args := proc.cmdline()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return args


def _tcp_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class ClusterRuns:
    """Runs jobs on the cluster (a :data:`runner.RunDay`), noting who ran each step."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.settings = cluster.use_lake()
        self.steps: list[StepRun] = []
        self._open = contextlib.ExitStack()
        self._client = self._open.enter_context(cluster.client())
        self.instance = self._open.enter_context(cluster.instance())
        # The scheduler records its task stream only once asked for it.
        self._client.get_task_stream(count=0)
        self._names = self._worker_names()
        if not self._names:
            raise ClusterError(
                f"no worker has joined {cluster.scheduler}; start some with "
                "`opslake cluster up --workers 2`"
            )

    def _worker_names(self) -> dict[str, str]:
        info = self._client.scheduler_info(n_workers=-1)["workers"]
        return {address: w["name"] for address, w in info.items()}

    def __call__(
        self, job: str, day: str, keys: Sequence[dg.AssetKey] | None
    ) -> dg.JobExecutionResult:
        """Run ``job`` for ``day`` on the workers; each step is one Dask task."""
        recon = dg.build_reconstructable_job(cluster_job.__module__, cluster_job.__name__, (job,))
        run_config = {
            # No state_dir: each worker has its own.
            "resources": {"lake": {"config": {"home": self.settings.home}}},
            "execution": {"config": {"address": self.cluster.scheduler}},
        }
        started = time.time()
        result = dg.execute_job(
            recon,
            self.instance,
            run_config=run_config,
            tags={"dagster/partition": day},
            asset_selection=keys,
        )
        self._names |= self._worker_names()
        prefix = f"{TASK_PREFIX}/{result.run_id}/"
        for task in self._client.get_task_stream(start=started):
            if not str(task["key"]).startswith(prefix):
                continue
            compute = [s for s in task["startstops"] if s["action"] == "compute"]
            self.steps.append(
                StepRun(
                    day,
                    job,
                    str(task["key"]).removeprefix(prefix).rsplit("/", 1)[0],
                    self._names.get(task["worker"], task["worker"]),
                    sum(s["stop"] - s["start"] for s in compute),
                )
            )
        return result

    def close(self) -> None:
        """Disconnect from the scheduler and the instance."""
        self._open.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
