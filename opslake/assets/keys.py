"""Asset keys carry their layer (``silver/metric_points``); one factory for daily tables."""

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime

import dagster as dg
import pyarrow as pa

from opslake.assets.partitions import DAILY
from opslake.assets.resources import LakeResource
from opslake.errors import ConfigError
from opslake.lake.landing import LandingZone
from opslake.lake.retention import bronze_batch_ids, mark_silvered
from opslake.lake.storage import Lake
from opslake.quality.partition import PartitionCheck
from opslake.quality.results import ROW_KINDS, CheckResult
from opslake.quality.suites import load_suites
from opslake.settings import Settings

OWNER = "team:data-platform"
#: The expectation suites, by ``layer.table`` (opslake/quality/suites/*.yaml).
SUITES = load_suites()
#: Landing source of each bronze table, filled as the source assets are defined.
BRONZE_SOURCES: dict[str, str] = {}
#: Landing sources of OpsLake's own findings (SourceSpec.findings), filled the same way.
FINDINGS_SOURCES: set[str] = set()
#: Silver tables reading each bronze table, filled as the silver assets are defined: landing
#: retention purges a batch only once all of them hold it (opslake.lake.retention).
SILVER_READERS: dict[str, set[str]] = {}

#: Builds one day of a table: (lake, day, metadata to fill) → a table or slices of it.
Build = Callable[[Lake, str, dict], pa.Table | Iterable[pa.Table]]
#: The same, also given the lake's settings (its data key, its memory budget).
SettingsBuild = Callable[[Lake, str, dict, Settings], pa.Table | Iterable[pa.Table]]


def check_results(results: Sequence[CheckResult]) -> list[dg.AssetCheckResult]:
    """One Dagster check result per check (a per-sender check passes if every sender does).

    Its severity is that of the failing results: ERROR (which a blocking check turns into a
    blocked partition) only when one of them is an error; a sender that failed while the
    table stands is a warning (opslake.quality.validate), so it does not block.
    """
    by_name: dict[str, list[CheckResult]] = {}
    for r in results:
        by_name.setdefault(r.check, []).append(r)
    out = []
    for name, group in by_name.items():
        first = group[0]
        failing = [r for r in group if not r.passed]
        observed = "; ".join(f"{r.source}: {r.observed}" if r.source else r.observed for r in group)
        out.append(
            dg.AssetCheckResult(
                check_name=name,
                passed=not failing,
                severity=dg.AssetCheckSeverity.ERROR
                if any(r.severity == "error" for r in failing or group)
                else dg.AssetCheckSeverity.WARN,
                metadata={
                    "observed": observed,
                    "threshold": first.threshold,
                    "unexpected_rows": sum(r.unexpected_rows for r in group),
                    "kind": first.kind,
                },
            )
        )
    return out


def key(layer: str, name: str) -> dg.AssetKey:
    """The asset key of table ``name`` in ``layer``."""
    return dg.AssetKey([layer, name])


