"""DuckDB connections for the pipeline's own work: bounded memory, spilling to the state dir.

DuckDB's default memory limit is 80 % of the machine, so a large aggregation (a day of a
province's metric points) could take most of it beside everything else the process holds.
Every in-process connection the pipeline opens goes through :func:`connect`: it caps DuckDB's
memory at ``Settings.duckdb_memory_mb`` and lets it spill sorts, joins and aggregations to
``<state dir>/duckdb-spill`` instead.
"""

from __future__ import annotations

import duckdb

from opslake.settings import Settings


def connect(
    database: str = ":memory:", *, threads: int | None = None, settings: Settings | None = None
) -> duckdb.DuckDBPyConnection:
    """A connection with the memory cap and spill directory (and ``threads``, if given)."""
    settings = settings or Settings.from_env()
    spill = settings.state_dir / "duckdb-spill"
    spill.mkdir(parents=True, exist_ok=True)
    config = {"memory_limit": f"{settings.duckdb_memory_mb}MB", "temp_directory": str(spill)}
    if threads is not None:
        config["threads"] = threads
    return duckdb.connect(database, config=config)
