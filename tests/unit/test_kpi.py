"""Gold KPIs (S5.2c rollups, S5.2e health, S5.3 service levels) on hand-built silver tables."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from opslake.errors import InputError
from opslake.kpi.health import (
    BUSINESS_HEALTH_SCHEMA,
    ENTITY_HEALTH_SCHEMA,
    STALENESS_PENALTY,
    business_health,
    entity_health,
)
from opslake.kpi.rollups import EVERY_US, ROLLUP_SCHEMA, rollup
from opslake.kpi.service_levels import SERVICE_LEVELS_SCHEMA, service_levels
from opslake.lake.schemas import ASSETS, EVENTS, METRIC_POINTS, TICKETS

DAY = date(2026, 11, 24)
T0 = datetime(2026, 11, 24, tzinfo=UTC)


def at(hours: float = 0, minutes: float = 0) -> datetime:
    return T0 + timedelta(hours=hours, minutes=minutes)


def table(schema: pa.Schema, rows: list[dict]) -> pa.Table:
    """A silver table from partial rows: missing columns are null."""
    return pa.Table.from_pylist([{n: r.get(n) for n in schema.names} for r in rows], schema=schema)


def parquet_bytes(t: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(t, sink)
    return sink.getvalue()


# --- rollups ---------------------------------------------------------------------------


def points(
    ts_us: np.ndarray, metric: np.ndarray, entity: np.ndarray, value: np.ndarray
) -> pa.Table:
    n = len(ts_us)
    return pa.table(
        {
            "ts": pa.array(ts_us, pa.timestamp("us", tz="UTC")),
            "metric": pa.array(metric, pa.string()),
            "entity_id": pa.array(entity, pa.string()),
            "value": pa.array(value, pa.float64()),
            "labels": pa.array([[]] * n, METRIC_POINTS.field("labels").type),
            "source": pa.array(["prometheus"] * n),
            "batch_id": pa.array(["b1"] * n),
        },
        schema=METRIC_POINTS,
    )


def random_points(n: int, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    start = int(T0.timestamp() * 1_000_000)
    return points(
        start + rng.integers(0, 86_400_000_000, n),
        rng.choice(["cpu_ratio", "mem_ratio", "disk_io_bytes"], n),
        rng.choice(["vm-0001", "vm-0002", "app-tax", "fw-01"], n),
        rng.normal(0.5, 0.2, n),
    )


@pytest.mark.parametrize("every", list(EVERY_US))
def test_rollup_matches_a_straightforward_computation(every: str) -> None:
    pts = random_points(20_000)
    got = pl.from_arrow(rollup(pts, every))
    width = EVERY_US[every]
    v = pl.col("value")
    want = (
        pl.from_arrow(pts.select(["ts", "metric", "entity_id", "value"]))
        .with_columns(
            bucket_start=pl.from_epoch(
                (pl.col("ts").dt.epoch("us") // width) * width, "us"
            ).dt.replace_time_zone("UTC")
        )
        .group_by(["bucket_start", "metric", "entity_id"])
        .agg(
            samples=pl.len(),
            min=v.min(),
            max=v.max(),
            avg=v.mean(),
            last=v.sort_by("ts").last(),
            p95=v.quantile(0.95, interpolation="linear"),
        )
    )
    assert got.height == want.height
    both = got.join(want, on=["bucket_start", "metric", "entity_id"], suffix="_want")
    assert both.height == want.height
    assert both["samples"].to_list() == both["samples_want"].to_list()
    for col in ("min", "max", "avg", "last", "p95"):
        np.testing.assert_allclose(
            both[col].to_numpy(),
            both[f"{col}_want"].to_numpy(),
            rtol=1e-12,
            atol=1e-12,
            err_msg=col,
        )
    # numpy's percentile is the definition the module documents for p95.
    one = pl.from_arrow(pts).filter(
        (pl.col("metric") == "cpu_ratio") & (pl.col("entity_id") == "vm-0001")
    )
    first = (
        both.sort("bucket_start")
        .filter((pl.col("metric") == "cpu_ratio") & (pl.col("entity_id") == "vm-0001"))
        .row(0, named=True)
    )
    bucket_end = first["bucket_start"] + timedelta(microseconds=width)
    values = one.filter(pl.col("ts") < bucket_end)["value"].to_numpy()
    assert first["p95"] == pytest.approx(np.percentile(values, 95), rel=1e-12)


def test_rollup_schema_and_sort_order() -> None:
    got = rollup(random_points(5_000), "1h")
    assert got.schema == ROLLUP_SCHEMA
    df = pl.from_arrow(got)
    assert df.equals(df.sort(["metric", "entity_id", "bucket_start"]))


def test_rollup_bucket_boundaries() -> None:
    us = int(T0.timestamp() * 1_000_000)
    five_min = 300_000_000
    pts = points(
        np.array([us, us + five_min - 1, us + five_min, us + 86_400_000_000 - 1]),
        np.array(["cpu_ratio"] * 4),
        np.array(["vm-1"] * 4),
        np.array([1.0, 2.0, 3.0, 4.0]),
    )
    got = rollup(pts, "5m").to_pydict()
    assert got["bucket_start"] == [at(0), at(0, 5), at(23, 55)]
    assert got["samples"] == [2, 1, 1]
    assert got["last"] == [2.0, 3.0, 4.0]
    day = rollup(pts, "1d").to_pydict()
    assert day["bucket_start"] == [T0] and day["samples"] == [4] and day["avg"] == [2.5]


def test_rollup_last_on_a_tie_and_null_values() -> None:
    us = int(T0.timestamp() * 1_000_000)
    pts = points(
        np.array([us, us + 10, us + 10, us + 20, us + 30]),
        np.array(["m"] * 5),
        np.array(["e"] * 5),
        np.array([5.0, 1.0, 9.0, np.nan, 0.0]),
    )
    pts = pts.set_column(3, "value", pa.array([5.0, 1.0, 9.0, np.nan, None], pa.float64()))
    got = rollup(pts, "1m").to_pylist()
    # NaN and null are not samples; of the two points at the latest ts the greater is last.
    assert len(got) == 1
    assert got[0]["samples"] == 3 and got[0]["last"] == 9.0
    assert got[0]["min"] == 1.0 and got[0]["max"] == 9.0 and got[0]["avg"] == 5.0


def test_rollup_keeps_points_without_an_entity() -> None:
    us = int(T0.timestamp() * 1_000_000)
    pts = points(
        np.array([us, us]), np.array(["m", "m"]), np.array(["e", None]), np.array([1.0, 2.0])
    )
    got = rollup(pts, "1h").to_pydict()
    assert got["entity_id"] == ["e", None] and got["avg"] == [1.0, 2.0]


def test_rollup_is_deterministic_whatever_the_input_order() -> None:
    pts = random_points(10_000)
    shuffled = pts.take(np.random.default_rng(1).permutation(pts.num_rows))
    first = rollup(pts, "5m")
    assert first.equals(rollup(pts, "5m"))
    assert parquet_bytes(first) == parquet_bytes(rollup(shuffled, "5m"))


def test_rollup_empty_and_bad_interval() -> None:
    assert rollup(METRIC_POINTS.empty_table(), "1m").schema == ROLLUP_SCHEMA
    assert rollup(METRIC_POINTS.empty_table(), "1m").num_rows == 0
    with pytest.raises(InputError, match="1m, 5m, 1h, 1d"):
        rollup(METRIC_POINTS.empty_table(), "2h")


# --- health ----------------------------------------------------------------------------


def asset(entity_id: str, business: str = "tax", **over) -> dict:
    row = {
        "entity_id": entity_id,
        "kind": "cloud",
        "type": "vm",
        "name": entity_id,
        "department": "finance",
        "business": business,
        "lifecycle_state": "in_service",
        "valid_from": T0 - timedelta(days=30),
        "valid_to": None,
    }
    return row | over


def hourly(entity_id: str, hours: range, metric: str = "cpu_ratio", p95: float = 0.3) -> list:
    return [
        {
            "bucket_start": at(h),
            "metric": metric,
            "entity_id": entity_id,
            "samples": 60,
            "min": 0.1,
            "max": p95,
            "avg": 0.2,
            "last": 0.2,
            "p95": p95,
        }
        for h in hours
    ]


def alert(
    entity_id: str,
    status: str,
    starts: datetime,
    severity: str = "critical",
    fingerprint: str = "fp1",
    ends: datetime | None = None,
) -> dict:
    return {
        "event_id": f"{fingerprint}-{status}-{starts.isoformat()}",
        "fingerprint": fingerprint,
        "source": "alertmanager",
        "status": status,
        "severity": severity,
        "title": "t",
        "entity_id": entity_id,
        "starts_at": starts,
        "ends_at": ends,
        "received_at": ends or starts,
        "batch_id": "b",
    }


def health(events: list[dict], rollup_rows: list[dict], assets: list[dict]) -> pl.DataFrame:
    got = entity_health(
        table(EVENTS, events), table(ROLLUP_SCHEMA, rollup_rows), table(ASSETS, assets), DAY
    )
    assert got.schema == ENTITY_HEALTH_SCHEMA
    return pl.from_arrow(got)


def scores(df: pl.DataFrame, entity_id: str) -> list[float]:
    return df.filter(pl.col("entity_id") == entity_id).sort("hour")["health_score"].to_list()


def test_critical_alert_in_hour_3_lowers_hour_3_only() -> None:
    events = [
        alert("vm-1", "firing", at(3, 10)),
        alert("vm-1", "resolved", at(3, 10), ends=at(3, 40)),
    ]
    rows = hourly("vm-1", range(24)) + hourly("vm-2", range(24))
    df = health(events, rows, [asset("vm-1"), asset("vm-2")])
    assert df.height == 48
    vm1 = scores(df, "vm-1")
    assert vm1[3] == 40.0
    assert vm1[:3] + vm1[4:] == [100.0] * 23
    assert scores(df, "vm-2") == [100.0] * 24
    hour3 = df.filter((pl.col("entity_id") == "vm-1") & (pl.col("hour") == at(3))).row(
        0, named=True
    )
    assert hour3["firing_alerts"] == 1 and hour3["worst_severity"] == "critical"
    assert hour3["alert_penalty"] == 60.0 and hour3["status"] == "critical"
    assert hour3["reason"] == "1 alert(s) firing, worst critical"
    assert df.filter(pl.col("hour") == at(4))["reason"].to_list() == ["ok", "ok"]


def test_unresolved_alert_fires_to_the_end_of_the_day_and_severities_add_up() -> None:
    events = [
        alert("vm-1", "firing", at(20, 30), severity="Major", fingerprint="a"),
        alert("vm-1", "firing", at(22, 5), severity="warning", fingerprint="b"),
    ]
    vm1 = scores(health(events, hourly("vm-1", range(24)), [asset("vm-1")]), "vm-1")
    assert vm1[:20] == [100.0] * 20
    assert vm1[20:] == [70.0, 70.0, 60.0, 60.0]


def test_alert_from_the_day_before_counts_from_midnight_until_resolved() -> None:
    events = [
        alert("vm-1", "resolved", at(-5), ends=at(1, 30)),
        # Resolved before midnight, delivered late: not firing on this day at all.
        alert("vm-1", "resolved", at(-5), fingerprint="fp2", ends=at(-1)),
    ]
    vm1 = scores(health(events, hourly("vm-1", range(24)), [asset("vm-1")]), "vm-1")
    assert vm1[:2] == [40.0, 40.0] and vm1[2:] == [100.0] * 22


def test_silent_hour_gets_the_staleness_penalty() -> None:
    rows = hourly("vm-1", [h for h in range(24) if h != 7])
    df = health([], rows, [asset("vm-1"), asset("rack-1", kind="facility")])
    vm1 = df.filter(pl.col("entity_id") == "vm-1").sort("hour")
    assert vm1["staleness_penalty"].to_list()[7] == STALENESS_PENALTY
    assert vm1["health_score"].to_list()[7] == 100.0 - STALENESS_PENALTY
    assert vm1["reason"][7] == "no metric samples in the hour"
    assert vm1["staleness_penalty"].sum() == STALENESS_PENALTY
    # An entity that never reports metrics is scored, and is never stale.
    assert scores(df, "rack-1") == [100.0] * 24


def test_saturated_ratio_metrics_cost_points() -> None:
    rows = (
        hourly("vm-1", range(24))
        + hourly("vm-1", [5], metric="mem_ratio", p95=0.95)
        + hourly("vm-1", [6], metric="disk_ratio", p95=0.85)
        + hourly("vm-1", [7], metric="queue_depth", p95=50.0)
    )
    df = health([], rows, [asset("vm-1")]).sort("hour")
    assert df["saturation_penalty"].to_list()[4:8] == [0.0, 25.0, 10.0, 0.0]
    assert df["reason"][5] == "saturated: mem_ratio p95=0.95"
    assert df["status"][5] == "degraded"


def test_assets_version_valid_at_the_end_of_the_day() -> None:
    assets = [
        asset("vm-1", business="old", valid_to=at(12)),
        asset("vm-1", business="new", valid_from=at(12)),
        asset("vm-2", lifecycle_state="retired", valid_from=at(10)),
        asset("vm-2", valid_to=at(10)),
        asset("vm-3", valid_to=at(23)),
        asset("vm-4", valid_from=at(24)),
    ]
    df = health([], [], assets)
    assert df["entity_id"].unique().to_list() == ["vm-1"]
    assert df["business"].unique().to_list() == ["new"]
    assert df["hour"].to_list() == [at(h) for h in range(24)]


def test_business_health_aggregates_per_hour() -> None:
    events = [alert("vm-1", "firing", at(3, 10))]
    rows = hourly("vm-1", range(24)) + hourly("vm-2", range(24)) + hourly("db-1", range(24))
    assets = [asset("vm-1"), asset("vm-2"), asset("db-1", business=None)]
    got = business_health(
        entity_health(table(EVENTS, events), table(ROLLUP_SCHEMA, rows), table(ASSETS, assets), DAY)
    )
    assert got.schema == BUSINESS_HEALTH_SCHEMA
    df = pl.from_arrow(got)
    assert df.height == 48
    row = df.filter((pl.col("hour") == at(3)) & (pl.col("business") == "tax")).row(0, named=True)
    assert row["entities"] == 2 and row["avg_health_score"] == 70.0
    assert row["min_health_score"] == 40.0 and row["critical_entities"] == 1
    assert row["healthy_entities"] == 1
    assert df.filter(pl.col("hour") == at(3))["business"].to_list() == ["(unassigned)", "tax"]


def test_health_is_deterministic_and_survives_empty_inputs() -> None:
    events = table(EVENTS, [alert("vm-1", "firing", at(3)), alert("vm-2", "firing", at(9), "info")])
    rows = table(ROLLUP_SCHEMA, hourly("vm-1", range(20)) + hourly("vm-2", range(24)))
    assets = table(ASSETS, [asset("vm-2"), asset("vm-1")])
    first = entity_health(events, rows, assets, DAY)
    again = entity_health(
        events.take([1, 0]), rows.take(np.arange(rows.num_rows)[::-1]), assets.take([1, 0]), DAY
    )
    assert parquet_bytes(first) == parquet_bytes(again)

    empty = entity_health(
        EVENTS.empty_table(), ROLLUP_SCHEMA.empty_table(), ASSETS.empty_table(), DAY
    )
    assert empty.schema == ENTITY_HEALTH_SCHEMA and empty.num_rows == 0
    no_data = entity_health(EVENTS.empty_table(), ROLLUP_SCHEMA.empty_table(), assets, DAY)
    assert no_data.num_rows == 48
    assert set(no_data["health_score"].to_pylist()) == {100.0}
    assert business_health(empty).schema == BUSINESS_HEALTH_SCHEMA
    assert business_health(empty).num_rows == 0


# --- service levels ----------------------------------------------------------------------


def ticket(
    ticket_id: str,
    type_: str = "incident",
    business: str = "tax",
    opened: datetime | None = None,
    ack: float | None = None,
    resolved: float | None = None,
    sla: int | None = 240,
    result: str | None = None,
) -> dict:
    opened = opened or at(1)
    return {
        "ticket_id": ticket_id,
        "type": type_,
        "status": "open",
        "business": business,
        "opened_at": opened,
        "acknowledged_at": None if ack is None else opened + timedelta(minutes=ack),
        "resolved_at": None if resolved is None else opened + timedelta(minutes=resolved),
        "sla_target_minutes": sla,
        "change_result": result,
    }


def levels(rows: list[dict]) -> dict[str, dict]:
    got = service_levels(table(TICKETS, rows), DAY)
    assert got.schema == SERVICE_LEVELS_SCHEMA
    return {r["business"]: r for r in got.to_pylist()}


def test_mtta_mttr_and_sla() -> None:
    got = levels(
        [
            ticket("i1", ack=5, resolved=60),
            ticket("i2", ack=10, resolved=300),
            ticket("i3", ack=30),
            ticket("i4", business="health", opened=at(23), sla=30),
        ]
    )
    tax = got["tax"]
    assert tax["day"] == DAY
    assert tax["incidents_opened"] == 3 and tax["incidents_resolved"] == 2
    assert tax["mtta_minutes"] == 15.0
    assert tax["mttr_minutes"] == 180.0
    # i2 resolved after its 240-minute target; i3 is unresolved and past it before midnight.
    assert tax["sla_met"] == 1 and tax["sla_attainment"] == 0.5 and tax["sla_breached"] == 2
    assert tax["open_incidents_end_of_day"] == 1
    # Opened 23:00 with a 30-minute target and no resolution: overdue by midnight.
    health = got["health"]
    assert health["sla_breached"] == 1 and health["sla_attainment"] is None
    assert health["mtta_minutes"] is None and health["mttr_minutes"] is None
    province = got["(all)"]
    assert province["incidents_opened"] == 4 and province["sla_breached"] == 3
    assert province["mtta_minutes"] == 15.0 and province["open_incidents_end_of_day"] == 2


def test_requests_changes_and_the_cohort() -> None:
    got = service_levels(
        table(
            TICKETS,
            [
                ticket("r1", "request"),
                ticket("p1", "problem", business=None),
                ticket("c1", "change", result="successful"),
                ticket("c2", "change", result="failed"),
                ticket("c3", "change"),
                ticket("i0", opened=at(-1)),  # opened the day before: not in this day's cohort
                ticket("i9", opened=at(24)),  # opened the next day
                ticket("i1", resolved=10),
                ticket("i1", resolved=None),  # an older copy of i1 is not counted twice
                ticket("i2", resolved=60 * 24),  # resolved after midnight: still open at its end
            ],
        ),
        DAY,
    )
    assert [r["business"] for r in got.to_pylist()] == ["(all)", "(unassigned)", "tax"]
    tax = {r["business"]: r for r in got.to_pylist()}["tax"]
    assert tax["requests_opened"] == 1 and tax["changes"] == 3 and tax["failed_changes"] == 1
    assert tax["change_failure_rate"] == 0.5
    assert tax["incidents_opened"] == 2 and tax["incidents_resolved"] == 2
    assert tax["open_incidents_end_of_day"] == 1
    unassigned = {r["business"]: r for r in got.to_pylist()}["(unassigned)"]
    assert unassigned["problems_opened"] == 1 and unassigned["change_failure_rate"] is None


def test_service_levels_deterministic_and_empty() -> None:
    rows = table(
        TICKETS,
        [
            ticket(f"i{i}", business=b, ack=i, resolved=10 * i)
            for i, b in enumerate(["tax", "health", "tax", "edu"], start=1)
        ],
    )
    assert parquet_bytes(service_levels(rows, DAY)) == parquet_bytes(
        service_levels(rows.take([3, 2, 1, 0]), DAY)
    )
    empty = service_levels(TICKETS.empty_table(), DAY)
    assert empty.schema == SERVICE_LEVELS_SCHEMA and empty.num_rows == 0


def test_rollups_of_whole_series_slices_equal_the_days_rollup(tmp_path) -> None:
    """The rollup asset rolls a day up slice by slice (``series_slices``): the slices' rollups,
    in order, are the whole day's, rows and order, null entities included."""
    from opslake.lake.series import series_slices
    from opslake.lake.storage import Lake
    from opslake.settings import Settings

    rng = np.random.default_rng(3)
    rows = []
    for metric in ("a_ratio", "b_bytes", "c_total"):
        for entity in ("host-1", "host-2", "host-3", None):
            for label in ("x", "y"):
                for minute in range(0, 180, 2):
                    rows.append(
                        {
                            "ts": at(minutes=minute),
                            "metric": metric,
                            "entity_id": entity,
                            "value": float(rng.normal()),
                            "labels": [("k", label)],
                            "source": "prometheus",
                            "batch_id": "b",
                        }
                    )
    points = table(METRIC_POINTS, rows)
    lake = Lake.from_settings(Settings.from_env({"OPSLAKE_HOME": str(tmp_path)}))
    day = at().date().isoformat()
    lake.write_table(points, "silver", "metric_points", {"dt": day})  # already in silver order
    columns = ["ts", "metric", "entity_id", "value"]
    slices = list(series_slices(lake, day, columns, rows=500))
    assert len(slices) >= 4
    for every in ("5m", "1h"):
        whole = rollup(points, every)
        sliced = pa.concat_tables([rollup(s, every) for s in slices])
        assert sliced.equals(whole)
