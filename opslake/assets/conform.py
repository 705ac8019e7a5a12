"""Silver assets generated from a declarative spec: one bronze table → one silver table."""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from opslake.assets.keys import daily_table_asset, key
from opslake.lake.schemas import ASSETS
from opslake.lake.storage import Lake
from opslake.security.crypto import FieldCipher
from opslake.security.fields import reseal
from opslake.transforms.entities import EntityResolver

Conform = Callable[[pa.Table, EntityResolver], pa.Table | Iterable[pa.Table]]


@dataclass(frozen=True)
class SilverTable:
    """How a silver table is built from its bronze table for one day."""

    name: str
    #: The bronze table(s) read; several must share ``bronze_schema`` (e.g. samples scraped
    #: by Prometheus and samples published over MQTT).
    bronze: str | Sequence[str]
    bronze_schema: pa.Schema
    schema: pa.Schema
    conform: Conform
    description: str
    #: Read every bronze partition up to the day (snapshot-partitioned tables such as assets).
    history: bool = False
    #: Bronze columns read dictionary-encoded (repetitive strings in large tables).
    dictionary: Sequence[str] = ()
    #: Whether entity ids are resolved through the CMDB (then it depends on silver/assets).
    resolves_entities: bool = True
    #: Landing source of each bronze table, when several feed one silver table: the silver
    #: ``source`` column then names the source each row's batch really came from.
    sources: Mapping[str, str] = field(default_factory=dict)
    #: Bronze columns holding SM4 tokens, with their field context: tokens of a previous
    #: data key are re-sealed under the current one before conforming, so that a key
    #: rotation neither reads as a changed value nor leaves old tokens downstream.
    sealed: Mapping[str, str] = field(default_factory=dict)


def end_of_day(dt: str) -> datetime:
    """The first instant after UTC day ``dt``."""
    return datetime.combine(date.fromisoformat(dt) + timedelta(days=1), time(), UTC)


def cmdb_as_of(lake: Lake, dt: str) -> pa.Table:
    """Silver assets history as known at the end of ``dt`` (its latest partition up to ``dt``)."""
    known = [d for d in lake.partitions("silver", "assets") if d <= dt]
    return lake.read_table("silver", "assets", schema=ASSETS, dts=known[-1:]) if known \
        else ASSETS.empty_table()


def resolver_for_day(lake: Lake, dt: str) -> EntityResolver:
    """Entity resolution through the CMDB as known at the end of ``dt``."""
    return EntityResolver(cmdb_as_of(lake, dt), as_of=end_of_day(dt))


def _with_sources(chunk: pa.Table, batch_source: Mapping[str, str]) -> pa.Table:
    """``chunk`` with its ``source`` column taken from each row's batch."""
    ids = chunk.column("batch_id")
    known = pa.array(list(batch_source), pa.string())
    names = pa.array(list(batch_source.values()), pa.string())
    source = pc.coalesce(pc.take(names, pc.index_in(ids, value_set=known)), chunk["source"])
    return chunk.set_column(chunk.schema.get_field_index("source"), "source", source)


def silver_asset(spec: SilverTable) -> dg.AssetsDefinition:
    """The Dagster asset that materializes ``spec`` for one daily partition."""
    bronze_tables = [spec.bronze] if isinstance(spec.bronze, str) else list(spec.bronze)
    deps = [key("bronze", name) for name in bronze_tables]
    if spec.resolves_entities:
        deps.append(key("silver", "assets"))

    def build(lake: Lake, dt: str, metadata: dict, cipher: FieldCipher | None = None
              ) -> pa.Table | Iterable[pa.Table]:
        parts = []
        for name in bronze_tables:
            days = [d for d in lake.partitions("bronze", name) if d <= dt] \
                if spec.history else [dt]
            parts.append(lake.read_table("bronze", name, schema=spec.bronze_schema, dts=days,
                                         dictionary=spec.dictionary))
            metadata[f"bronze_rows/{name}"] = parts[-1].num_rows
        bronze = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        if cipher is not None:
            for column, context in spec.sealed.items():
                at = bronze.schema.get_field_index(column)
                bronze = bronze.set_column(at, column, reseal(bronze[column], context, cipher))
        resolver = resolver_for_day(lake, dt) if spec.resolves_entities else None
        out = spec.conform(bronze, resolver)
        batch_source = {batch_id: spec.sources[name]
                        for name, part in zip(bronze_tables, parts, strict=True)
                        if name in spec.sources
                        for batch_id in pc.unique(part.column("batch_id")).to_pylist()}
        if not batch_source:
            return out
        return (_with_sources(chunk, batch_source)
                for chunk in ([out] if isinstance(out, pa.Table) else out))

    return daily_table_asset("silver", spec.name, deps=deps, schema=spec.schema,
                             description=spec.description, build=build,
                             bronze=bronze_tables, sealed=bool(spec.sealed))
