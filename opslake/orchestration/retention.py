"""Landing retention: a daily job and ``opslake landing purge`` over ``opslake.lake.retention``.

Both purge the landed batches of days older than ``OPSLAKE_LANDING_RETENTION_DAYS`` that
every silver table reading their source holds, and record each purge with its counts in
the audit log (and the run's log). The job runs after the daily backup (02:00 UTC), so the
newest backup still holds what it removes.
"""

# No `from __future__ import annotations`: Dagster reads the op's annotations as types.
from datetime import UTC, datetime

import dagster as dg

from opslake.assets.keys import BRONZE_SOURCES, SILVER_READERS
from opslake.assets.resources import LakeResource
from opslake.lake import retention
from opslake.lake.landing import LandingZone
from opslake.orchestration.maintenance import daily_op_job
from opslake.security.audit import AuditLog
from opslake.settings import Settings

ACTION = "opslake landing purge"


def readers() -> retention.Readers:
    """Per landing source, each of its bronze tables with the silver tables reading it."""
    # The registries fill as the assets are defined: import the code location first (here,
    # not at the top, because the code location imports this module).
    from opslake.orchestration import definitions  # noqa: F401

    out: dict[str, dict[str, list[str]]] = {}
    for table, source in BRONZE_SOURCES.items():
        out.setdefault(source, {})[table] = sorted(SILVER_READERS.get(table, ()))
    return out


def purge_landing(
    settings: Settings,
    *,
    dry_run: bool,
    who: str,
    role: str,
    client: str | None = None,
    admin: str | None = None,
) -> retention.PurgeReport:
    """Purge landing past the retention as ``who`` (vouched for by ``admin``, from the CLI);
    a real purge is audited with its counts."""
    now = datetime.now(UTC)
    report = retention.purge(
        LandingZone.from_settings(settings),
        readers(),
        retention_days=settings.landing_retention_days,
        today=now.date(),
        now=now,
        dry_run=dry_run,
    )
    if not dry_run:
        audit = AuditLog.from_settings(settings)
        try:
            params = report.counts() | ({"admin": admin} if admin else {})
            audit.append(
                who=who,
                role=role,
                action=ACTION,
                status=0,
                params=params,
                rows=len(report.purged),
                client=client,
            )
        finally:
            audit.close()
    return report


@dg.op(tags={"kind": "retention"})
def purge_landing_op(context: dg.OpExecutionContext, lake: LakeResource) -> None:
    """Purge landing past OPSLAKE_LANDING_RETENTION_DAYS (0 keeps it) that silver holds."""
    report = purge_landing(
        lake.settings(), dry_run=False, who="dagster", role="job", client=context.run_id
    )
    counts = report.counts()
    context.log.info(
        f"landing purge before {counts['cutoff']}: {counts['purged']} batch(es), "
        f"{counts['purged_bytes']:,} bytes removed; {counts['kept']} kept "
        "(not yet in silver)"
    )


landing_purge_job, landing_purge_schedule = daily_op_job(
    purge_landing_op,
    name="landing_purge",
    kind="retention",
    cron="0 3 * * *",
    when="Daily at 03:00 UTC, after the backup.",
)

defs = dg.Definitions(jobs=[landing_purge_job], schedules=[landing_purge_schedule])
