"""Reading one metric from gold: filters, validation and the usage it records."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pyarrow as pa
import pytest

from opslake.errors import ConfigError
from opslake.lake.storage import Lake
from opslake.metrics_catalog.compute import METRIC_VALUES
from opslake.metrics_catalog.definition import Measure, MetricDefinition
from opslake.metrics_catalog.query import day_range, query
from opslake.metrics_catalog.usage import read_usage

METRIC = MetricDefinition(
    id="cloud.test.cpu",
    names={"zh-CN": "CPU", "en": "CPU", "zh-TW": "CPU"},
    description="test",
    unit="ratio",
    category="cloud",
    type="simple",
    owner="team:t",
    family="f",
    dimensions=("entity", "business"),
    grains=("1h", "1d"),
    model="metric_points",
    measure=Measure("avg", "value"),
)


def _row(
    day: str,
    hour: int,
    scope: str,
    value: float,
    *,
    metric: str = METRIC.id,
    grain: str = "1h",
    entity: str | None = None,
    business: str | None = None,
) -> dict:
    return {
        "metric_id": metric,
        "metric_version": "1.0",
        "grain": grain,
        "bucket_start": datetime.fromisoformat(f"{day}T{hour:02d}:00:00+00:00"),
        "scope": scope,
        "entity_id": entity,
        "business": business,
        "department": None,
        "region": None,
        "object_kind": None,
        "object_type": None,
        "value": value,
        "numerator": None,
        "denominator": None,
    }


@pytest.fixture
def gold(lake: Lake) -> Lake:
    days = {
        "2026-03-02": [
            _row("2026-03-02", 1, "all", 0.5),
            _row("2026-03-02", 0, "all", 0.4),
            _row("2026-03-02", 0, "business", 0.3, business="税务"),
            _row("2026-03-02", 0, "business", 0.7, business="社保"),
            _row("2026-03-02", 0, "all", 9.0, metric="other.metric"),
            _row("2026-03-02", 0, "all", 0.45, grain="1d"),
        ],
        "2026-03-03": [_row("2026-03-03", 0, "all", 0.6)],
    }
    for day, rows in days.items():
        lake.write_table(
            pa.Table.from_pylist(rows, schema=METRIC_VALUES),
            "gold",
            "metric_values",
            {"dt": day, "family": "f"},
        )
    return lake


def test_reads_one_metric_grain_and_scope_in_time_order_and_records_usage(gold: Lake) -> None:
    start, end = day_range(date(2026, 3, 2), date(2026, 3, 3))
    rows = query(gold, METRIC, start=start, end=end, principal=("cli", "cli:tester"))
    assert rows.column("value").to_pylist() == [0.4, 0.5, 0.6]
    assert rows.column("bucket_start").to_pylist()[0] == datetime(2026, 3, 2, tzinfo=UTC)
    one_day = query(
        gold,
        METRIC,
        start=start,
        end=datetime(2026, 3, 3, tzinfo=UTC),
        principal=("api_key", "key-1"),
        detail={"path": "/v1/metrics"},
    )
    assert one_day.num_rows == 2
    usage = read_usage(gold).sort_by("at").to_pylist()
    assert [(u["principal_kind"], u["principal"], u["action"], u["rows"]) for u in usage] == [
        ("cli", "cli:tester", "read", 3),
        ("api_key", "key-1", "read", 2),
    ]
    assert '"path": "/v1/metrics"' in usage[1]["detail"]


def test_filters_on_the_scope_dimension(gold: Lake) -> None:
    start, end = day_range(date(2026, 3, 2), date(2026, 3, 2))
    rows = query(
        gold,
        METRIC,
        start=start,
        end=end,
        scope="business",
        where={"business": "社保"},
        principal=("cli", "t"),
    )
    assert rows.column("value").to_pylist() == [0.7]
    assert "business" in rows.column_names and "entity_id" not in rows.column_names


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"grain": "5m"}, "not '5m'"),
        ({"scope": "region"}, "not 'region'"),
        ({"scope": "business", "where": {"entity_id": "x"}}, "not possible at scope"),
        ({"where": {"business'; DROP TABLE x; --": "y"}}, "not possible at scope"),
    ],
)
def test_rejects_what_the_metric_does_not_offer(gold: Lake, kwargs: dict, message: str) -> None:
    start, end = day_range(date(2026, 3, 2), date(2026, 3, 2))
    with pytest.raises(ConfigError, match=message):
        query(gold, METRIC, start=start, end=end, principal=("cli", "t"), **kwargs)


def test_no_data_yet_is_an_empty_answer(lake: Lake) -> None:
    start, end = day_range(date(2026, 3, 2), date(2026, 3, 2))
    rows = query(lake, METRIC, start=start, end=end, principal=("cli", "t"))
    assert rows.num_rows == 0


def test_live_partitions_older_than_yesterday_are_pruned(lake: Lake) -> None:
    from opslake.metrics_catalog.live import LIVE_POINTS, LIVE_VALUES, prune

    for dt in ("2026-03-01", "2026-03-02", "2026-03-03"):
        lake.write_table(
            pa.Table.from_pylist([_row(dt, 0, "all", 1.0)], schema=METRIC_VALUES),
            "gold",
            LIVE_VALUES,
            {"dt": dt, "hour": "00"},
        )
        lake.write_table(pa.table({"x": [1]}), "silver", LIVE_POINTS, {"dt": dt})
    dropped = prune(lake, "2026-03-03")
    assert dropped == [f"silver/{LIVE_POINTS}/dt=2026-03-01", f"gold/{LIVE_VALUES}/dt=2026-03-01"]
    assert lake.partitions("gold", LIVE_VALUES) == ["2026-03-02", "2026-03-03"]
    assert lake.partitions("silver", LIVE_POINTS) == ["2026-03-02", "2026-03-03"]
