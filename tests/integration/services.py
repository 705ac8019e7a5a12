"""Start real services for tests on loopback and stop them by PID."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path

import psutil

from opslake.settings import Settings


def free_port() -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0) -> None:
    """Wait until ``url`` answers with any HTTP status."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout:.0f}s") from None
            time.sleep(0.3)


def wait_tcp(port: int, timeout: float = 60.0) -> None:
    """Wait until ``127.0.0.1:port`` accepts a TCP connection."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"port {port} did not accept within {timeout:.0f}s")
        time.sleep(0.3)


@contextlib.contextmanager
def running(
    cmd: Sequence[str],
    ready: str | int,
    log: Path,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` in its own process group until the block ends; its PID group is killed.

    It is ready once ``ready`` answers: a URL (any HTTP status) or a port (TCP accepts).
    """
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            list(cmd), stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        try:
            try:
                if isinstance(ready, str):
                    wait_http(ready, timeout)
                else:
                    wait_tcp(ready, timeout)
            except TimeoutError:
                raise TimeoutError(f"{cmd[0]} not ready: {log.read_text()[-2000:]}") from None
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


REPO = Path(__file__).resolve().parents[2]


class Background:
    """``work`` running in a thread from now on (a slow start beside other set-up)."""

    def __init__(self, work: Callable[[], object]) -> None:
        self._failure: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(work,))
        self.thread.start()

    def _run(self, work: Callable[[], object]) -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - re-raised by join() in the test thread
            self._failure.append(exc)

    def join(self) -> None:
        """Wait for ``work`` to end; raise what it raised."""
        self.thread.join()
        if self._failure:
            raise self._failure[0]


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``4m``) mounted at ``path`` (as root), unmounted afterwards."""
    import pytest

    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        check=False,
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(directory: Path) -> Path:
    """Write a file into ``directory`` until its disk is full; the file."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler


@contextlib.contextmanager
def moto_s3(log: Path, bucket: str = "opslake") -> Iterator[str]:
    """A moto S3 server on loopback with ``bucket``; its endpoint URL.

    The caller sets ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (any values).
    """
    import sys

    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = Path(sys.executable).with_name("moto_server")
    with running([str(moto), "-H", "127.0.0.1", "-p", str(port)], f"{endpoint}/", log):
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket=bucket
        )
        yield endpoint


class Gate:
    """A TCP forwarder on loopback to ``target_port`` that can be cut and restored.

    Cut, it closes its listening socket and every open connection, so clients meet a refused
    connection as when the service behind it is down; the service itself keeps its state.
    """

    def __init__(self, target_port: int) -> None:
        self.target, self.port = target_port, free_port()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def up(self) -> None:
        """Accept and forward connections."""
        listener = socket.create_server(("127.0.0.1", self.port))
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and drop the open ones."""
        listener, self._listener = self._listener, None
        if listener is not None:
            # Shut down first: a close alone leaves it listening while accept() blocks on it.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            server = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                self._open |= {client, server}
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(1 << 16):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def services_sh(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``infra/services.sh`` (start/stop/status/… of the real services)."""
    return subprocess.run(
        ["bash", str(REPO / "infra" / "services.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def pid_running(pid: int) -> bool:
    """True while ``pid`` runs; an exited process not yet reaped (a zombie) does not count."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _install(script: str, timeout: int) -> None:
    """Run ``infra/<script>``; a failed install fails the test, never skips it."""
    install = subprocess.run(
        ["bash", str(REPO / "infra" / script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert install.returncode == 0, (
        f"infra/{script} failed ({install.returncode}):"
        f"\n{install.stdout[-3000:]}\n{install.stderr[-3000:]}"
    )


def install_services() -> None:
    """The Debian packages of the real services, Chromium and PostgreSQL among them."""
    _install("install-services.sh", 900)


def install_superset() -> None:
    """Superset in its own venv."""
    _install("install-superset.sh", 1800)


@contextlib.contextmanager
def headless_chromium() -> Iterator[object]:
    """Debian's Chromium, headless through Playwright, until the block ends (tests open a
    fresh context, so no cookies, for each sign-in)."""
    from playwright.sync_api import sync_playwright

    from opslake.screens import browser

    with sync_playwright() as pw:
        launched = browser.launch(pw)
        try:
            yield launched
        finally:
            launched.close()


def chromium_screenshot(page: Path, shot: Path, *, width: int = 1400, height: int = 2000) -> Path:
    """Render a local page in real headless Chromium (installed by infra) into a PNG.

    Fails, never skips, when Chromium is missing or writes nothing.
    """
    install_services()
    chromium = shutil.which("chromium")
    assert chromium, (
        "chromium is not installed although infra/install-services.sh ran; "
        "install the Debian package 'chromium' (apt-get install chromium)"
    )
    profile = shot.parent / f".{shot.stem}-chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        "--virtual-time-budget=3000",
        f"--screenshot={shot}",
        f"file://{page}",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=shot.parent,
    )
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        # chromium leaves helpers (crashpad, zygote) in its session: end that group only
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if proc.poll() is None:
            proc.wait()
    log = out.decode(errors="replace")[-3000:]
    assert proc.returncode == 0, f"chromium exited {proc.returncode}:\n{log}"
    assert shot.exists(), f"chromium wrote no screenshot:\n{log}"
    return shot


def watch_itself(settings: Settings, at: datetime) -> None:
    """One run at ``at`` of the shipped ``opslake-self`` collection task against a data
    service that does not answer: the platform's own figures and its ``ApiUnreachable``
    alert land as they would that minute (for a simulated day's 平台自身运行 screen)."""
    from opslake.ingest import collect
    from opslake.ingest.tasks import load_tasks

    [task] = [t for t in load_tasks(REPO / "collection" / "tasks") if t.name == "opslake-self"]
    task = dataclasses.replace(task, params={"api_url": f"http://127.0.0.1:{free_port()}"})
    result = collect.run_task(task, settings, at)
    assert result.record is not None and result.record.ok, result.record
