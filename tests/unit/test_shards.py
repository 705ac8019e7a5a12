"""Day × shard helpers: stable shard choice, part files, shard states, merging validators."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from opslake.errors import StorageError
from opslake.lake.schemas import QUARANTINE
from opslake.lake.shards import (
    drop_states,
    load_state,
    part_name,
    require_parts,
    save_state,
    shard_of,
)
from opslake.lake.storage import Lake
from opslake.quality.suites import Check, Suite
from opslake.quality.validate import Context, TableValidator
from opslake.settings import Settings


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake.from_settings(Settings.from_env({"OPSLAKE_HOME": str(tmp_path / "lake")}))


def test_the_shard_of_a_key_is_its_crc32_and_nulls_share_one() -> None:
    keys = pa.chunked_array([["vm-1", None, "host-9"], ["vm-1", "db-3"]])
    got = shard_of(keys, 7)
    assert got.tolist() == [
        zlib.crc32(k.encode()) % 7 for k in ("vm-1", "", "host-9", "vm-1", "db-3")
    ]
    assert shard_of(keys, 1).tolist() == [0] * 5
    spread = shard_of(pa.array([f"vm-{i}" for i in range(400)]), 4)
    assert sorted(set(spread.tolist())) == [0, 1, 2, 3]
    assert min((spread == s).sum() for s in range(4)) > 60


def test_one_shards_part_leaves_the_others_and_pruning_drops_strays(lake: Lake) -> None:
    schema = pa.schema([("x", pa.int64())])
    for shard in (0, 1, 2):
        lake.write_parts(
            "silver",
            "t",
            {"dt": "2026-03-02"},
            [(part_name(shard), pa.table({"x": [shard]}, schema))],
            schema,
            prune=False,
        )
    assert lake.read_table("silver", "t", part="part-1").column("x").to_pylist() == [1]
    assert sorted(lake.read_table("silver", "t").column("x").to_pylist()) == [0, 1, 2]
    require_parts(lake, "silver", "t", "2026-03-02", 3)
    with pytest.raises(StorageError, match="written in 3 shard.*OPSLAKE_SHARDS is 2"):
        require_parts(lake, "silver", "t", "2026-03-02", 2)
    lake.prune_parts("silver", "t", {"dt": "2026-03-02"}, {"part-0.parquet", "part-1.parquet"})
    assert sorted(lake.read_table("silver", "t").column("x").to_pylist()) == [0, 1]
    # An unwritten day is no mismatch: the shard steps are about to write it.
    require_parts(lake, "silver", "t", "2026-03-03", 2)


def test_a_shard_state_round_trips_and_a_missing_one_names_the_fix(lake: Lake) -> None:
    rows = pa.table(
        {
            "source": ["s"],
            "batch_id": ["b"],
            "line_no": [3],
            "raw": ["x"],
            "reason": ["bad"],
            "received_at": [datetime(2026, 3, 2, tzinfo=UTC)],
            "sender": ["k1"],
        },
        QUARANTINE,
    )
    save_state(lake, "silver", "t", "2026-03-02", 1, {"metadata": {"rows": 5}}, rows)
    figures, back = load_state(lake, "silver", "t", "2026-03-02", 1)
    assert figures == {"metadata": {"rows": 5}} and back.equals(rows)
    with pytest.raises(StorageError, match="shard 0 of silver/t dt=2026-03-02 has not run"):
        load_state(lake, "silver", "t", "2026-03-02", 0)
    drop_states(lake, "silver", "t", "2026-03-02")
    with pytest.raises(StorageError):
        load_state(lake, "silver", "t", "2026-03-02", 1)
    # States live beside the tables: no reader of the day ever lists them.
    assert not lake.list_files(lake.table_path("silver", "t"), recursive=True)


def test_validators_of_the_shards_merge_into_the_whole_days() -> None:
    suite = Suite(
        "silver",
        "t",
        "ts",
        (
            Check("value_present", "not_null", column="value"),
            Check("value_sane", "range", column="value", min=0, max=100, severity="warn"),
        ),
    )
    schema = pa.schema([("ts", pa.timestamp("us", "UTC")), ("value", pa.float64())])
    day = pa.table(
        {
            "ts": [datetime(2026, 3, 2, h, tzinfo=UTC) for h in range(6)],
            "value": [1.0, None, 150.0, 4.0, None, 6.0],
        },
        schema,
    )

    def validator() -> TableValidator:
        return TableValidator(
            suite,
            schema,
            Context(cmdb=None, history_rows=[], parse=[], end=datetime(2026, 3, 3, tzinfo=UTC)),
        )

    whole = validator()
    whole.chunk(day)
    merged = validator()
    for part in (day.slice(0, 3), day.slice(3)):
        shard = validator()
        shard.chunk(part)
        rows = pa.concat_tables([QUARANTINE.empty_table(), *shard.quarantined])
        merged.absorb(shard.figures(), shard.observed_schema, rows)
    assert merged.rows == whole.rows == 4
    assert merged.newest == whole.newest
    assert sum(t.num_rows for t in merged.quarantined) == 2
    strip = [(r.check, r.passed, r.observed, r.unexpected_rows) for r in whole.finish()]
    assert [(r.check, r.passed, r.observed, r.unexpected_rows) for r in merged.finish()] == strip
