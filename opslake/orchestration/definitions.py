"""The Dagster code location: assembles each domain's definitions, nothing else."""

from __future__ import annotations

import dagster as dg

from opslake.assets import (
    alerting,
    cmdb,
    events,
    forecasts,
    health,
    logs,
    metric_catalog,
    metrics,
    ml,
    models,
    probes,
    quality,
    reports,
    serving,
    tickets,
)
from opslake.assets.resources import LakeResource
from opslake.orchestration import backup, collection, jobs, retention

defs = dg.Definitions.merge(
    cmdb.defs,
    metrics.defs,
    events.defs,
    alerting.defs,
    logs.defs,
    tickets.defs,
    probes.defs,
    health.defs,
    metric_catalog.defs,
    ml.defs,
    models.defs,
    forecasts.defs,
    quality.defs,
    reports.defs,
    serving.defs,
    jobs.defs,
    collection.defs,
    backup.defs,
    retention.defs,
    dg.Definitions(resources={"lake": LakeResource()}),
)
