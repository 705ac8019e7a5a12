"""Reports domain: periodic service reports rendered from the Superset screens (S5.3j, S5.4b).

Thin wiring around :mod:`opslake.screens.reports`: the asset renders the configured report
kinds for a period, keeps them in the lake under ``reports/<kind>/<period>/`` and e-mails
them. It has no upstream dependency (it reads the serving warehouse through Superset), so it
runs in its own job, ``service_reports``, on schedules that start stopped.
"""

from datetime import date, timedelta

import dagster as dg
from pydantic import Field

from opslake.assets.keys import OWNER, key
from opslake.assets.resources import LakeResource
from opslake.assets.retries import STEP_RETRY
from opslake.errors import ConfigError
from opslake.screens.reports import Period, produce, report_kind


class ServiceReportsConfig(dg.Config):
    """Which reports to render: kinds, the period (None: the one with the newest data)."""

    kinds: list[str] = Field(default_factory=lambda: ["weekly"])
    #: ``2026-11-25``, ``2026-W48`` or ``2026-11``; only with a single kind.
    period: str | None = None
    #: E-mail each report to the receivers of ``reports`` in notify.yaml.
    send: bool = True


@dg.asset(
    key=key("gold", "service_reports"),
    group_name="reports",
    kinds={"superset", "pdf"},
    owners=[OWNER],
    description=(
        "运维服务报告 / periodic service reports (daily, weekly, monthly): the Superset screens "
        "服务质量 (SLA attainment, MTTA/MTTR, changes), 事件与告警 (incidents and their root "
        "causes), 资源台账 (assets, warranties and contracts expiring) and 数据质量, rendered "
        "by headless Chromium to one PDF (cover + one page per screen) and a PNG per screen, "
        "limited to the period; kept in the lake under reports/<kind>/<period>/ with a "
        "manifest.json (kind, period, pages, bytes, sha256, generated_at) and e-mailed to the "
        "receivers of `reports` in config/alerting/notify.yaml. Needs Superset installed "
        "(infra/install-superset.sh); starts it for the run when it is not running. Its "
        "schedules start stopped."
    ),
)
def service_reports(
    context: dg.AssetExecutionContext, config: ServiceReportsConfig, lake: LakeResource
) -> dg.MaterializeResult:
    """Render, keep and send the configured reports."""
    for kind in config.kinds:
        report_kind(kind)
    if config.period and len(config.kinds) != 1:
        raise ConfigError(
            f"period {config.period!r} names one kind's period; give exactly one kind with it"
        )
    rows = [
        produce(lake.settings(), kind, config.period, send_mail=config.send, say=context.log.info)
        for kind in config.kinds
    ]
    return dg.MaterializeResult(
        metadata={
            "reports": dg.MetadataValue.md(
                "\n".join(
                    f"- {r['kind']} {r['period']}: {r['pages']} pages, {r['bytes']:,} bytes, "
                    f"`{r['path']}`"
                    + (f", e-mailed to {', '.join(r['emailed_to'])}" if r["emailed_to"] else "")
                    for r in rows
                )
            ),
            "pages": sum(r["pages"] for r in rows),
            "sha256": ", ".join(r["sha256"] for r in rows),
        }
    )


service_reports_job = dg.define_asset_job(
    "service_reports",
    selection=[service_reports],
    description="Render the periodic service reports from the Superset screens, keep and "
    "e-mail them.",
    op_retry_policy=STEP_RETRY,
)


def _run(kind: str, period: str) -> dg.RunRequest:
    op = "gold__service_reports"
    return dg.RunRequest(
        run_key=f"{kind}:{period}",
        run_config={"ops": {op: {"config": {"kinds": [kind], "period": period}}}},
    )


def _report_schedule(kind: str, cron: str, when: str) -> dg.ScheduleDefinition:
    """The schedule of ``kind`` reports: the period that ended yesterday, local time."""

    @dg.schedule(
        name=f"{kind}_report_schedule",
        cron_schedule=cron,
        job=service_reports_job,
        execution_timezone="Asia/Shanghai",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=f"{when}. Stopped by default: it needs Superset installed.",
    )
    def report_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day: date = context.scheduled_execution_time.date() - timedelta(days=1)
        return _run(kind, Period.containing(kind, day).label)

    return report_schedule


report_schedules = [
    _report_schedule(
        "daily",
        "0 2 * * *",
        "Yesterday's daily report (after the daily pipeline and serving refresh)",
    ),
    _report_schedule("weekly", "30 2 * * 1", "Last ISO week's report, Monday morning"),
    _report_schedule("monthly", "0 3 1 * *", "Last month's report, on the 1st"),
]


defs = dg.Definitions(
    assets=[service_reports], jobs=[service_reports_job], schedules=report_schedules
)
