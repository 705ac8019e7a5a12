"""Intelligent-analysis domain (S6.7): anomaly scores, forecasts, event risk and model training.

Thin wiring around opslake.ml: the daily ``gold/anomalies`` continues the detector's state
from the day before and lands anomaly episodes as alerts (``landing/ml``, into silver events
by the follow-up job); ``gold/anomalies_live`` does the same for today's points as they land,
in the ``metrics_live_refresh`` job. Both add the multi-metric champion's scores through
``anomalies.with_multivariate``.
"""

from datetime import UTC, datetime

import dagster as dg
import pyarrow as pa

from opslake.assets.keys import OWNER, key
from opslake.assets.partitions import DAILY
from opslake.assets.resources import LakeResource
from opslake.lake.schemas import METRIC_POINTS
from opslake.metrics_catalog.live import LIVE_POINTS
from opslake.ml import anomalies


def _anomaly_metadata(scored: anomalies.Scored, runs: list[dict]) -> dict:
    events = scored.anomalies.column("is_event")
    return {
        "series": scored.series,
        "points_scored": scored.points,
        "rows": scored.anomalies.num_rows,
        "event_points": int(pa.compute.sum(events).as_py() or 0),
        "episodes": len(runs),
        "top": dg.MetadataValue.md(
            "\n".join(
                f"- {r['start']:%H:%M} {r['series']} score {r['peak']:.3f}"
                for r in sorted(runs, key=lambda r: -r["peak"])[:10]
            )
            or "none"
        ),
    }


@dg.asset(
    key=key("gold", "anomalies"),
    group_name="gold",
    kinds={"scikitlearn", "parquet"},
    owners=[OWNER],
    partitions_def=DAILY,
    deps=[key("silver", "metric_points"), key("models", "anomaly_multivariate")],
    description=(
        "指标异常 / anomalies of the day: every (entity, metric, label set) series on a one-minute "
        "grid scored by the causal single-metric detector (opslake.ml.detect, calibrated to "
        "[0, 1]: 1 = rarer than anything the series did before), continuing yesterday's "
        "detector state. Rows: points scoring ≥ 0.6 with the expected level; points ≥ 0.8 are "
        "events, grouped into episodes and landed as alerts (landing/ml → silver events, "
        "source opslake-ml). Where models/anomaly_multivariate has a champion, its per-entity "
        "scores (isolation forest over the entity's metric vector) join as detector "
        "'multivariate' (rows ≥ 0.99, events ≥ 0.999, explanation = the metrics that moved)."
    ),
)
def anomalies_daily(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Score the day's metric points and land its anomaly episodes."""
    lk, day = lake.lake(), context.partition_key
    # A day of an estate is scored a few million points at a time (whole series).
    scored, model = anomalies.with_multivariate(
        lk,
        anomalies.score_day(lk, day, anomalies.point_slices(lk, day)),
        lambda: lk.read_table(
            "silver",
            "metric_points",
            schema=METRIC_POINTS,
            dts=[day],
            columns=["ts", "entity_id", "metric", "value"],
        ),
    )
    lk.write_table(scored.anomalies, "gold", "anomalies", {"dt": day})
    runs = anomalies.episodes(scored.anomalies)
    anomalies.land_events(lk, day, runs, datetime.now(UTC))
    return dg.MaterializeResult(
        metadata={**_anomaly_metadata(scored, runs), "multivariate_model": model}
    )


@dg.asset(
    key=key("gold", "anomalies_live"),
    group_name="live",
    kinds={"scikitlearn", "parquet"},
    owners=[OWNER],
    deps=[key("silver", LIVE_POINTS), key("models", "anomaly_multivariate")],
    description=(
        "Today's anomalies so far, from the metric points conformed as they land "
        "(silver/metric_points_live), scored with the same detector from yesterday's end "
        "state and, where models/anomaly_multivariate has a champion, by the multi-metric "
        "model as in gold/anomalies (detector 'multivariate'); episodes land as alerts at "
        "once. Refreshed by metrics_live_sensor within a minute of data landing; the daily "
        "gold/anomalies replaces it."
    ),
)
def anomalies_live(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Score today's live points and land new episodes."""
    lk = lake.lake()
    day = datetime.now(UTC).date().isoformat()
    points = (
        lk.dataset("silver", LIVE_POINTS, schema=METRIC_POINTS, dts=[day]).to_table()
        if day in lk.partitions("silver", LIVE_POINTS)
        else METRIC_POINTS.empty_table()
    )
    scored, model = anomalies.with_multivariate(
        lk, anomalies.score_day(lk, day, points, save=False), points
    )
    lk.write_table(scored.anomalies, "gold", "anomalies_live", {"dt": day})
    runs = anomalies.episodes(scored.anomalies)
    anomalies.land_events(lk, day, runs, datetime.now(UTC))
    return dg.MaterializeResult(
        metadata={**_anomaly_metadata(scored, runs), "multivariate_model": model}
    )


defs = dg.Definitions(assets=[anomalies_daily, anomalies_live])
