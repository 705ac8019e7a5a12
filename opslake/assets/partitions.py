"""The one time partitioning every layer shares: a UTC day."""

import dagster as dg

from opslake.settings import Settings

# end_offset=1 makes the current (still filling) day a partition too, so data pushed or
# pulled today from live sources can be materialized; schedules target yesterday.
DAILY = dg.DailyPartitionsDefinition(
    start_date=Settings.from_env().partition_start.isoformat(), timezone="UTC", end_offset=1
)
