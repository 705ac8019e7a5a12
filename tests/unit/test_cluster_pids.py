"""How `opslake cluster` tells its own parts by PID: real processes, one moment faked.

The whole cluster (scheduler, workers, PostgreSQL, S3) runs in tests/integration/test_cluster.py;
here a plain ``sleep`` stands for a part.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from opslake.orchestration.cluster import Cluster
from opslake.settings import Settings

PART = "worker-1"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(Settings(state_dir=tmp_path / "state", home=str(tmp_path / "lake")))
    cluster.dir.mkdir(parents=True)
    yield cluster
    cluster.stop(PART)


def _start(cluster: Cluster) -> int:
    cmd = [sys.executable, "-c", "import time; time.sleep(60)"]
    return cluster._spawn(PART, cmd, env={}, cwd=cluster.dir)


def test_a_running_part_is_found_and_a_stopped_one_is_not(cluster: Cluster) -> None:
    pid = _start(cluster)
    assert cluster.running(PART) == pid
    assert cluster.stop(PART) == pid
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert cluster.running(PART) is None
    assert not cluster._pid_file(PART).exists()


def test_a_part_caught_in_exec_is_still_running(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its command line reads empty for a moment: the PID file stays and the PID is found."""
    pid = _start(cluster)
    real = psutil.Process.cmdline
    reads: list[int] = []

    def mid_exec(self: psutil.Process) -> list[str]:
        reads.append(self.pid)
        return [] if len(reads) < 3 else real(self)

    monkeypatch.setattr(psutil.Process, "cmdline", mid_exec)
    assert cluster.running(PART) == pid
    assert len(reads) == 3
    assert cluster._pid_file(PART).read_text().strip() == str(pid)


def test_a_pid_taken_by_another_program_is_not_the_part(cluster: Cluster) -> None:
    """A PID file naming a process with another command line is stale: removed, not obeyed."""
    pid = _start(cluster)
    other = psutil.Popen([sys.executable, "-c", "import time; time.sleep(60)", "other"])
    try:
        cluster._pid_file(PART).write_text(f"{other.pid}\n")
        assert cluster.running(PART) is None
        assert not cluster._pid_file(PART).exists()
        assert other.is_running()  # not ours: left alone
    finally:
        other.kill()
        other.wait()
        cluster._pid_file(PART).write_text(f"{pid}\n")