def daily_table_asset(
    layer: str,
    name: str,
    *,
    deps: Sequence[dg.AssetKey],
    schema: pa.Schema,
    description: str,
    build: Build | SettingsBuild,
    bronze: Sequence[str] = (),
    settings: bool = False,
) -> dg.AssetsDefinition:
    """A daily-partitioned asset that writes ``build``'s output as ``layer/name/dt=D``.

    Its materialization records the row count and, where the table has ``entity_id``, how
    many rows have none (kept, never dropped), plus whatever ``build`` adds. Where a quality
    suite exists for the table (opslake/quality/suites), its checks are the asset's checks:
    rows breaking a row contract are quarantined instead of written, and a failed table
    contract (schema, freshness, volume, parse rate) blocks the partition downstream, except
    where only some senders fail it (then it warns: one sender never blocks a day).
    ``bronze`` names the bronze tables read (their senders' parse rate is checked).
    ``settings``: ``build`` is a SettingsBuild, given the settings of the lake resource.
    """
    check_specs = table_check_specs(layer, name)
    silvered = register_silver(layer, name, bronze)

    @dg.asset(
        check_specs=check_specs,
        key=key(layer, name),
        deps=list(deps),
        group_name=layer,
        kinds={"parquet", "polars"},
        owners=[OWNER],
        partitions_def=DAILY,
        description=description,
    )
    def table_asset(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        lk, dt = lake.lake(), context.partition_key
        metadata = new_metadata(schema)
        # Taken before reading: a batch landing in bronze meanwhile is not claimed as read.
        consumed = bronze_batch_ids(lk, bronze, dt) if silvered else {}
        out = build(lk, dt, metadata, lake.settings()) if settings else build(lk, dt, metadata)
        check = partition_check(lake.landing(), layer, name, schema, dt, bronze)
        chunks = check.chunks(as_chunks(out)) if check else as_chunks(out)
        lk.write_parts(
            layer, name, {"dt": dt}, [("part-0", counted(chunks, metadata, schema))], schema
        )
        if silvered:
            mark_silvered(lk, name, dt, consumed, datetime.now(UTC))
        checks = finish_checks(check, metadata, context) if check else []
        return dg.MaterializeResult(metadata=metadata, check_results=checks)

    return table_asset


def table_check_specs(layer: str, name: str) -> list[dg.AssetCheckSpec]:
    """The Dagster checks of a table: its suite's, blocking where a table contract errs."""
    suite = SUITES.get(f"{layer}.{name}")
    return [
        dg.AssetCheckSpec(
            c.name,
            asset=key(layer, name),
            description=c.summary(),
            blocking=c.severity == "error" and c.kind not in ROW_KINDS,
        )
        for c in (suite.checks if suite else ())
    ]


def new_metadata(schema: pa.Schema) -> dict:
    """The figures every table partition records, before any row."""
    return {"rows": 0, **({"rows_without_entity": 0} if "entity_id" in schema.names else {})}


def as_chunks(out: pa.Table | Iterable[pa.Table]) -> Iterable[pa.Table]:
    """A build's output as a sequence of tables."""
    return [out] if isinstance(out, pa.Table) else out


def counted(chunks: Iterable[pa.Table], metadata: dict, schema: pa.Schema) -> Iterator[pa.Table]:
    """The chunks, counted into ``metadata`` as they are written."""
    for chunk in chunks:
        metadata["rows"] += chunk.num_rows
        if "entity_id" in schema.names:
            metadata["rows_without_entity"] += chunk.column("entity_id").null_count
        yield chunk


def register_silver(layer: str, name: str, bronze: Sequence[str]) -> bool:
    """Record silver ``name`` as a reader of its ``bronze`` tables; whether it is one."""
    if layer != "silver" or not bronze:
        return False
    for table in bronze:
        SILVER_READERS.setdefault(table, set()).add(name)
    return True


def partition_check(
    zone: LandingZone, layer: str, name: str, schema: pa.Schema, dt: str, bronze: Sequence[str]
) -> PartitionCheck | None:
    """The quality checks of one partition of a table (none without a suite)."""
    suite = SUITES.get(f"{layer}.{name}")
    if suite is None:
        return None
    unknown = [t for t in bronze if t not in BRONZE_SOURCES]
    if unknown:  # a silver spec naming a bronze table no source declares: a wiring mistake
        raise ConfigError(
            f"{layer}.{name} reads bronze {', '.join(unknown)}, which no landing "
            "source declares; add it to that source's SourceSpec.bronze"
        )
    return PartitionCheck(
        zone,
        suite,
        schema,
        dt,
        {t: BRONZE_SOURCES[t] for t in bronze},
        findings=frozenset(FINDINGS_SOURCES),
    )


def finish_checks(
    check: PartitionCheck, metadata: dict, context: dg.AssetExecutionContext | dg.OpExecutionContext
) -> list[dg.AssetCheckResult]:
    """Record a written partition's checks; the Dagster results of the checks selected."""
    results = check.finish(context.run.run_id)
    metadata["quarantined_by_quality"] = sum(t.num_rows for t in check.validator.quarantined)
    failed = sorted({r.check for r in results if not r.passed})
    metadata["quality_checks_failed"] = dg.MetadataValue.json(failed)
    selected = {k.name for k in context.selected_asset_check_keys}
    return [r for r in check_results(results) if r.check_name in selected]
