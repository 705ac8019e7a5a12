"""Wiring mistakes fail loudly (issue 20's silent failures): ``--force`` reaches every model
the training job has, and a silver table reading a bronze table no source declares is a
clear error, not a fallback."""

from __future__ import annotations

import dagster as dg
import pyarrow as pa
import pytest

from opslake.assets.keys import SUITES, partition_check
from opslake.errors import ConfigError
from opslake.lake.landing import LandingZone
from opslake.orchestration import runner


def test_force_is_given_to_every_model_asset_and_each_takes_it() -> None:
    defs = runner.definitions()
    job = defs.resolve_job_def("ml_training")
    models = {
        "__".join(k.path)
        for k in defs.resolve_asset_graph().get_all_asset_keys()
        if k.path[0] == "models"
    }
    ops = runner.training_ops(True)
    assert models and set(ops) == models
    # Dagster refuses config for an op the job lacks, or a field an op does not take.
    dg.validate_run_config(job, {"ops": ops})
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.validate_run_config(job, {"ops": {**ops, "models__gone": {"config": {"force": True}}}})


def test_a_silver_table_reading_an_undeclared_bronze_table_is_a_config_error(
    landing: LandingZone,
) -> None:
    suite = next(name for name in SUITES if name.startswith("silver."))
    table = suite.split(".", 1)[1]
    with pytest.raises(ConfigError, match=r"reads bronze no_such_bronze.*SourceSpec\.bronze"):
        partition_check(landing, "silver", table, pa.schema([]), "2026-03-01", ["no_such_bronze"])
