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
from opslake.orchestration.progress import event_file, step_events

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
    # Loggers act only in runs whose config names them (the CLI's runner): the UI's and the
    # workers' runs keep Dagster's default console logger.
    dg.Definitions(
        resources={"lake": LakeResource()},
        loggers={
            "console": dg.colored_console_logger,
            "steps": step_events,
            "event_file": event_file,
        },
    ),
)
