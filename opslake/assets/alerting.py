"""Alert management domain (S5.5b-i): incidents from alert convergence, notification, hand-off.

Thin wiring around opslake.alerting: the daily ``gold/incidents`` (with its alerts and the
day's compression ratio) is history and notifies nobody; the live path (``alerts_live_sensor``
→ ``alerts_live_refresh``) conforms alert batches as they land, converges today's alerts into
``gold/incidents_live`` and delivers new and resolved incidents to their receivers (delivery log
in the lake). ``runbook_sensor`` launches the self-healing job a runbook names for an incident.
"""

import hashlib
import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pyarrow as pa

from opslake.alerting import handling, handoff
from opslake.alerting import live as alert_live
from opslake.alerting.dispatch import DeliveryLog, Dispatcher, NotifyConfig
from opslake.alerting.enrich import RunbookIndex
from opslake.alerting.incidents import converge
from opslake.alerting.notify import assignee_groups, render
from opslake.alerting.rules import ConvergenceRules
from opslake.assets.conform import SilverTable, resolver_for_day, silver_asset
from opslake.assets.ingest import BronzeTable, SourceSpec, source_assets
from opslake.assets.keys import OWNER, daily_table_asset, key
from opslake.assets.partitions import DAILY
from opslake.assets.resources import LakeResource
from opslake.assets.retries import STEP_RETRY
from opslake.lake.cmdb import cmdb_as_of, end_of_day
from opslake.lake.storage import Lake
from opslake.settings import Settings

INPUTS = [
    key("silver", "events"),
    key("silver", "tickets"),
    key("silver", "assets"),
    key("silver", "relations"),
    key("gold", "anomalies"),
]


