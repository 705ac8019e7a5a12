"""Another engine reads gold as it is: Spark (pyspark, local mode) gets DuckDB's aggregates.

Gold is plain Hive-partitioned Parquet (DESIGN.md, scale-out), so Spark, Trino or StarRocks
read it without an export. The test reads every gold table of the shared estate with Spark
and with DuckDB and compares row counts and the sum of every numeric column, per table.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from opslake.lake.storage import Lake

_NUMERIC = (pa.types.is_integer, pa.types.is_floating)


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory):
    """A one-core local Spark session on UTC, partition values kept as strings."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master("local[1]")
        .appName("opslake-gold")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
        .config("spark.driver.memory", "1g")
        .config("spark.local.dir", str(tmp_path_factory.mktemp("spark")))
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _gold_tables(lake: Lake) -> dict[str, Path]:
    root = Path(lake.path("gold"))
    return {d.name: d for d in sorted(root.iterdir()) if d.is_dir() and any(d.rglob("*.parquet"))}


def _numeric_columns(table_dir: Path) -> list[str]:
    schema = pq.read_schema(next(table_dir.rglob("*.parquet")))
    return [f.name for f in schema if any(test(f.type) for test in _NUMERIC)]


#: Gold tables that hold rows only once people act (incident handling).
EMPTY_UNTIL_ACTED_ON = {"incident_state"}


def test_spark_reads_gold_with_the_same_counts_and_sums_as_duckdb(estate, spark) -> None:
    settings, _ = estate
    tables = _gold_tables(Lake.from_settings(settings))
    assert len(tables) >= 10, f"the estate has too little gold to compare: {sorted(tables)}"
    compared_sums = 0
    for name, directory in tables.items():
        numeric = _numeric_columns(directory)
        glob = f"{directory}/**/*.parquet"
        sums = ", ".join(f'sum("{c}")::DOUBLE' for c in numeric)
        duck = duckdb.execute(
            f"SELECT count(*){', ' + sums if sums else ''} FROM read_parquet(?, "
            "hive_partitioning = true, union_by_name = true)",
            [glob],
        ).fetchone()
        frame = spark.read.option("mergeSchema", "true").parquet(str(directory))
        row = frame.agg(
            F.count(F.lit(1)), *[F.sum(F.col(c).cast("double")) for c in numeric]
        ).collect()[0]
        assert row[0] == duck[0], (name, "rows", row[0], duck[0])
        # Gold nobody has acted on yet (incident_state before any handling) is empty; the
        # rest must hold rows for the comparison to mean something.
        assert duck[0] > 0 or name in EMPTY_UNTIL_ACTED_ON, (name, "no rows")
        for column, theirs, ours in zip(numeric, row[1:], duck[1:], strict=True):
            if ours is None:
                assert theirs is None, (name, column)
                continue
            assert math.isclose(theirs, ours, rel_tol=1e-9, abs_tol=1e-6), (
                name,
                column,
                theirs,
                ours,
            )
            compared_sums += 1
        if "dt" in frame.columns:
            days = {r[0] for r in frame.select("dt").distinct().collect()}
            assert all(isinstance(d, str) for d in days), "partition values stay strings"
    assert compared_sums >= 20, "too few numeric columns were compared"
