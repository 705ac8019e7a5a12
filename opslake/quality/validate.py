"""Run a suite on a table partition with Great Expectations, chunk by chunk (S6.2e).

Row checks run on each chunk as a pandas batch (only the columns they read); rows that break
an ``error`` row check are split off for quarantine with the check's name, the rest go on.
Table checks (schema, freshness, volume, parse rate) run at the end on a small batch of the
partition's statistics, so a day of millions of points is never one pandas frame.

Parse rate and volume are also judged per sender (landing source and sender: a push's API key
id or the connector), so one bad sender cannot poison a day: a failing sender's result only
warns while the table stands (another sender parses; the table's own volume holds), and keeps
the check's severity when it does not (a broken parser, a table-wide drop).
"""

from __future__ import annotations

import gc
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from opslake.lake.schemas import QUARANTINE
from opslake.quality.results import ROW_KINDS, CheckResult
from opslake.quality.suites import Check, Suite

_local = threading.local()
_frozen = threading.Lock()


def _freeze_heap() -> None:
    """Move the objects alive now (imports, Dagster, the GE context) out of the collector's view.

    Great Expectations raises and catches exceptions while it validates; their tracebacks
    form reference cycles that keep each chunk's pandas frame alive until a full collection,
    so a day of metric points grew by ~60 MB a chunk (3.4 GiB at 8,000 objects). A full
    collection walks the whole heap (~0.7 s with Dagster and GE loaded); once the long-lived
    heap is frozen it walks only what was made since (~2 ms), so each validation is followed by one.
    Frozen objects are still freed by reference counting; only cycles among them would stay.
    """
    if _frozen.acquire(blocking=False):
        gc.collect()
        gc.freeze()


def _context():
    """One ephemeral Great Expectations context per thread (creating one costs ~1 s)."""
    if getattr(_local, "context", None) is None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        _local.context = context
        _local.batch = (
            context.data_sources.add_pandas("opslake")
            .add_dataframe_asset("batch")
            .add_batch_definition_whole_dataframe("whole")
        )
        _freeze_heap()
    return _local.batch


def _known_column(column: str) -> str:
    """The derived column a referential check reads: is ``column``'s value in the CMDB."""
    return f"{column}__in_cmdb"


def _expectation(check: Check):
    """The Great Expectations expectation of a row check."""
    import great_expectations.expectations as gxe

    common = {"meta": {"check": check.name}}
    if check.where:
        common |= {"row_condition": check.where, "condition_parser": "pandas"}
    if check.kind != "unique":
        common["mostly"] = check.mostly
    if check.kind == "not_null":
        return gxe.ExpectColumnValuesToNotBeNull(column=check.column, **common)
    if check.kind == "range":
        return gxe.ExpectColumnValuesToBeBetween(
            column=check.column, min_value=check.min, max_value=check.max, **common
        )
    if check.kind == "allowed_values":
        return gxe.ExpectColumnValuesToBeInSet(
            column=check.column, value_set=list(check.values), **common
        )
    if check.kind == "referential":
        # GE re-serialises an expectation's value set hundreds of times per validation, so a
        # set of every CMDB id cost ~0.4 s a chunk at 2,000 objects (and grew with the
        # estate); membership is computed in Arrow and GE checks the flag (null stays null).
        return gxe.ExpectColumnValuesToBeInSet(
            column=_known_column(check.column), value_set=[True], **common
        )
    if len(check.columns) == 1:
        return gxe.ExpectColumnValuesToBeUnique(column=check.columns[0], **common)
    return gxe.ExpectCompoundColumnsToBeUnique(column_list=list(check.columns), **common)


def _validate(frame: pd.DataFrame, expectations: list) -> list:
    import great_expectations as gx

    suite = gx.ExpectationSuite(name="opslake", expectations=expectations)
    batch = _context().get_batch(batch_parameters={"dataframe": frame})
    results = batch.validate(suite, result_format={"result_format": "COMPLETE"}).results
    gc.collect()  # the chunk's frame, held by GE's traceback cycles (see _freeze_heap)
    return results