def _converged_metadata(stats: pa.Table, incidents: pa.Table) -> dict:
    row = stats.to_pylist()[0]
    top = sorted(incidents.to_pylist(), key=lambda r: -r["alert_count"])[:10]
    return {
        "alerts": row["alerts"],
        "incidents": row["incidents"],
        "compression_ratio": dg.MetadataValue.float(round(row["compression_ratio"], 3)),
        "muted_alerts": row["muted_alerts"],
        "muted_incidents": row["muted_incidents"],
        "by_correlation": dg.MetadataValue.json(json.loads(row["by_correlation"])),
        "largest": dg.MetadataValue.md(
            "\n".join(
                f"- {r['started_at']:%H:%M} {r['title']} → {r['root_cause'] or '-'}" for r in top
            )
            or "none"
        ),
    }


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            key("gold", "incidents"),
            group_name="gold",
            kinds={"parquet"},
            owners=[OWNER],
            deps=INPUTS,
            partitions_def=DAILY,
            description=(
                "事件 / incidents of the day from alert convergence: alert episodes "
                "(silver events, not data-quality ones) muted when flapping, inside "
                "an announced change window or inhibited (config/alerting/"
                "convergence.yaml), grouped by correlation rules, topology and time, "
                "with ranked root-cause candidates and their evidence, and enrichment "
                "(CMDB owner, business, department, location, contract and warranty "
                "state, recent changes, runbooks). An incident still open at midnight "
                "is written again the next day: readers take the newest row."
            ),
        ),
        dg.AssetSpec(
            key("gold", "incident_alerts"),
            group_name="gold",
            kinds={"parquet"},
            owners=[OWNER],
            deps=[key("gold", "incidents")],
            partitions_def=DAILY,
            description="The alert episodes of each incident: fingerprint, "
            "occurrence (nth start of that fingerprint), why muted, and "
            "whether it is on the probable root cause.",
        ),
        dg.AssetSpec(
            key("gold", "incident_stats"),
            group_name="gold",
            kinds={"parquet"},
            owners=[OWNER],
            deps=[key("gold", "incidents")],
            partitions_def=DAILY,
            description="The day's convergence figures: alert episodes, incidents, "
            "compression ratio (episodes per incident), muted counts.",
        ),
    ],
)
def incidents_daily(context: dg.AssetExecutionContext, lake: LakeResource):
    """Converge one day's alerts into incidents."""
    settings, lk, day = lake.settings(), lake.lake(), context.partition_key
    end = end_of_day(day)
    inputs = alert_live.read_inputs(lk, day, cmdb_as_of(lk, day), end)
    done = converge(
        inputs,
        day,
        end,
        ConvergenceRules.load(settings.alerting_dir),
        RunbookIndex.load(settings.alerting_dir),
    )
    lk.write_table(done.incidents, "gold", "incidents", {"dt": day})
    lk.write_table(done.incident_alerts, "gold", "incident_alerts", {"dt": day})
    lk.write_table(done.stats, "gold", "incident_stats", {"dt": day})
    meta = _converged_metadata(done.stats, done.incidents)
    yield dg.MaterializeResult(asset_key=key("gold", "incidents"), metadata=meta)
    yield dg.MaterializeResult(
        asset_key=key("gold", "incident_alerts"), metadata={"rows": done.incident_alerts.num_rows}
    )
    yield dg.MaterializeResult(
        asset_key=key("gold", "incident_stats"),
        metadata={"compression_ratio": meta["compression_ratio"]},
    )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            key("silver", alert_live.LIVE_EVENTS),
            group_name="live",
            kinds={"parquet"},
            owners=[OWNER],
            deps=[key("landing", s) for s in alert_live.SOURCES],
            description="Today's alert states, conformed batch by batch as they land "
            "(one file per landed batch), ahead of the daily silver/events.",
        ),
        dg.AssetSpec(
            key("gold", alert_live.LIVE_INCIDENTS),
            group_name="live",
            kinds={"parquet"},
            owners=[OWNER],
            deps=[
                key("silver", alert_live.LIVE_EVENTS),
                key("silver", "events"),
                key("silver", "tickets"),
                key("silver", "assets"),
            ],
            description="Today's incidents so far (same convergence as gold/incidents "
            "over yesterday's and today's alerts); new and resolved ones "
            "are notified by config/alerting/notify.yaml's routes within a "
            "minute of the alert landing. Delivery log: "
            "alerting/deliveries in the lake.",
        ),
        dg.AssetSpec(
            key("gold", alert_live.LIVE_INCIDENT_ALERTS),
            group_name="live",
            kinds={"parquet"},
            owners=[OWNER],
            deps=[key("gold", alert_live.LIVE_INCIDENTS)],
            description="The alert episodes of today's live incidents.",
        ),
    ],
)
def incidents_live(context: dg.AssetExecutionContext, lake: LakeResource):
    """Conform new alert batches, converge today's alerts, notify what changed."""
    settings, lk = lake.settings(), lake.lake()
    now = datetime.now(UTC)
    day = now.date().isoformat()
    conformed = alert_live.conform_pending(lk, day, resolver_for_day(lk, day))
    inputs = alert_live.read_inputs(
        lk, day, cmdb_as_of(lk, day), now, events=alert_live.live_events(lk, day)
    )
    done = converge(
        inputs,
        day,
        now,
        ConvergenceRules.load(settings.alerting_dir),
        RunbookIndex.load(settings.alerting_dir),
    )
    lk.write_table(done.incidents, "gold", alert_live.LIVE_INCIDENTS, {"dt": day})
    lk.write_table(done.incident_alerts, "gold", alert_live.LIVE_INCIDENT_ALERTS, {"dt": day})
    rows = done.incidents.to_pylist()
    config = NotifyConfig.load(settings.alerting_dir)
    log = DeliveryLog(lk, [(now - timedelta(days=1)).date().isoformat(), day])
    sent = Dispatcher(
        config, log, lambda inc, tr, shifts: render(inc, tr, shifts, config.timezone)
    ).run(rows, assignee_groups(rows, inputs.tickets))
    pruned = alert_live.prune(lk, day)
    context.log.info(
        f"{len(conformed.batches)} new alert batch(es), {len(rows)} incident(s), "
        f"{len(sent)} delivery record(s)"
    )
    yield dg.MaterializeResult(
        asset_key=key("silver", alert_live.LIVE_EVENTS),
        metadata={"batches": len(conformed.batches), "events": conformed.events},
    )
    yield dg.MaterializeResult(
        asset_key=key("gold", alert_live.LIVE_INCIDENTS),
        metadata={
            **_converged_metadata(done.stats, done.incidents),
            "deliveries": dg.MetadataValue.json(
                {s: sum(1 for d in sent if d.status == s) for s in sorted({d.status for d in sent})}
            ),
            "pruned_partitions": len(pruned),
        },
    )
    yield dg.MaterializeResult(
        asset_key=key("gold", alert_live.LIVE_INCIDENT_ALERTS),
        metadata={"rows": done.incident_alerts.num_rows},
    )


alerts_live_job = dg.define_asset_job(
    "alerts_live_refresh",
    selection=dg.AssetSelection.assets(incidents_live),
    description="Conform newly landed alert batches, converge today's incidents and notify.",
    executor_def=dg.in_process_executor,
    op_retry_policy=STEP_RETRY,
)


@dg.sensor(
    job=alerts_live_job,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts alerts_live_refresh when alert batches land today or a failed "
    "notification is due for another attempt.",
)
def alerts_live_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """A run per new set of landed alert batches or due retries (the cursor is their digest)."""
    lk = Lake.from_settings(Settings.from_env())
    now = datetime.now(UTC)
    day = now.date().isoformat()
    pending = sorted(b.batch_id for b in alert_live.pending_batches(lk, day))
    due = sorted(d.key + d.at for d in DeliveryLog(lk, [day]).due(now))
    if not pending and not due:
        return dg.SensorResult(skip_reason=f"no new alert batches or due deliveries for {day}")
    digest = hashlib.sha256("\n".join([day, *pending, *due]).encode()).hexdigest()[:16]
    if digest == context.cursor:
        return dg.SensorResult(skip_reason="a run for these batches was already requested")
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=digest)], cursor=digest)


