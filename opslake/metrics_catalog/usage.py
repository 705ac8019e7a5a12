"""Usage tracing: who read or computed which metric, at which version, and when (S6.2f).

Each call appends one small Parquet file to ``gold/metric_usage/dt=<day>/``, written
atomically under a unique name, so concurrent readers (API workers, jobs, notebooks) never
contend and nothing recorded is rewritten.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from opslake.lake.schemas import TS
from opslake.lake.storage import Lake

USAGE_SCHEMA = pa.schema(
    [
        ("at", TS),
        ("principal_kind", pa.string()),  # job | api_key | dashboard | cli | notebook
        ("principal", pa.string()),
        ("action", pa.string()),  # compute | read | export
        ("metric_id", pa.string()),
        ("metric_version", pa.string()),
        ("rows", pa.int64()),
        ("detail", pa.string()),
    ]
)
PRINCIPAL_KINDS = ("job", "api_key", "dashboard", "cli", "notebook")


def record_usage(
    lake: Lake,
    *,
    principal_kind: str,
    principal: str,
    action: str,
    metrics: Mapping[str, tuple[str, int]],
    detail: Mapping | None = None,
    at: datetime | None = None,
) -> None:
    """Append one usage row per metric: ``metrics`` maps id → (version, rows)."""
    if principal_kind not in PRINCIPAL_KINDS:
        raise ValueError(f"principal_kind must be one of {', '.join(PRINCIPAL_KINDS)}")
    if not metrics:
        return
    at = at or datetime.now(UTC)
    text = json.dumps(dict(detail or {}), ensure_ascii=False, sort_keys=True, default=str)
    table = pa.Table.from_pylist(
        [
            {
                "at": at,
                "principal_kind": principal_kind,
                "principal": principal,
                "action": action,
                "metric_id": mid,
                "metric_version": version,
                "rows": rows,
                "detail": text,
            }
            for mid, (version, rows) in sorted(metrics.items())
        ],
        schema=USAGE_SCHEMA,
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer, coerce_timestamps="us")
    path = lake.table_path("gold", "metric_usage", {"dt": at.date().isoformat()})
    lake.put_atomic(f"{path}/part-{uuid.uuid4().hex}.parquet", [buffer.getvalue()])


def read_usage(lake: Lake) -> pa.Table:
    """Every recorded use."""
    return lake.read_table("gold", "metric_usage", schema=USAGE_SCHEMA)
