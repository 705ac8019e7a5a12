"""A multi-metric anomaly detector per entity: an isolation forest over each entity's metric vector.

Input is the long silver ``metric_points`` table (ts, entity_id, metric, value). Points are
averaged onto a regular grid (5 minutes by default), so each entity has one vector of its
metrics per time step. Each (entity, metric) is standardised with robust statistics of the
training window (median, IQR), which removes the level differences between entities. Metrics
that trend through the training window (disk and pool usage) are judged by their change per
step rather than their level, which would otherwise leave last week's range. A missing
metric is imputed with its expectation given the entity's other metrics at that step (the
Gaussian conditional mean under the type's training covariance), which is the training median
(z = 0) when nothing else is known.

One model per entity *type* (the part of the id before the first ``-``, or a mapping given
to :func:`fit`): entities of a type share their metric set, and after per-entity
standardisation their normal behaviour looks alike, so pooling gives each forest many more
normal vectors than one entity's history would and keeps the model count at about twenty
instead of one per CI. What stays per entity is the standardisation.

An isolation forest cuts one feature at a time, so it isolates a point that breaks the
*relationship* between metrics (CPU high while requests are at their normal low) much less
readily than one that is extreme in a single metric. Each vector is therefore given to the
forest twice: as robust z-scores and whitened (projected onto the principal axes of the
type's shrunk training covariance, scaled to unit variance), where a broken correlation
becomes a large value on a minor axis.

The raw isolation score is calibrated through the empirical CDF of the training scores, so a
score of 0.99 means "more anomalous than 99 % of the training window". ``top_metrics`` names
the metrics that explain a vector best: ranked by the larger of the metric's robust |z| and
its |z| given the other metrics (the Gaussian conditional residual from the precision matrix),
so that both an extreme metric and one that no longer fits the others are named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from opslake.errors import InputError

# scikit-learn is imported where a model is fitted: importing it here cost every process
# that loads the Dagster definitions 1.2 s (opslake.ml.training imports this module).
if TYPE_CHECKING:
    from sklearn.ensemble import IsolationForest

#: Width of the time grid, in polars duration syntax.
STEP = "5m"
#: How many metrics ``top_metrics`` names.
TOP = 3
# Extreme z-scores (a counter that is 0 for a week, then moves) would otherwise dominate the
# forest's split ranges and the covariance; beyond this everything is "very far" anyway.
_Z_CLIP = 20.0
# The covariance is estimated on z clipped harder, so faults inside the training window
# do not define the correlations of normal operation.
_COV_CLIP = 4.0
_CDF_POINTS = 1001
_TREND_R2 = 0.5


@dataclass
class TypeModel:
    """The forest, whitening and score calibration of one entity type."""

    metrics: list[str]
    covariance: np.ndarray
    whitening: np.ndarray
    conditional: np.ndarray
    forest: IsolationForest
    cdf: np.ndarray
    rows: int


@dataclass
class MultiMetricModel:
    """Per-entity robust statistics plus one :class:`TypeModel` per entity type (picklable)."""

    step: str
    stats: pl.DataFrame
    types: dict[str, TypeModel]
    train_start: datetime
    train_end: datetime
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def trending(self) -> list[tuple[str, str]]:
        """(entity type, metric) pairs judged by their change per step, not their level."""
        return sorted(
            self.stats.filter("trend").select("entity_type", "metric").unique().iter_rows()
        )

    @property
    def entities(self) -> list[str]:
        """Entities the model can score (those seen in the training window)."""
        return sorted(self.stats["entity_id"].unique().to_list())


def _grid(points: Any, step: str) -> pl.DataFrame:
    """Mean of each (entity, metric) per grid step, finite values only."""
    frame = points if isinstance(points, pl.DataFrame) else pl.from_pandas(points)
    missing = {"ts", "entity_id", "metric", "value"} - set(frame.columns)
    if missing:
        raise InputError(
            f"metric points lack the columns {sorted(missing)}; pass the silver "
            "metric_points table (ts, entity_id, metric, value)"
        )
    return (
        frame.lazy()
        .select(
            "ts",
            pl.col("entity_id").cast(pl.String),
            pl.col("metric").cast(pl.String),
            pl.col("value").cast(pl.Float64),
        )
        .filter(pl.col("value").is_finite() & pl.col("entity_id").is_not_null())
        .group_by("entity_id", "metric", pl.col("ts").dt.truncate(step))
        .agg(pl.col("value").mean())
        .sort("entity_id", "metric", "ts")
        # Change per grid step since the previous value (null for an entity's first one).
        .with_columns(
            change=(
                pl.col("value").diff() / (pl.col("ts").diff() / pl.duration(**_duration(step)))
            ).over("entity_id", "metric")
        )
        .collect()
    )


def _duration(step: str) -> dict[str, int]:
    """``5m`` → ``{"minutes": 5}``, for the step widths a metric grid uses."""
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    if step[-1:] not in units or not step[:-1].isdigit() or int(step[:-1]) == 0:
        raise InputError(
            f"grid step {step!r} is not supported; use a number followed by s, m, h or d (e.g. 5m)"
        )
    return {units[step[-1]]: int(step[:-1])}


def _observed() -> pl.Expr:
    """The value a metric is judged by: its level, or its change per step if it trends."""
    return pl.when(pl.col("trend")).then(pl.col("change")).otherwise(pl.col("value"))


def _standardise(grid: pl.DataFrame, stats: pl.DataFrame) -> pl.DataFrame:
    """Robust z of every grid value; (entity, metric) pairs unknown to ``stats`` drop out."""
    return (
        grid.join(stats, on=["entity_id", "metric"], how="inner")
        .select(
            "entity_type",
            "entity_id",
            "ts",
            "metric",
            ((_observed() - pl.col("median")) / pl.col("scale")).clip(-_Z_CLIP, _Z_CLIP).alias("z"),
        )
        .drop_nulls("z")
    )


def _vectors(
    z: pl.DataFrame, entity_type: str, metrics: list[str]
) -> tuple[pl.DataFrame, np.ndarray]:
    """(entity_id, ts) keys and the z matrix of one type, NaN where a metric is missing."""
    wide = (
        z.filter(pl.col("entity_type") == entity_type)
        .pivot(on="metric", index=["entity_id", "ts"], values="z")
        .sort("entity_id", "ts")
    )
    if wide.is_empty():  # no points of this type (literals below would make one row)
        return wide.select("entity_id", "ts"), np.empty((0, len(metrics)))
    matrix = (
        wide.select(
            [pl.col(m) if m in wide.columns else pl.lit(None, pl.Float64).alias(m) for m in metrics]
        )
        .fill_null(np.nan)
        .to_numpy()
    )
    return wide.select("entity_id", "ts"), np.array(matrix, dtype=float)


def _impute(matrix: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Fill missing z with their expectation given the metrics present (0 when none is).

    Filling with the median alone (z = 0) breaks the correlations: a VM whose latency metric
    is absent while its load is high would look like a joint anomaly.
    """
    missing = np.isnan(matrix)
    if not missing.any():
        return matrix
    out = np.where(missing, 0.0, matrix)
    # One solve per missingness pattern; real data has a handful of them.
    patterns, which = np.unique(missing, axis=0, return_inverse=True)
    for k, gap in enumerate(patterns):
        if gap.any() and not gap.all():
            rows = which.ravel() == k
            weights = np.linalg.lstsq(cov[np.ix_(~gap, ~gap)], cov[np.ix_(~gap, gap)], rcond=None)[
                0
            ]
            out[np.ix_(rows, gap)] = out[np.ix_(rows, ~gap)] @ weights
    return out


