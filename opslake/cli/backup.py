"""``opslake backup …``: create, verify and restore backups of the installation (S6.10d).

The logic lives in :mod:`opslake.security.backup`; these commands parse and print. The
passphrase the keys are sealed under comes from the variable ``OPSLAKE_BACKUP_PASSPHRASE``
(renamed by ``OPSLAKE_BACKUP_PASSPHRASE_VAR``) or a prompt, never from the command line.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from opslake.cli._admin import Admin, AdminCode, vouched
from opslake.errors import BackupError
from opslake.settings import Settings

app = typer.Typer(
    help="Backups of the installation: its state, its lake and its keys "
    "(sealed under a passphrase).",
    no_args_is_help=True,
)


class LakeMode(str, Enum):
    """How the lake goes into a backup."""

    files = "files"
    manifest = "manifest"


def _passphrase(settings: Settings, *, confirm: bool) -> str:
    from opslake.security.backup import passphrase_from_env

    given = passphrase_from_env(settings)
    if given is not None:
        return given
    if not sys.stdin.isatty():
        raise BackupError(
            f"no backup passphrase: set {settings.backup_passphrase_env} in the "
            "environment, or run the command in a terminal to be asked for it"
        )
    return typer.prompt("backup passphrase", hide_input=True, confirmation_prompt=confirm)


@app.command("create")
def create(
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="The archive to write (.tar.gz); replaced atomically."),
    ],
    lake: Annotated[
        LakeMode | None,
        typer.Option(
            help="files: the lake's files go in the archive (default for a local lake); "
            "manifest: only each object's path, size and sha256 (default for an S3 lake, whose "
            "object versioning is the copy)."
        ),
    ] = None,
    admin: Admin = None,
    totp: AdminCode = None,
) -> None:
    """Back up the state directory, the lake and the keys (sealed) into one archive."""
    from opslake.security import backup

    settings = Settings.from_env()
    # The archive holds every key sealed and the lake: an administrator's act, audited.
    with vouched(
        "opslake backup create", str(output), admin, totp, lake=lake.value if lake else "default"
    ) as recorded:
        made = backup.create(
            settings,
            output,
            _passphrase(settings, confirm=True),
            lake_mode=lake.value if lake else None,
        )
        recorded.update(entries=made.entries, bytes=made.size)
    typer.echo(
        json.dumps(
            {
                "path": str(made.path),
                "entries": made.entries,
                "bytes": made.size,
                "lake": made.lake,
                "lake_objects": made.lake_objects,
                "not_included": made.warning,
            }
        )
    )
    if made.warning:
        typer.echo(f"warning: {made.warning}", err=True)


@app.command("verify")
def verify(
    archive: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="The backup archive.")
    ],
    lake_home: Annotated[
        str | None,
        typer.Option(
            help="For a manifest-only backup: the lake to check against its manifest (default: "
            "the one it was made from)."
        ),
    ] = None,
) -> None:
    """Check the manifest's HMAC, that the sealed keys open, and every entry's sha256."""
    from opslake.security import backup

    checked = backup.verify(archive, _passphrase(Settings.from_env(), confirm=False))
    manifest = checked.manifest
    problems: list[str] = []
    if manifest["lake"] == "manifest":
        problems = backup.check_lake(manifest, _lake(lake_home or manifest["source"]["home"]))
    typer.echo(
        json.dumps(
            {
                "ok": not problems,
                "created_at": manifest["created_at"],
                "opslake_version": manifest["opslake_version"],
                "entries": len(manifest["entries"]),
                "keys": sorted(checked.keys),
                "lake": manifest["lake"],
                "lake_objects": len(manifest.get("lake_objects", [])),
            }
        )
    )
    if problems:
        shown = "; ".join(problems[:10])
        raise BackupError(
            f"the lake no longer matches the backup's manifest ({len(problems)} "
            f"object(s)): {shown}. Restore those objects from the object "
            "store's versions, or use a newer backup"
        )


def _lake(home: str):
    from opslake.lake.storage import Lake

    if not home.startswith("s3://") and not Path(home).is_dir():
        raise BackupError(
            f"the lake {home} does not exist here; give --lake-home with where it is now"
        )
    return Lake.from_settings(Settings.from_env(overrides={"OPSLAKE_HOME": home}))


@app.command("restore")
def restore(
    archive: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="The backup archive.")
    ],
    home: Annotated[
        Path,
        typer.Option(
            help="A new or empty directory: the restored OPSLAKE_HOME (the state directory too)."
        ),
    ],
) -> None:
    """Restore a backup into an empty directory, checking every entry on the way."""
    from opslake.security import backup

    done = backup.restore(archive, home, _passphrase(Settings.from_env(), confirm=False))
    source = done.manifest["source"]
    typer.echo(
        f"restored {done.entries} entries and {len(done.keys)} key(s) "
        f"(made {done.manifest['created_at']} from {source['home']}) into {done.home}"
    )
    env = f"OPSLAKE_HOME={done.home}"
    if done.manifest["lake"] == "manifest":
        typer.echo(
            f"the lake was not in this backup, only its manifest: point OPSLAKE_HOME at "
            f"{source['home']} with OPSLAKE_STATE_DIR={done.home}, and check it with "
            f"`opslake backup verify {archive}`"
        )
        env = f"OPSLAKE_HOME={source['home']} OPSLAKE_STATE_DIR={done.home}"
    if any(key.name == "data.key.previous" for key in done.keys):
        typer.echo(
            f"previous data keys are in {done.home}/keys/data.key.previous: set "
            "OPSLAKE_DATA_KEY_PREVIOUS to its content until every value is re-encrypted"
        )
    typer.echo(f"next: {env} opslake warehouse build\n      {env} opslake audit verify")