@dg.op(
    config_schema={"incident_id": str, "entity_id": str, "runbook": str},
    description="Collects the last hour of the cause CI's metrics, logs and alerts into "
    "alerting/actions/<incident>/ for whoever takes the incident.",
)
def collect_diagnostics(context: dg.OpExecutionContext, lake: LakeResource) -> None:
    """Thin wiring around opslake.alerting.handoff.collect_diagnostics."""
    cfg = context.op_config
    path = handoff.collect_diagnostics(
        lake.lake(),
        cfg["incident_id"],
        cfg["entity_id"],
        cfg["runbook"],
        datetime.now(UTC),
        run_id=context.run.run_id,
    )
    context.log.info(f"diagnostics for {cfg['incident_id']} at {path}")


# Resources bound here: a sensor whose job needs them attached later is rebuilt by Dagster
# with a beta parameter, which warns at load time.
@dg.job(
    name="runbook_collect_diagnostics",
    resource_defs={"lake": LakeResource()},
    description="Self-healing hand-off (S5.5e): the first runbook step for an incident.",
)
def runbook_collect_diagnostics() -> None:
    collect_diagnostics()


@dg.sensor(
    jobs=[runbook_collect_diagnostics],
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches the job a runbook names (config/alerting/runbooks.yaml) once "
    "per firing incident whose probable cause raised that alert.",
)
def runbook_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """One run per (incident, runbook job) of today's live incidents."""
    settings = Settings.from_env()
    lk = Lake.from_settings(settings)
    day = datetime.now(UTC).date().isoformat()
    if day not in lk.partitions("gold", alert_live.LIVE_INCIDENTS):
        return dg.SensorResult(skip_reason="no live incidents today")
    wanted = handoff.runbook_requests(
        lk.read_table("gold", alert_live.LIVE_INCIDENTS, dts=[day]).to_pylist(),
        lk.read_table("gold", alert_live.LIVE_INCIDENT_ALERTS, dts=[day]).to_pylist(),
        RunbookIndex.load(settings.alerting_dir),
        known_jobs={runbook_collect_diagnostics.name},
    )
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"{r.incident_id}:{r.job}",
                job_name=r.job,
                run_config={
                    "ops": {
                        "collect_diagnostics": {
                            "config": {
                                "incident_id": r.incident_id,
                                "entity_id": r.entity_id,
                                "runbook": r.alertname,
                            }
                        }
                    }
                },
                tags={"opslake/incident": r.incident_id},
            )
            for r in wanted
        ]
    )


HANDLING = SourceSpec(
    source=handling.SOURCE,
    title="Incident handling actions (acknowledge, assign, comment, severity, resolve, "
    "reopen) recorded by the API and the CLI, one JSON object per action",
    fmt="json",
    bronze=[
        BronzeTable(
            handling.SOURCE,
            handling.parse,
            handling.ACTIONS_SCHEMA,
            "One row per handling action as recorded.",
        )
    ],
)

HANDLING_SPEC = SilverTable(
    name=handling.SOURCE,
    bronze=handling.SOURCE,
    bronze_schema=handling.ACTIONS_SCHEMA,
    schema=handling.ACTIONS_SCHEMA,
    conform=lambda bronze, _resolver: handling.conform(bronze),
    resolves_entities=False,
    description=(
        "事件处置 / who did what to which incident and when (append-only): acknowledge, "
        "assign (user or on-call group), comment, change severity, resolve, reopen; one row "
        "per action, partitioned by the day it was taken (opslake.alerting.handling)."
    ),
)


def _incident_state(lake: Lake, dt: str, metadata: dict) -> pa.Table:
    days = [d for d in lake.partitions("silver", handling.SOURCE) if d <= dt]
    events = handling.events_of(
        lake.read_table("silver", handling.SOURCE, schema=handling.ACTIONS_SCHEMA, dts=days)
    )
    touched = {e.incident_id for e in events if e.at.date().isoformat() == dt}
    states = [s for i, s in handling.fold(events).items() if i in touched]
    metadata["incidents"] = len(states)
    return handling.states_table(states)


gold_incident_state = daily_table_asset(
    "gold",
    "incident_state",
    deps=[key("silver", handling.SOURCE)],
    schema=handling.STATE_SCHEMA,
    build=_incident_state,
    description=(
        "事件处置状态 / each incident's handling as of the end of the day, folded from every "
        "action up to then: open / acknowledged / resolved, assignee, severity override, first "
        "acknowledgement and standing resolution (who and when), reopen and comment counts. A "
        "partition holds the incidents acted on that day; readers take the newest row "
        "(the warehouse view incident_state_current)."
    ),
)


defs = dg.Definitions(
    assets=[
        incidents_daily,
        incidents_live,
        *source_assets(HANDLING),
        silver_asset(HANDLING_SPEC),
        gold_incident_state,
    ],
    jobs=[alerts_live_job, runbook_collect_diagnostics],
    sensors=[alerts_live_sensor, runbook_sensor],
)
