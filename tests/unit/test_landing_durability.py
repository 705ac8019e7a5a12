"""Landing's local writes: directories it creates are durable, short writes are completed.

The lean local write path (plain descriptors, directories made only when missing) must keep
what the buffered one guaranteed: every byte reaches the object, and an object's directory
survives a crash once its batch is acknowledged, including the directory of a new day.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from opslake.lake import storage
from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake

BODY = b"".join(b'node_load1{host="vm-%03d"} %d\n' % (i, i) for i in range(400))


@pytest.fixture
def landing(tmp_path: Path) -> LandingZone:
    return LandingZone(Lake(storage.pafs.LocalFileSystem(), str(tmp_path / "lake"), local=True))


def test_a_new_day_directory_is_fsynced_in_its_parent(
    landing: LandingZone, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real = storage.fsync_dir
    monkeypatch.setattr(storage, "fsync_dir", lambda d: (synced.append(str(d)), real(d))[1])
    batch = landing.write("prometheus", BODY, fmt="prom", dt="2026-12-07")
    day = os.path.dirname(batch.path)
    manifest_day = os.path.dirname(landing._manifest_path("prometheus", "2026-12-07", "x"))
    for new in (day, manifest_day):
        # The rename is made durable in the day's directory, and the day's directory (and
        # the source's above it) in the directory that holds it.
        assert new in synced
        assert os.path.dirname(new) in synced
        assert os.path.dirname(os.path.dirname(new)) in synced
    synced.clear()
    landing.write("prometheus", BODY + b"x 1\n", fmt="prom", dt="2026-12-07")
    assert sorted(synced) == sorted([day, manifest_day]), "an existing day costs one fsync each"


def test_short_writes_are_completed(landing: LandingZone, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.write
    monkeypatch.setattr(storage.os, "write", lambda fd, data: real(fd, bytes(data[:7])))
    batch = landing.write("prometheus", [BODY[:1000], memoryview(BODY[1000:])], fmt="prom")
    assert landing.read(batch) == BODY
    assert batch.bytes == len(BODY)
