"""Start real services for tests on loopback and stop them by PID."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import psutil


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


@contextlib.contextmanager
def running(cmd: Sequence[str], ready_url: str, log: Path, env: dict[str, str] | None = None,
            timeout: float = 60.0) -> Iterator[subprocess.Popen]:
    """Run ``cmd`` in its own process group until the block ends; its PID group is killed."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env)
        try:
            try:
                wait_http(ready_url, timeout)
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


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``4m``) mounted at ``path`` (as root), unmounted afterwards."""
    import pytest

    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                              str(path)], check=False, capture_output=True, text=True)
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


def services_sh(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``infra/services.sh`` (start/stop/status/… of the real services)."""
    return subprocess.run(["bash", str(REPO / "infra" / "services.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def pid_running(pid: int) -> bool:
    """True while ``pid`` runs; an exited process not yet reaped (a zombie) does not count."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def install_services() -> None:
    """Run ``infra/install-services.sh``; a failed install fails the test, never skips it."""
    install = subprocess.run(["bash", str(REPO / "infra" / "install-services.sh")],
                             capture_output=True, text=True, timeout=900, check=False)
    assert install.returncode == 0, (f"infra/install-services.sh failed ({install.returncode}):"
                                     f"\n{install.stdout[-3000:]}\n{install.stderr[-3000:]}")


def chromium_screenshot(page: Path, shot: Path, *, width: int = 1400, height: int = 2000
                        ) -> Path:
    """Render a local page in real headless Chromium (installed by infra) into a PNG.

    Fails, never skips, when Chromium is missing or writes nothing.
    """
    install_services()
    chromium = shutil.which("chromium")
    assert chromium, ("chromium is not installed although infra/install-services.sh ran; "
                      "install the Debian package 'chromium' (apt-get install chromium)")
    profile = shot.parent / f".{shot.stem}-chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--no-first-run",
           f"--user-data-dir={profile}", f"--window-size={width},{height}",
           "--virtual-time-budget=3000", f"--screenshot={shot}", f"file://{page}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=shot.parent)
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