def _features(matrix: np.ndarray, whitening: np.ndarray) -> np.ndarray:
    return np.hstack([matrix, matrix @ whitening])


def _raw_scores(forest: IsolationForest, features: np.ndarray) -> np.ndarray:
    """Higher is more anomalous."""
    return -forest.score_samples(features)


def fit(
    points: Any,
    *,
    step: str = STEP,
    entity_types: dict[str, str] | None = None,
    n_estimators: int = 100,
    min_rows: int = 200,
    seed: int = 0,
) -> MultiMetricModel:
    """Learn per-entity robust statistics and one isolation forest per entity type."""
    from sklearn.covariance import LedoitWolf
    from sklearn.ensemble import IsolationForest

    grid = _grid(points, step)  # also checks the step
    if grid.is_empty():
        raise InputError(
            "no finite metric points to train on; pass a training window of silver metric_points"
        )
    prefix = pl.col("entity_id").str.extract(r"^([^-]+)")
    type_of = (
        pl.col("entity_id").replace_strict(entity_types, default=prefix) if entity_types else prefix
    )
    grid = grid.with_columns(type_of.alias("entity_type"))
    # Capacity metrics (disk or pool used) grow steadily: a level learnt last week is out of
    # range this week, so they are judged by their change per step instead. A metric trends
    # for a type when a straight line in time explains most of its variance for the typical
    # entity; daily cycles explain none of it.
    trend = (
        grid.group_by("entity_type", "entity_id", "metric")
        .agg(
            pl.corr(pl.col("ts").dt.epoch("s"), "value")
            .pow(2)
            .fill_nan(0.0)
            .fill_null(0.0)
            .alias("r2")
        )
        .group_by("entity_type", "metric")
        .agg((pl.col("r2").median() > _TREND_R2).alias("trend"))
    )
    x = grid.join(trend, on=["entity_type", "metric"]).with_columns(x=_observed()).drop_nulls("x")
    stats = (
        x.group_by("entity_id", "metric", "entity_type", "trend")
        .agg(
            pl.col("x").median().alias("median"),
            (pl.col("x").quantile(0.75) - pl.col("x").quantile(0.25)).alias("iqr"),
            pl.col("x").std().fill_null(0.0).alias("std"),
        )
        # A mostly constant metric has IQR 0: fall back to its standard deviation, and
        # floor the scale so a metric that never moved does not give infinite z.
        .with_columns(
            pl.max_horizontal(
                pl.when(pl.col("iqr") > 0).then(pl.col("iqr") / 1.349).otherwise(pl.col("std")),
                1e-3 * pl.col("median").abs(),
                pl.lit(1e-9),
            ).alias("scale")
        )
        .select("entity_id", "metric", "entity_type", "trend", "median", "scale")
        .sort("entity_id", "metric")
    )
    z = _standardise(grid, stats)
    types = {}
    for entity_type in sorted(z["entity_type"].unique().to_list()):
        metrics = sorted(z.filter(pl.col("entity_type") == entity_type)["metric"].unique())
        _, matrix = _vectors(z, entity_type, metrics)
        if len(matrix) < min_rows:
            continue
        complete = matrix[~np.isnan(matrix).any(axis=1)]
        basis = complete if len(complete) >= min_rows else np.nan_to_num(matrix)
        cov = LedoitWolf().fit(np.clip(basis, -_COV_CLIP, _COV_CLIP)).covariance_
        matrix = _impute(matrix, cov)
        eigenvalues, eigenvectors = np.linalg.eigh(cov)
        whitening = eigenvectors / np.sqrt(np.maximum(eigenvalues, 1e-6))
        precision = np.linalg.pinv(cov)
        conditional = precision / np.sqrt(np.maximum(np.diag(precision), 1e-12))
        forest = IsolationForest(n_estimators=n_estimators, random_state=seed)
        features = _features(matrix, whitening)
        forest.fit(features)
        cdf = np.quantile(_raw_scores(forest, features), np.linspace(0, 1, _CDF_POINTS))
        types[entity_type] = TypeModel(
            metrics, cov, whitening, conditional, forest, cdf, len(matrix)
        )
    if not types:
        raise InputError(
            f"no entity type has {min_rows} grid rows to train on; use a longer "
            "training window or a lower min_rows"
        )
    stats = stats.filter(pl.col("entity_type").is_in(list(types)))
    params = {"step": step, "n_estimators": n_estimators, "min_rows": min_rows, "seed": seed}
    return MultiMetricModel(step, stats, types, grid["ts"].min(), grid["ts"].max(), params)


