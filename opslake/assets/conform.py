"""Silver assets generated from a declarative spec: one bronze table → one silver table."""

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from opslake.assets.keys import BRONZE_SOURCES, daily_table_asset, key
from opslake.assets.sharded import sharded_table_asset
from opslake.errors import ConfigError
from opslake.lake.cmdb import cmdb_as_of, end_of_day
from opslake.lake.storage import Lake
from opslake.quality.partition import partition_rows
from opslake.security.crypto import FieldCipher
from opslake.security.fields import reseal
from opslake.settings import Settings
from opslake.transforms._silver import BronzeReader
from opslake.transforms.entities import EntityResolver

Conform = Callable[[pa.Table, EntityResolver], pa.Table | Iterable[pa.Table]]
#: Conforms a day read from its bronze files a batch at a time (tables too large to hold
#: whole): (reader, resolver, settings, day shard) → silver slices of the entities of that
#: shard (of ``Settings.day_shards``), within ``Settings.sort_memory_mb``.
StreamConform = Callable[[BronzeReader, EntityResolver | None, Settings, int], Iterable[pa.Table]]


@dataclass(frozen=True, kw_only=True)
class SilverTable:
    """How a silver table is built from its bronze table for one day."""

    name: str
    #: The bronze table(s) read; several must share ``bronze_schema`` (e.g. samples scraped
    #: by Prometheus and samples published over MQTT).
    bronze: str | Sequence[str]
    bronze_schema: pa.Schema
    schema: pa.Schema
    description: str
    #: Conforms the day's bronze as one table; or, for large tables, ``stream`` instead.
    conform: Conform | None = None
    stream: StreamConform | None = None
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

    def __post_init__(self) -> None:
        """Exactly one way to conform; a streamed table (built in day shards) reads one day
        with no tokens."""
        if (self.conform is None) == (self.stream is None):
            raise ConfigError(f"silver table {self.name}: give either conform or stream")
        if self.stream is not None and (self.history or self.sealed):
            raise ConfigError(
                f"silver table {self.name}: a streamed table reads one day "
                "without sealed columns; use conform for history or tokens"
            )


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

    if spec.stream is not None:
        stream = spec.stream

        def build_shard(
            lake: Lake, dt: str, shard: int, metadata: dict, settings: Settings
        ) -> Iterable[pa.Table]:
            if shard == 0:  # a fact of the whole day, recorded once
                for name in bronze_tables:
                    metadata[f"bronze_rows/{name}"] = partition_rows(lake, "bronze", name, dt)
            resolver = resolver_for_day(lake, dt) if spec.resolves_entities else None
            return stream(_reader(lake, spec, bronze_tables, dt), resolver, settings, shard)

        return sharded_table_asset(
            "silver",
            spec.name,
            deps=deps,
            schema=spec.schema,
            description=spec.description,
            build=build_shard,
            bronze=bronze_tables,
        )

    def build(
        lake: Lake, dt: str, metadata: dict, settings: Settings
    ) -> pa.Table | Iterable[pa.Table]:
        parts = []
        for name in bronze_tables:
            days = [d for d in lake.partitions("bronze", name) if d <= dt] if spec.history else [dt]
            parts.append(
                lake.read_table(
                    "bronze", name, schema=spec.bronze_schema, dts=days, dictionary=spec.dictionary
                )
            )
            metadata[f"bronze_rows/{name}"] = parts[-1].num_rows
        bronze = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        if spec.sealed:
            cipher = FieldCipher.from_settings(settings)
            for column, context in spec.sealed.items():
                at = bronze.schema.get_field_index(column)
                bronze = bronze.set_column(at, column, reseal(bronze[column], context, cipher))
        resolver = resolver_for_day(lake, dt) if spec.resolves_entities else None
        out = spec.conform(bronze, resolver)
        batch_source = {
            batch_id: spec.sources[name]
            for name, part in zip(bronze_tables, parts, strict=True)
            if name in spec.sources
            for batch_id in pc.unique(part.column("batch_id")).to_pylist()
        }
        if not batch_source:
            return out
        return (
            _with_sources(chunk, batch_source)
            for chunk in ([out] if isinstance(out, pa.Table) else out)
        )

    return daily_table_asset(
        "silver",
        spec.name,
        deps=deps,
        schema=spec.schema,
        description=spec.description,
        build=build,
        bronze=bronze_tables,
        settings=True,
    )


def _reader(lake: Lake, spec: SilverTable, tables: Sequence[str], dt: str) -> BronzeReader:
    """Reads day ``dt`` of the bronze ``tables`` a bounded batch at a time, in file order."""

    def read(columns: Sequence[str]) -> Iterator[tuple[str, pa.Table]]:
        for name in tables:
            for table in lake.scan(
                "bronze",
                name,
                schema=spec.bronze_schema,
                dts=[dt],
                columns=list(columns),
                dictionary=spec.dictionary,
            ):
                yield BRONZE_SOURCES[name], table

    return read
