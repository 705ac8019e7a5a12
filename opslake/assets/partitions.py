"""The one time partitioning every layer shares: a UTC day."""

import dagster as dg

from opslake.settings import Settings

DAILY = dg.DailyPartitionsDefinition(
    start_date=Settings.from_env().partition_start.isoformat(), timezone="UTC"
)
