"""What every command group shares: the consoles, settings, the lake, day parsing, progress."""

from __future__ import annotations

import sys
from datetime import date
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from opslake.errors import ConfigError
from opslake.settings import Settings

if TYPE_CHECKING:
    from opslake.lake.storage import Lake

# Messages go to stderr and results to stdout; piped output (make, CI logs) gets wide lines
# instead of rich's 80-column default.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
stdout = Console(width=None if sys.stdout.isatty() else 160)


def current_settings() -> Settings:
    """The settings of this run, from the environment."""
    return Settings.from_env()


def open_lake() -> Lake:
    """The lake the settings name."""
    from opslake.lake.storage import Lake  # pyarrow: only for the commands that need it

    return Lake.from_settings(current_settings())


def parse_day(value: str | None, name: str) -> date | None:
    """``value`` (YYYY-MM-DD) as a date, None when not given; a clear error naming ``name``."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a date; use YYYY-MM-DD") from None


def progress() -> Progress:
    """A progress display on the console (nothing when it is not a terminal)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )
