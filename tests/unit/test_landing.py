"""Landing durability: atomic objects, manifest rows, duplicate deliveries, crash safety."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from opslake.errors import InputError, StorageError
from opslake.lake.landing import LandingZone
from opslake.lake.storage import STAGING


def test_write_records_manifest_row(landing: LandingZone) -> None:
    received = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    batch = landing.write("syslog", b"<13>1 - - - - - - hi\n", fmt="log", received_at=received)
    assert batch.dt == "2026-03-02"
    assert batch.bytes == 21
    assert batch.sha256 == hashlib.sha256(b"<13>1 - - - - - - hi\n").hexdigest()
    assert landing.batches("syslog", "2026-03-02") == [batch]
    assert landing.read(batch) == b"<13>1 - - - - - - hi\n"
    assert Path(batch.path).name == f"{batch.batch_id}.log"


def test_same_content_or_batch_id_is_not_landed_twice(landing: LandingZone) -> None:
    first = landing.write("probes", b'{"a":1}\n', fmt="json", dt="2026-03-02")
    again = landing.write("probes", iter([b'{"a"', b":1}\n"]), fmt="json", dt="2026-03-02")
    assert again.duplicate and again.batch_id == first.batch_id
    named = landing.write("probes", b"x", fmt="json", dt="2026-03-02", batch_id="b-1")
    retried = landing.write("probes", b"x", fmt="json", dt="2026-03-02", batch_id="b-1")
    assert not named.duplicate and retried.duplicate
    assert len(landing.batches("probes", "2026-03-02")) == 2
    assert not list(Path(landing.lake.path(STAGING)).glob("*")), (
        "duplicates leave no staged objects behind"
    )


def test_a_redelivery_after_midnight_lands_once_within_the_window(landing: LandingZone) -> None:
    """De-duplication looks back ``dedupe_days``, not only at the day of the redelivery."""
    night = datetime(2026, 3, 2, 23, 59, 59, tzinfo=UTC)
    first = landing.write(
        "alertmanager", b'{"alerts":[]}', fmt="json", batch_id="am-7", received_at=night
    )
    for later in (night.replace(day=3, hour=0, minute=0, second=1), night.replace(day=9)):
        again = landing.write(
            "alertmanager", b'{"alerts":[]}', fmt="json", batch_id="am-7", received_at=later
        )
        assert again.duplicate and again.dt == first.dt == "2026-03-02"
    by_content = landing.write(
        "alertmanager", b'{"alerts":[]}', fmt="json", received_at=night.replace(day=5)
    )
    assert not by_content.duplicate, "the content hash is another batch id than am-7"
    assert landing.write(
        "alertmanager", b'{"alerts":[]}', fmt="json", received_at=night.replace(day=6)
    ).duplicate
    # Past the window (7 days back from the 10th is the 3rd) the id is new again.
    past = landing.write(
        "alertmanager",
        b'{"alerts":[]}',
        fmt="json",
        batch_id="am-7",
        received_at=night.replace(day=10),
    )
    assert not past.duplicate and past.dt == "2026-03-10"
    narrow = LandingZone(landing.lake, dedupe_days=0)
    assert not narrow.write(
        "alertmanager", b"{}", fmt="json", batch_id="am-7", received_at=night.replace(day=11)
    ).duplicate
    with pytest.raises(InputError, match="YYYY-MM-DD"):
        landing.write("alertmanager", b"{}", fmt="json", dt="2026-02-30")


def test_bad_names_are_refused_with_the_fix(landing: LandingZone) -> None:
    with pytest.raises(InputError, match="lower-case"):
        landing.write("Bad Source", b"x", fmt="log")
    with pytest.raises(InputError, match="batch id"):
        landing.write("syslog", b"x", fmt="log", batch_id="../escape")


def test_tampered_object_is_detected(landing: LandingZone) -> None:
    batch = landing.write("syslog", b"line\n", fmt="log", dt="2026-03-02")
    Path(batch.path).write_bytes(b"LINE\n")
    with pytest.raises(StorageError, match="checksum"):
        landing.read(batch)


def test_sigkill_mid_write_leaves_no_partial_file_and_no_manifest_row(
    landing: LandingZone, tmp_path: Path
) -> None:
    """A writer killed while streaming a batch leaves nothing a reader can see."""
    script = textwrap.dedent("""
        import sys, time
        from opslake.lake.landing import LandingZone
        from opslake.lake.storage import Lake
        from opslake.settings import Settings
        zone = LandingZone(Lake.from_settings(Settings.from_env()))
        def chunks():
            for _ in range(10_000):
                yield b"x" * 65536
                sys.stdout.write("."); sys.stdout.flush()
                time.sleep(0.01)
        zone.write("prometheus", chunks(), fmt="prom", dt="2026-03-02", batch_id="killed")
    """)
    env = {**os.environ, "OPSLAKE_HOME": landing.lake.root}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.read(20)  # the writer is now mid-stream
    staging = Path(landing.lake.path(STAGING))
    assert any(staging.glob("*.part")), "the partial bytes are staged, not in place"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    assert landing.batches("prometheus", "2026-03-02") == []
    landed = Path(landing.lake.path("landing", "source=prometheus"))
    assert not landed.exists() or not any(p.is_file() for p in landed.rglob("*"))
    # The writer is gone, so its staged object goes at once, however young it is.
    assert landing.lake.sweep_staged() == 1
    assert not any(staging.glob("*.part"))
    # The source retries the same batch; it lands whole.
    again = landing.write(
        "prometheus", b"complete\n", fmt="prom", dt="2026-03-02", batch_id="killed"
    )
    assert not again.duplicate and landing.read(again) == b"complete\n"
