"""Jobs and schedules: the daily pipeline over every partitioned asset, then serving."""

from __future__ import annotations

import dagster as dg

daily_pipeline = dg.define_asset_job(
    "daily_pipeline",
    selection=dg.AssetSelection.groups("landing", "bronze", "silver", "gold"),
    description="Landing → bronze → silver → gold for one UTC day.",
)

serving_refresh = dg.define_asset_job(
    "serving_refresh",
    selection=dg.AssetSelection.groups("serving"),
    description="Rebuild the read-only serving warehouse from gold and swap it in.",
)

defs = dg.Definitions(
    jobs=[daily_pipeline, serving_refresh],
    schedules=[
        # Shortly after midnight UTC, once the previous day's last batches have landed.
        dg.build_schedule_from_partitioned_job(daily_pipeline, hour_of_day=0, minute_of_hour=30),
    ],
)