def score(model: MultiMetricModel, points: Any) -> Any:
    """Calibrated score in [0, 1] and top metrics per (entity, grid step).

    Returns ts, entity_id, entity_type, score, top_metrics (a polars DataFrame, or pandas
    when ``points`` is pandas). Entities or metrics not seen in training are not scored.
    """
    z = _standardise(_grid(points, model.step), model.stats)
    parts = []
    for entity_type, tm in model.types.items():
        keys, matrix = _vectors(z, entity_type, tm.metrics)
        if not len(matrix):
            continue
        missing = np.isnan(matrix)
        matrix = _impute(matrix, tm.covariance)
        raw = _raw_scores(tm.forest, _features(matrix, tm.whitening))
        calibrated = np.interp(raw, tm.cdf, np.linspace(0, 1, _CDF_POINTS))
        contribution = np.maximum(np.abs(matrix), np.abs(matrix @ tm.conditional))
        # An imputed value is no evidence, so it never explains a score.
        contribution[missing] = -1.0
        top = np.array(tm.metrics)[np.argsort(-contribution, axis=1, kind="stable")[:, :TOP]]
        parts.append(
            keys.with_columns(
                pl.lit(entity_type).alias("entity_type"),
                pl.Series("score", calibrated),
                pl.concat_list(
                    [pl.Series(f"_top{i}", top[:, i]) for i in range(top.shape[1])]
                ).alias("top_metrics"),
            )
        )
    columns = ["ts", "entity_id", "entity_type", "score", "top_metrics"]
    out = (
        pl.concat(parts).select(columns).sort("ts", "entity_id")
        if parts
        else pl.DataFrame(
            schema={
                "ts": pl.Datetime("us", "UTC"),
                "entity_id": pl.String,
                "entity_type": pl.String,
                "score": pl.Float64,
                "top_metrics": pl.List(pl.String),
            }
        )
    )
    return out if isinstance(points, pl.DataFrame) else out.to_pandas()
