"""The pipeline's DuckDB connections: a memory cap and a spill directory from the settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from opslake.errors import ConfigError
from opslake.lake import duck
from opslake.settings import Settings


def test_pipeline_duckdb_connections_are_capped_and_spill_under_the_state_dir(
    tmp_path: Path,
) -> None:
    settings = Settings.from_env(
        {
            "OPSLAKE_HOME": str(tmp_path / "lake"),
            "OPSLAKE_STATE_DIR": str(tmp_path / "state"),
            "OPSLAKE_DUCKDB_MEMORY_MB": "256",
        }
    )
    con = duck.connect(settings=settings, threads=1)
    try:
        limit, spill, threads = con.execute(
            "SELECT current_setting('memory_limit'), current_setting('temp_directory'), "
            "current_setting('threads')"
        ).fetchone()
    finally:
        con.close()
    assert limit.replace(" ", "") in {"256.0MiB", "244.1MiB", "256MiB"}, limit
    assert spill == str(tmp_path / "state" / "duckdb-spill") and threads == 1
    with pytest.raises(ConfigError, match="OPSLAKE_DUCKDB_MEMORY_MB='lots'"):
        Settings.from_env({"OPSLAKE_DUCKDB_MEMORY_MB": "lots"})
