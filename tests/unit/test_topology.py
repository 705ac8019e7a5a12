"""Gold topology and log templates (opslake.kpi.topology) and the portal's tree of them."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pyarrow as pa

from opslake.api.topology import forest
from opslake.kpi.topology import (
    GOLD_RELATIONS_SCHEMA,
    LOG_TEMPLATES_SCHEMA,
    described_relations,
    log_templates,
    reachable,
    template,
)
from opslake.lake.schemas import ASSETS, LOGS, RELATIONS_SCHEMA

T0 = datetime(2026, 3, 2, 10, 5, tzinfo=UTC)


def _assets(*rows: dict) -> pa.Table:
    base = {n: None for n in ASSETS.names}
    return pa.Table.from_pylist([{**base, **r} for r in rows], schema=ASSETS)


def test_templates_mask_what_varies_and_keep_the_words() -> None:
    out = (
        pl.Series(
            [
                "login failed for user audit from 10.1.2.3:22",
                "request 3f2a9c1e-0b1d-4c5e-9a8b-7c6d5e4f3a2b took 35.5 ms",
                "EXT4-fs (dm-0): segfault at 0x7ffdeadbeef",
            ]
        )
        .to_frame("m")
        .select(template(pl.col("m")))["m"]
        .to_list()
    )
    assert out == [
        "login failed for user audit from <IP>",
        "request <UUID> took <NUM> ms",
        "EXT4-fs (dm-<NUM>): segfault at <HEX>",  # a digit inside a word stays
    ]


def test_relations_carry_both_ends_newest_version() -> None:
    assets = _assets(
        {"entity_id": "vm-1", "type": "vm", "department": "A", "valid_from": T0},
        {"entity_id": "vm-1", "type": "vm", "department": "B", "valid_from": T0.replace(hour=12)},
        {"entity_id": "host-1", "type": "host", "department": "C", "valid_from": T0},
    )
    edges = pa.Table.from_pylist(
        [
            {
                "src_entity_id": "vm-1",
                "relation": "runs_on",
                "dst_entity_id": "host-1",
                "valid_from": T0,
                "valid_to": None,
            },
            {
                "src_entity_id": "vm-1",
                "relation": "runs_on",
                "dst_entity_id": "gone",
                "valid_from": T0,
                "valid_to": T0,
            },
        ],
        schema=RELATIONS_SCHEMA,
    )
    out = described_relations(edges, assets)
    assert out.schema == GOLD_RELATIONS_SCHEMA
    rows = {r["dst_entity_id"]: r for r in out.to_pylist()}
    assert rows["host-1"]["src_department"] == "B" and rows["host-1"]["dst_department"] == "C"
    assert rows["gone"]["dst_type"] is None and rows["gone"]["valid_to"] == T0  # kept


def test_log_lines_are_counted_once_per_hour_and_template() -> None:
    base = {n: None for n in LOGS.names}
    lines = [
        {
            **base,
            "ts": T0,
            "entity_id": "vm-1",
            "host": "vm-1",
            "app": "sshd",
            "severity": 3,
            "message": "timeout for 10.0.0.1",
        },
        {
            **base,
            "ts": T0.replace(minute=40),
            "entity_id": "vm-1",
            "host": "vm-1",
            "app": "sshd",
            "severity": 3,
            "message": "timeout for 10.0.0.2",
        },
        {
            **base,
            "ts": T0.replace(hour=11),
            "entity_id": None,
            "host": "stray",
            "app": "sshd",
            "severity": 6,
            "message": "timeout for 10.0.0.3",
        },
    ]
    out = log_templates(
        pa.Table.from_pylist(lines, schema=LOGS),
        _assets({"entity_id": "vm-1", "type": "vm", "business": "tax", "valid_from": T0}),
    )
    assert out.schema == LOG_TEMPLATES_SCHEMA
    rows = out.to_pylist()
    assert [(r["entity_id"], r["count"], r["level"], r["business"]) for r in rows] == [
        ("vm-1", 2, "err", "tax"),
        (None, 1, "info", None),  # an unknown host is counted, not dropped
    ]
    assert (
        rows[0]["template"] == "timeout for <IP>" and rows[0]["example"] == "timeout for 10.0.0.1"
    )
    assert rows[0]["template_id"] == rows[1]["template_id"]


def test_reachable_goes_down_or_up_within_hops() -> None:
    edges = [("app", "svc"), ("svc", "vm"), ("vm", "host"), ("other", "vm")]
    assert reachable(edges, {"app"}, 2) == {"app", "svc", "vm"}
    assert reachable(edges, {"vm"}, 4, down=False) == {"vm", "svc", "app", "other"}


def test_the_portal_tree_groups_roots_by_business_with_the_worst_status() -> None:
    def node(entity_id: str, business: str | None, status: str | None) -> dict:
        health = {"status": status, "health_score": 50.0} if status else None
        return {
            "entity_id": entity_id,
            "name": entity_id,
            "type": "",
            "business": business,
            "health": health,
        }

    graph = {
        "nodes": [
            node("app", "tax", "healthy"),
            node("svc", "tax", "degraded"),
            node("vm", None, None),
            node("fw", None, "healthy"),
        ],
        "edges": [{"src": "app", "dst": "svc"}, {"src": "svc", "dst": "vm"}],
    }
    groups = forest(graph)
    assert [(name, status) for name, status, _ in groups] == [("tax", "degraded"), ("—", "healthy")]
    app = groups[0][2][0]
    assert app.children[0].entity_id == "svc" and app.children[0].children[0].status == "unknown"
