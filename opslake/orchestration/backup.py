"""The scheduled backup (S6.10d): a daily job writing ``state_dir/backups``, keeping the newest.

The job ``backup`` runs :func:`opslake.security.backup.scheduled`: one archive
``opslake-<UTC timestamp>.tar.gz``, verified, then all but the newest ``OPSLAKE_BACKUP_KEEP``
deleted. Without the passphrase variable the run fails: a backup is never written unsealed.
"""

# No `from __future__ import annotations`: Dagster reads the op's annotations as types.
import dagster as dg

from opslake.assets.resources import LakeResource
from opslake.orchestration.maintenance import daily_op_job
from opslake.security import backup


@dg.op(
    tags={"kind": "backup"},
    description="Back up the state directory, the lake and the sealed keys into "
    "state_dir/backups, verify the archive, then delete all but the newest "
    "OPSLAKE_BACKUP_KEEP.",
)
def backup_installation(context: dg.OpExecutionContext, lake: LakeResource) -> None:
    settings = lake.settings()
    passphrase = backup.passphrase_from_env(settings)
    if passphrase is None:
        raise dg.Failure(
            f"{settings.backup_passphrase_env} is not set in the environment of "
            "the Dagster daemon, so no backup was written (keys are never stored "
            "unsealed): set it there, then run the job again",
            allow_retries=False,
        )
    made, removed = backup.scheduled(settings, passphrase)
    if made.warning:
        context.log.warning(made.warning)
    context.log.info(
        f"wrote {made.path} ({made.entries} entries, {made.size:,} bytes, lake "
        f"{made.lake}); removed {len(removed)} older backup(s)"
    )


backup_job, backup_schedule = daily_op_job(
    backup_installation,
    name="backup",
    kind="backup",
    cron="0 2 * * *",
    when="Daily at 02:00 UTC, after the daily pipeline.",
)

defs = dg.Definitions(jobs=[backup_job], schedules=[backup_schedule])
