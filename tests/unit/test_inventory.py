"""``opslake status`` groupings: partitions summed per table or per layer."""

from __future__ import annotations

from opslake.lake.inventory import PartitionStatus, rolled_up

PARTS = [
    PartitionStatus("landing", "cmdb", "2026-03-02", 1, 1, 10),
    PartitionStatus("landing", "cmdb", "2026-03-03", 2, 2, 20),
    PartitionStatus("landing", "itsm", "2026-03-03", 1, 1, 5),
    PartitionStatus("silver", "assets", "2026-03-02", 1, 100, 1000),
]


def test_per_table_sums_the_days_and_names_their_span() -> None:
    assert rolled_up(PARTS, "table") == [
        ("landing", "cmdb", "2026-03-02 … 2026-03-03 (2)", 3, 3, 30),
        ("landing", "itsm", "2026-03-03", 1, 1, 5),
        ("silver", "assets", "2026-03-02", 1, 100, 1000),
    ]


def test_per_layer_counts_the_tables_and_per_day_keeps_every_partition() -> None:
    assert rolled_up(PARTS, "layer") == [
        ("landing", "2 tables", "2026-03-02 … 2026-03-03 (2)", 4, 4, 35),
        ("silver", "1 tables", "2026-03-02", 1, 100, 1000),
    ]
    assert len(rolled_up(PARTS, "day")) == len(PARTS)
