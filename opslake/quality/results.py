"""Quality results: one row per check per table partition per run, kept as history (S6.2e).

``gold/quality_results/dt=D/table=<layer>.<table>/part-0.parquet`` holds the latest run's
results for that partition (a re-run replaces them: the partition's state, not a log); every
run also appends its rows to ``gold/quality_log/dt=<run day>/part-<uuid>.parquet``, so the
full history of what was seen when is kept.
"""

from __future__ import annotations

import io
import json
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from opslake.lake.schemas import TS
from opslake.lake.storage import Lake

SEVERITIES = ("error", "warning")
#: What a check looks at; ``row`` checks quarantine offending rows, the others judge the table.
KINDS = (
    "not_null",
    "range",
    "allowed_values",
    "unique",
    "referential",
    "schema",
    "freshness",
    "volume",
    "parse_rate",
)
ROW_KINDS = ("not_null", "range", "allowed_values", "unique", "referential")

QUALITY_RESULTS = pa.schema(
    [
        ("at", TS),
        ("day", pa.date32()),
        ("layer", pa.string()),
        ("table", pa.string()),
        ("check", pa.string()),
        ("kind", pa.string()),
        ("severity", pa.string()),
        ("passed", pa.bool_()),
        ("observed", pa.string()),
        ("threshold", pa.string()),
        ("rows", pa.int64()),
        ("unexpected_rows", pa.int64()),
        ("source", pa.string()),
        ("sample", pa.string()),  # JSON: up to 5 offending rows
        ("run_id", pa.string()),
    ]
)


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one table partition."""

    layer: str
    table: str
    check: str
    kind: str
    severity: str
    passed: bool
    observed: str
    threshold: str
    rows: int
    unexpected_rows: int = 0
    source: str | None = None
    sample: list[dict] = field(default_factory=list)

    @property
    def blocking(self) -> bool:
        """A failed table-level contract check: the partition must not publish downstream."""
        return not self.passed and self.severity == "error" and self.kind not in ROW_KINDS


def to_table(results: list[CheckResult], day: date, at: datetime, run_id: str) -> pa.Table:
    """Rows of ``QUALITY_RESULTS``."""
    return pa.Table.from_pylist(
        [
            {
                "at": at,
                "day": day,
                "layer": r.layer,
                "table": r.table,
                "check": r.check,
                "kind": r.kind,
                "severity": r.severity,
                "passed": r.passed,
                "observed": r.observed,
                "threshold": r.threshold,
                "rows": r.rows,
                "unexpected_rows": r.unexpected_rows,
                "source": r.source,
                "sample": json.dumps(r.sample[:5], ensure_ascii=False, default=str),
                "run_id": run_id,
            }
            for r in results
        ],
        schema=QUALITY_RESULTS,
    )


def write_results(
    lake: Lake, results: list[CheckResult], day: date, at: datetime, run_id: str
) -> None:
    """Replace the partition's current results and append them to the log."""
    if not results:
        return
    table = to_table(results, day, at, run_id)
    name = f"{results[0].layer}.{results[0].table}"
    lake.write_table(table, "gold", "quality_results", {"dt": day.isoformat(), "table": name})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, coerce_timestamps="us")
    path = lake.table_path("gold", "quality_log", {"dt": at.date().isoformat()})
    lake.put_atomic(f"{path}/part-{uuid.uuid4().hex}.parquet", [buffer.getvalue()])


def read_results(lake: Lake, days: list[str] | None = None) -> pa.Table:
    """Current results of the given days (all when ``None``)."""
    return lake.read_table("gold", "quality_results", schema=QUALITY_RESULTS, dts=days)