def _categorical(table: pa.Table) -> pa.Table:
    """String columns dictionary-encoded, so pandas gets categoricals: conditions such as
    ``metric.str.endswith(…)``, set membership and the batch's hash work once per distinct
    value instead of once per row (half the cost of a day of metric points)."""
    for i, column in enumerate(table.schema):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            table = table.set_column(i, column.name, pc.dictionary_encode(table.column(i)))
    return table


@dataclass
class _Tally:
    rows: int = 0
    unexpected: int = 0
    passed: bool = True
    sample: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class SenderLines:
    """What one sender delivered to one landing source feeding the table, on the day."""

    source: str
    #: ``landing.sender_of``: the API key id of a push, else the connector.
    sender: str
    #: Lines quarantined by the parser, plus pushes the API refused (one line each).
    rejected: int
    #: Bronze rows parsed from its batches.
    rows: int
    #: Its bronze rows on each of the table's history days (as ``history_rows``), newest last.
    history: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        """``<source>/<sender>``: the ``source`` of its check results."""
        return f"{self.source}/{self.sender}"


@dataclass
class Context:
    """What the table checks compare against."""

    #: Entity ids the CMDB knows (every version up to the day); None skips referential checks.
    cmdb: frozenset[str] | None
    #: Row counts of the previous days that have a partition, newest last.
    history_rows: list[int]
    #: Per sender of each landing source feeding this table (also those silent today).
    parse: list[SenderLines]
    #: The end of the period the partition covers (end of day, or now for today).
    end: datetime


def sender_severity(check: Check, passed: bool, table_stands: bool) -> str:
    """A per-sender result's severity: a failing sender only warns while the table stands."""
    return "warning" if not passed and table_stands else check.severity


class TableValidator:
    """Validate a partition chunk by chunk; offending rows are kept apart for quarantine."""

    def __init__(self, suite: Suite, schema: pa.Schema, context: Context) -> None:
        self.suite, self.schema, self.context = suite, schema, context
        self.row_checks = [
            c
            for c in suite.checks
            if c.kind in ROW_KINDS and (c.kind != "referential" or context.cmdb is not None)
        ]
        self.expectations = [_expectation(c) for c in self.row_checks]
        self.known = pa.array(sorted(context.cmdb or ()), pa.string())
        self.tallies = {c.name: _Tally() for c in self.row_checks}
        self.rows = 0
        self.newest: datetime | None = None
        self.observed_schema: pa.Schema | None = None
        self.quarantined: list[pa.Table] = []

    def _columns(self, check: Check, names: list[str]) -> set[str]:
        used = {check.column, *check.columns} - {None}
        if check.where:
            used |= {n for n in names if re.search(rf"\b{re.escape(n)}\b", check.where)}
        return used

    def chunk(self, table: pa.Table) -> pa.Table:
        """Validate one chunk; returns the rows that keep the contract."""
        if self.observed_schema is None:
            self.observed_schema = table.schema
        if table.num_rows == 0 or not self.row_checks:
            self._track(table)
            return table
        names = table.column_names
        needed = sorted(
            set().union(*(self._columns(c, names) for c in self.row_checks)) & set(names)
        )
        frame = _categorical(self._with_known(table.select(needed))).to_pandas()
        checks = {c.name: c for c in self.row_checks}
        bad: dict[int, list[str]] = {}
        results = _validate(frame, self.expectations)
        for result in results:
            check = checks[result.expectation_config.meta["check"]]
            tally = self.tallies[check.name]
            tally.rows += table.num_rows
            index = list(result.result.get("unexpected_index_list") or [])
            if check.kind == "unique" and index:
                # The first of each duplicate set is the row; the later ones are the copies.
                dup = frame.duplicated(subset=list(check.columns), keep="first")
                index = [i for i in index if dup.iloc[i]]
            tally.unexpected += len(index)
            # A strict contract (error, mostly 1) quarantines each offending row; a tolerant
            # one (mostly < 1) or a warning only records them.
            strict = check.severity == "error" and check.mostly >= 1
            tally.passed &= bool(result.success) and not (strict and index)
            if strict:
                for i in index:
                    bad.setdefault(int(i), []).append(check.name)
        if not bad:
            self._track(table)
            return table
        mask = pa.array([i not in bad for i in range(table.num_rows)])
        good, rejected = table.filter(mask), table.filter(pc.invert(mask))
        self._quarantine(rejected, [bad[i] for i in sorted(bad)])
        self._track(good)
        return good

    def _with_known(self, table: pa.Table) -> pa.Table:
        """``table`` with each referential check's CMDB-membership flag (``_known_column``)."""
        for check in self.row_checks:
            if (
                check.kind == "referential"
                and _known_column(check.column) not in table.schema.names
            ):
                values = table.column(check.column).cast(pa.string())
                flag = pc.if_else(
                    pc.is_valid(values),
                    pc.is_in(values, value_set=self.known),
                    pa.scalar(None, pa.bool_()),
                )
                table = table.append_column(_known_column(check.column), flag)
        return table

    def _track(self, good: pa.Table) -> None:
        self.rows += good.num_rows
        column = self.suite.time_column
        if column and good.num_rows:
            newest = pc.max(good.column(column)).as_py()
            if newest is not None and (self.newest is None or newest > self.newest):
                self.newest = newest

    def _quarantine(self, rejected: pa.Table, reasons: list[list[str]]) -> None:
        rows = rejected.to_pylist()
        now = datetime.now(UTC)
        for row, names in zip(rows, reasons, strict=True):
            for name in names:
                tally = self.tallies[name]
                if len(tally.sample) < 5:
                    tally.sample.append({k: v for k, v in row.items() if k != "labels"})
        self.quarantined.append(
            pa.Table.from_pylist(
                [
                    {
                        "source": row.get("source") or self.suite.key,
                        "batch_id": row.get("batch_id") or "",
                        "line_no": -1,
                        "raw": json.dumps(row, ensure_ascii=False, default=str),
                        "reason": f"quality check {', '.join(names)} failed on {self.suite.key}: "
                        + "; ".join(
                            next(c for c in self.row_checks if c.name == n).summary() for n in names
                        ),
                        "received_at": now,
                    }
                    for row, names in zip(rows, reasons, strict=True)
                ],
                schema=QUARANTINE,
            )
        )

    def figures(self) -> dict:
        """What the chunks taught this validator, as JSON-ready values (see ``absorb``)."""
        return {
            "rows": self.rows,
            "newest": self.newest.isoformat() if self.newest else None,
            "tallies": {
                name: {
                    "rows": t.rows,
                    "unexpected": t.unexpected,
                    "passed": t.passed,
                    "sample": t.sample,
                }
                for name, t in self.tallies.items()
            },
        }

    def absorb(self, figures: dict, observed: pa.Schema | None, quarantined: pa.Table) -> None:
        """Add another validator's ``figures`` (one shard of the same partition) to this one."""
        self.rows += figures["rows"]
        if figures["newest"]:
            newest = datetime.fromisoformat(figures["newest"])
            self.newest = newest if self.newest is None else max(self.newest, newest)
        for name, other in figures["tallies"].items():
            tally = self.tallies.get(name)
            if tally is None:  # a referential check judged by a shard that had a CMDB
                continue
            tally.rows += other["rows"]
            tally.unexpected += other["unexpected"]
            tally.passed &= other["passed"]
            tally.sample.extend(other["sample"][: 5 - len(tally.sample)])
        if self.observed_schema is None:
            self.observed_schema = observed
        if quarantined.num_rows:
            self.quarantined.append(quarantined)

    def finish(self) -> list[CheckResult]:
        """Every check's result for the partition (row checks summed over the chunks)."""
        out = []
        for check in self.row_checks:
            tally = self.tallies[check.name]
            threshold = "no offending row" if check.mostly >= 1 else f"≥ {check.mostly:.1%} of rows"
            out.append(
                self._result(
                    check,
                    tally.passed,
                    f"{tally.unexpected} offending row(s)",
                    threshold,
                    unexpected=tally.unexpected,
                    sample=tally.sample,
                )
            )
        stats = self._stats()
        for check in self.suite.checks:
            if check.kind == "referential" and self.context.cmdb is None:
                out.append(
                    self._result(check, True, "not judged: no CMDB yet", "every entity in the CMDB")
                )
            elif check.kind == "schema":
                out.append(self._schema(check))
            elif check.kind == "freshness":
                out.append(
                    self._freshness(check, stats)
                    if self.suite.time_column
                    else self._result(check, True, "no time column", "")
                )
            elif check.kind == "volume":
                table = self._volume(check, stats)
                out += [table, *self._sender_volume(check, table.passed)]
            elif check.kind == "parse_rate":
                delivering = [s for s in self.context.parse if s.rejected + s.rows]
                out += (
                    self._parse_rate(check, delivering)
                    if delivering
                    else [self._result(check, True, "no lines from any sender", "")]
                )
        return out

    def _result(
        self,
        check: Check,
        passed: bool,
        observed: str,
        threshold: str,
        *,
        unexpected: int = 0,
        source: str | None = None,
        sample: list[dict] | None = None,
        severity: str | None = None,
    ) -> CheckResult:
        return CheckResult(
            self.suite.layer,
            self.suite.table,
            check.name,
            check.kind,
            severity or check.severity,
            passed,
            observed,
            threshold,
            self.rows,
            unexpected,
            source,
            sample or [],
        )

    def _stats(self) -> pd.DataFrame:
        newest = self.newest.timestamp() if self.newest else float("nan")
        return pd.DataFrame({"rows": [self.rows], "newest_epoch_s": [newest]})

    def _one(self, frame: pd.DataFrame, expectation) -> bool:
        return bool(_validate(frame, [expectation])[0].success)

    def _schema(self, check: Check) -> CheckResult:
        import great_expectations.expectations as gxe

        observed = self.observed_schema or self.schema
        frame = pd.DataFrame(columns=observed.names)
        names_ok = self._one(
            frame, gxe.ExpectTableColumnsToMatchOrderedList(column_list=self.schema.names)
        )
        drift = [
            f"{f.name}: {observed.field(f.name).type} ≠ {f.type}"
            for f in self.schema
            if f.name in observed.names and not observed.field(f.name).type.equals(f.type)
        ]
        missing = [n for n in self.schema.names if n not in observed.names]
        extra = [n for n in observed.names if n not in self.schema.names]
        text = (
            "; ".join(
                filter(
                    None,
                    [
                        f"missing {', '.join(missing)}" if missing else "",
                        f"unexpected {', '.join(extra)}" if extra else "",
                        f"types {', '.join(drift)}" if drift else "",
                    ],
                )
            )
            or "as the contract"
        )
        return self._result(
            check, names_ok and not drift, text, f"{len(self.schema)} contract columns"
        )

    def _freshness(self, check: Check, stats: pd.DataFrame) -> CheckResult:
        import great_expectations.expectations as gxe

        if self.rows == 0 and not any(self.context.history_rows):
            # A source that has never delivered is not late: nothing is expected of it yet.
            return self._result(
                check,
                True,
                "no rows; the source never delivered",
                f"≤ {check.max_lag_minutes:g} min once it has delivered",
            )
        oldest_ok = self.context.end.timestamp() - 60 * check.max_lag_minutes
        ok = self.rows > 0 and self._one(
            stats, gxe.ExpectColumnValuesToBeBetween(column="newest_epoch_s", min_value=oldest_ok)
        )
        lag = (self.context.end - self.newest).total_seconds() / 60 if self.newest else None
        observed = "no rows" if lag is None else f"newest row {lag:.0f} min before the end"
        return self._result(check, ok, observed, f"≤ {check.max_lag_minutes:g} min")

    def _volume(self, check: Check, stats: pd.DataFrame) -> CheckResult:
        import great_expectations.expectations as gxe

        history = [
            n for n in self.context.history_rows[-check.history_days :] if n
        ] or self.context.history_rows[-check.history_days :]
        if any(history):
            mean = sum(history) / len(history)
            low = check.min_ratio * mean
            high = check.max_ratio * mean if check.max_ratio else None
            threshold = f"{low:.0f}–{high:.0f} rows" if high else f"≥ {low:.0f} rows"
            threshold += f" ({len(history)}-day mean {mean:.0f})"
        elif self.rows == 0:
            # Silence is judged against the table's own history; without any, nothing is
            # expected yet (a lake with no CMDB or probe source at all).
            return self._result(
                check, True, "0 rows; the source never delivered", "≥ 1 row once it has delivered"
            )
        else:
            low, high, threshold = 1, None, "≥ 1 row (no history yet)"
        ok = self._one(
            stats, gxe.ExpectColumnValuesToBeBetween(column="rows", min_value=low, max_value=high)
        )
        return self._result(check, ok, f"{self.rows} rows", threshold)

    def _sender_volume(self, check: Check, table_passed: bool) -> list[CheckResult]:
        """Each steady sender's rows against its own history (its mean on the history days).

        Only a sender that delivered on every history day is judged: an occasional sender
        (new this week, or one sending only some days) is not expected every day, nor are
        OpsLake's own findings (given no history: opslake.assets.ingest.SourceSpec.findings).
        """
        import great_expectations.expectations as gxe

        days = min(check.history_days, len(self.context.history_rows))
        steady = [
            s
            for s in self.context.parse
            if days and len(s.history) >= days and all(s.history[-days:])
        ]
        if not steady:
            return []
        means = [sum(s.history[-days:]) / days for s in steady]
        frame = pd.DataFrame({"ratio": [s.rows / m for s, m in zip(steady, means, strict=True)]})
        results = _validate(
            frame,
            [
                gxe.ExpectColumnValuesToBeBetween(
                    column="ratio",
                    min_value=check.min_ratio,
                    max_value=check.max_ratio,
                    meta={"check": check.name},
                )
            ],
        )
        failing = set(results[0].result.get("unexpected_index_list") or [])
        out = []
        for i, (sender, mean) in enumerate(zip(steady, means, strict=True)):
            low = f"{check.min_ratio * mean:.0f}"
            high = f"–{check.max_ratio * mean:.0f}" if check.max_ratio else "+"
            passed = i not in failing
            out.append(
                self._result(
                    check,
                    passed,
                    f"{sender.rows} rows",
                    f"{low}{high} rows ({days}-day mean {mean:.0f} of this sender)",
                    source=sender.name,
                    severity=sender_severity(check, passed, table_stands=table_passed),
                )
            )
        return out

    def _parse_rate(self, check: Check, senders: list[SenderLines]) -> list[CheckResult]:
        import great_expectations.expectations as gxe

        # A few bad lines in a small export are noise, not drift: the first
        # ``allowed_lines`` of each sender are forgiven before its share is judged.
        frame = pd.DataFrame(
            [
                {
                    "rejected_ratio": (s.rejected / (s.rejected + s.rows)),
                    "judged_ratio": max(0, s.rejected - check.allowed_lines)
                    / (s.rejected + s.rows),
                }
                for s in senders
            ]
        )
        results = _validate(
            frame,
            [
                gxe.ExpectColumnValuesToBeBetween(
                    column="judged_ratio",
                    max_value=check.max_rejected_ratio,
                    meta={"check": check.name},
                )
            ],
        )
        failing = set(results[0].result.get("unexpected_index_list") or [])
        # Blocking is for a broken parser or a table-wide problem: while any sender's lines
        # parse, a failing sender's lines stay in quarantine and the others publish.
        stands = len(failing) < len(senders)
        threshold = f"≤ {check.max_rejected_ratio:.1%} beyond {check.allowed_lines} lines"
        return [
            self._result(
                check,
                i not in failing,
                f"{s.rejected} of {s.rejected + s.rows} lines quarantined "
                f"({frame.rejected_ratio[i]:.1%})",
                threshold,
                unexpected=s.rejected,
                source=s.name,
                severity=sender_severity(check, i not in failing, stands),
            )
            for i, s in enumerate(senders)
        ]


def known_entities(cmdb: pa.Table) -> frozenset[str]:
    """Entity ids of every CMDB version (a CI known at any time of the day counts)."""
    return frozenset(v for v in pc.unique(cmdb.column("entity_id")).to_pylist() if v)
