"""Anomaly detection over the estate: silver metric points → scores → gold ``anomalies`` and events.

Each series (entity, metric, label set) is put on a one-minute grid and scored by the
single-metric detector, carrying on from the detector state saved at the end of the day
before (``ml/detector_state/dt=D.npz`` in the lake, plain arrays, no pickle), so every day
and the streaming path continue one causal history. Where no state was saved, the previous
``history_days`` of silver warm the detector up. Points scoring at least
``REPORT_FLOOR`` are kept in ``gold/anomalies`` with the level the detector expected; runs of
points at or above ``EVENT_THRESHOLD`` become alert episodes landed as Alertmanager
notifications under ``landing/ml`` and reach silver ``events`` with source ``opslake-ml``,
where alert convergence sees them beside every other alert.
"""

import dataclasses
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pyarrow as pa

from opslake.errors import StorageError
from opslake.ingest.parsers.alertmanager import rfc3339, webhook_body
from opslake.lake import duck
from opslake.lake.landing import LandedBatch, LandingZone
from opslake.lake.schemas import METRIC_POINTS, TS
from opslake.lake.series import SLICE_ROWS, series_slices
from opslake.lake.storage import Lake
from opslake.ml.detect import DetectorConfig, DetectorState, score_matrix

GRID_S = 60
#: What scoring reads of a metric point.
_SCORED_COLUMNS = ["ts", "metric", "entity_id", "value", "labels"]
REPORT_FLOOR = 0.6
EVENT_THRESHOLD = 0.8
#: The multi-metric detector's scores are quantiles of its training scores (0.99 = rarer than
#: 99 % of the training window), a looser scale than the record score: it needs its own.
MULTIVARIATE_MODEL = "anomaly_multivariate"
MULTIVARIATE_FLOOR = 0.99
MULTIVARIATE_EVENT = 0.999
#: Points above the threshold this close together are one episode (one alert).
EPISODE_GAP = timedelta(minutes=30)
SOURCE = "ml"
EVENT_SOURCE = "opslake-ml"
ALERTNAME = "MetricAnomaly"
RECEIVER = "opslake-ml"
CONNECTOR = "opslake-ml/1"
STATE_DIR = "ml/detector_state"
#: Labels that say where a sample came from, not which series it is.
NOT_SERIES = ("instance", "job", "entity_id")
_NOT_SERIES = "(" + ", ".join(f"'{k}'" for k in NOT_SERIES) + ")"

ANOMALIES = pa.schema(
    [
        ("ts", TS),
        ("entity_id", pa.string()),
        ("metric", pa.string()),
        ("series", pa.string()),
        ("value", pa.float64()),
        ("expected", pa.float64()),
        ("score", pa.float64()),
        ("detector", pa.string()),
        ("explanation", pa.string()),
        ("is_event", pa.bool_()),
    ]
)


@dataclass
class Grid:
    """Series on a common time grid: ``values[series, time]`` with NaN where nothing came."""

    keys: list[str]
    entity: list[str]
    metric: list[str]
    timestamps: np.ndarray
    values: np.ndarray


def series_key(entity: str, metric: str, labels: dict[str, str] | None) -> str:
    """A stable name for one series: entity, metric and its remaining labels."""
    extra = ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items()) if k not in NOT_SERIES)
    return f"{entity}|{metric}|{extra}"


def grid(points: pa.Table, start: datetime, end: datetime, step_s: int = GRID_S) -> Grid:
    """Mean value per series and step between ``start`` and ``end`` (points without an entity
    are left out: they cannot be told apart from another CI's series)."""
    n = int((end - start).total_seconds() // step_s)
    stamps = np.datetime64(start.replace(tzinfo=None), "s") + np.arange(n) * np.timedelta64(
        step_s, "s"
    )
    if not points.num_rows:
        return Grid([], [], [], stamps, np.empty((0, n)))
    con = duck.connect()
    con.register("points", points.select(["ts", "metric", "entity_id", "value", "labels"]))
    df = pl.from_arrow(
        con.sql(
            f"""
        SELECT entity_id || '|' || metric || '|' || array_to_string(list_sort(list_transform(
                 list_filter(map_entries(labels), lambda e: e.key NOT IN {_NOT_SERIES}),
                 lambda e: e.key || '=' || e.value)), ',') AS key,
               entity_id, metric,
               (epoch(ts)::BIGINT - $t0) // $step AS slot, avg(value) AS value
        FROM points
        WHERE entity_id IS NOT NULL AND isfinite(value)
          AND ts >= to_timestamp($t0) AND ts < to_timestamp($t1)
        GROUP BY ALL ORDER BY key, slot""",
            params={"t0": int(start.timestamp()), "t1": int(end.timestamp()), "step": step_s},
        ).to_arrow_table()
    )
    con.close()
    if not isinstance(df, pl.DataFrame) or df.is_empty():
        return Grid([], [], [], stamps, np.empty((0, n)))
    names = df.select("key", "entity_id", "metric").unique(maintain_order=True)
    index = {k: i for i, k in enumerate(names["key"].to_list())}
    values = np.full((len(index), n), np.nan)
    rows = np.array([index[k] for k in df["key"].to_list()], dtype=np.int64)
    values[rows, df["slot"].to_numpy()] = df["value"].to_numpy()
    return Grid(
        names["key"].to_list(),
        names["entity_id"].to_list(),
        names["metric"].to_list(),
        stamps,
        values,
    )


def _series_arrays(state: DetectorState) -> list[str]:
    """Names of the state's per-series arrays (first axis = series)."""
    return [
        f.name for f in dataclasses.fields(state) if isinstance(getattr(state, f.name), np.ndarray)
    ]


def align(
    state: DetectorState | None,
    keys: list[str],
    new_keys: list[str],
    step_s: float,
    config: DetectorConfig,
) -> DetectorState:
    """A state for ``new_keys``: rows carried over by key, fresh rows for unseen series."""
    fresh = DetectorState.new(len(new_keys), step_s, config)
    if state is None or not keys:
        return fresh
    where = {k: i for i, k in enumerate(keys)}
    src = np.array([where.get(k, -1) for k in new_keys], dtype=np.int64)
    have = src >= 0
    for name in _series_arrays(fresh):
        target = getattr(fresh, name)
        target[have] = getattr(state, name)[src[have]]
    return fresh


def save_state(lake: Lake, day: str, keys: list[str], state: DetectorState) -> str:
    """The state at the end of ``day`` as a NumPy archive in the lake (no pickle)."""
    arrays = {name: getattr(state, name) for name in _series_arrays(state)}
    meta = {
        "step_s": state.step_s,
        "season": state.season,
        "config": dataclasses.asdict(state.config),
    }
    buf = io.BytesIO()
    np.savez_compressed(
        buf, keys=np.array(keys, dtype=str), meta=np.array(json.dumps(meta)), **arrays
    )
    path = lake.path(STATE_DIR, f"dt={day}.npz")
    lake.put_atomic(path, [buf.getvalue()])
    return path


def load_state(lake: Lake, day: str) -> tuple[list[str], DetectorState] | None:
    """The state saved at the end of ``day``, or None if there is none."""
    path = lake.path(STATE_DIR, f"dt={day}.npz")
    if not lake.exists(path):
        return None
    try:
        with np.load(io.BytesIO(lake.read_bytes(path)), allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            keys = [str(k) for k in z["keys"]]
            state = DetectorState.new(len(keys), meta["step_s"], DetectorConfig(**meta["config"]))
            for name in _series_arrays(state):
                if name in z.files:
                    setattr(state, name, z[name])
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise StorageError(
            f"detector state {path} is unreadable ({exc}); delete it and "
            "re-materialize the day so it is rebuilt from history"
        ) from exc
    return keys, state


def day_bounds(day: str) -> tuple[datetime, datetime]:
    """00:00 UTC of ``day`` and of the next day."""
    start = datetime.combine(date.fromisoformat(day), datetime.min.time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


@dataclass
class Scored:
    """One day's outcome: anomaly rows, the state at its end, and counts for the UI."""

    anomalies: pa.Table
    keys: list[str]
    state: DetectorState
    series: int
    points: int


def score_grid(
    g: Grid, previous: tuple[list[str], DetectorState] | None, config: DetectorConfig | None = None
) -> Scored:
    """Score a grid carrying on from ``previous``; keep the points worth reporting."""
    config = config or DetectorConfig()
    keys, state = previous or ([], None)
    state = align(state, keys, g.keys, GRID_S, config)
    level_before = state.level_mean.copy()
    scores = score_matrix(state, g.timestamps, g.values) if g.keys else np.empty((0, 0))
    rows, cols = np.nonzero(scores >= REPORT_FLOOR)
    expected = _expected(g, level_before, config)
    table = pa.table(
        {
            "ts": pa.array(g.timestamps[cols].astype("datetime64[us]"), TS),
            "entity_id": [g.entity[r] for r in rows],
            "metric": [g.metric[r] for r in rows],
            "series": [g.keys[r] for r in rows],
            "value": g.values[rows, cols],
            "expected": expected[rows, cols],
            "score": scores[rows, cols],
            "detector": pa.array(["single"] * len(rows), pa.string()),
            "explanation": [None] * len(rows),
            "is_event": scores[rows, cols] >= EVENT_THRESHOLD,
        },
        schema=ANOMALIES,
    )
    return Scored(table, g.keys, state, len(g.keys), int(np.isfinite(g.values).sum()))


def _expected(g: Grid, level_before: np.ndarray, config: DetectorConfig) -> np.ndarray:
    """The running level each point was judged against (an EWMA, for display)."""
    from scipy.signal import lfilter

    held = np.where(np.isfinite(g.values), g.values, np.nan)
    start = np.where(
        np.isfinite(level_before),
        level_before,
        np.nanmean(np.where(np.isfinite(held), held, np.nan), axis=1) if held.size else 0.0,
    )
    start = np.nan_to_num(start)
    filled = np.where(np.isfinite(held), held, start[:, None])
    a = config.level_alpha
    level, _ = lfilter([a], [1.0, a - 1.0], filled, axis=1, zi=((1 - a) * start)[:, None])
    return np.concatenate([start[:, None], level[:, :-1]], axis=1)


def episodes(anomalies: pa.Table, gap: timedelta = EPISODE_GAP) -> list[dict]:
    """Runs of event-level points per series: start, end, peak score and value."""
    df = pl.from_arrow(anomalies)
    if not isinstance(df, pl.DataFrame) or df.is_empty():
        return []
    df = (
        df.filter(pl.col("is_event"))
        .sort("series", "ts")
        .with_columns(
            (pl.col("ts").diff().over("series") > gap)
            .fill_null(True)
            .cum_sum()
            .over("series")
            .alias("run")
        )
    )
    runs = (
        df.group_by("series", "run")
        .agg(
            pl.col("entity_id").first(),
            pl.col("metric").first(),
            pl.col("detector").first(),
            pl.col("ts").min().alias("start"),
            pl.col("ts").max().alias("end"),
            pl.col("score").max().alias("peak"),
            pl.col("value").sort_by("score").last().alias("value"),
            pl.col("expected").sort_by("score").last().alias("expected"),
            pl.col("explanation").drop_nulls().first(),
        )
        .sort("start", "series")
    )
    return runs.to_dicts()


def score_multivariate(model: object, points: pa.Table) -> pa.Table:
    """Rows of the multi-metric detector (one per entity and time step) worth reporting."""
    from opslake.ml import multivariate

    if not points.num_rows:
        return ANOMALIES.empty_table()
    frame = pl.from_arrow(points.select(["ts", "entity_id", "metric", "value"]))
    scored = multivariate.score(model, frame.filter(pl.col("entity_id").is_not_null()))
    kept = scored.filter(pl.col("score") >= MULTIVARIATE_FLOOR)
    tops = [list(t or []) for t in kept["top_metrics"].to_list()]
    entities = kept["entity_id"].to_list()
    return pa.table(
        {
            "ts": kept["ts"].to_arrow().cast(TS),
            "entity_id": entities,
            "metric": [t[0] if t else None for t in tops],
            "series": [f"{e}|multivariate|" for e in entities],
            "value": pa.nulls(len(kept), pa.float64()),
            "expected": pa.nulls(len(kept), pa.float64()),
            "score": kept["score"].to_numpy(),
            "detector": pa.array(["multivariate"] * len(kept), pa.string()),
            "explanation": ["metrics: " + ", ".join(t) for t in tops],
            "is_event": kept["score"].to_numpy() >= MULTIVARIATE_EVENT,
        },
        schema=ANOMALIES,
    )


def with_multivariate(
    lake: Lake, scored: Scored, points: pa.Table | Callable[[], pa.Table]
) -> tuple[Scored, str]:
    """``scored`` with the multi-metric champion's rows added (detector ``multivariate``,
    ``MULTIVARIATE_FLOOR`` / ``MULTIVARIATE_EVENT``), sorted by time and series, and the
    champion's version (``"none yet"`` without one, the rows unchanged but sorted).

    ``points`` are the metric points scored (ts, entity_id, metric, value), or a function
    that reads them, called only when there is a champion. The daily ``gold/anomalies`` and
    the live ``gold/anomalies_live`` both score through here, so both land the same events
    for the same points.
    """
    from opslake.ml import registry

    table, model = scored.anomalies, "none yet"
    if registry.champion(lake, MULTIVARIATE_MODEL) is not None:
        detector, version = registry.load(lake, MULTIVARIATE_MODEL)
        table = pa.concat_tables(
            [table, score_multivariate(detector, points() if callable(points) else points)]
        )
        model = f"v{version.version}"
    table = table.sort_by([("ts", "ascending"), ("series", "ascending")])
    return dataclasses.replace(scored, anomalies=table), model


def land_events(lake: Lake, day: str, runs: list[dict], at: datetime) -> LandedBatch | None:
    """Anomaly episodes as one Alertmanager notification under ``landing/ml/dt=day``.

    An episode whose last point is more than ``EPISODE_GAP`` before ``at`` is sent resolved
    (it ended); a recent one is firing. The batch id derives from the content, so landing
    the same episodes twice lands them once.
    """
    if not runs:
        return None
    alerts = []
    for run in runs:
        ended = run["end"] + EPISODE_GAP <= at
        labels = {
            "alertname": ALERTNAME,
            "severity": "critical" if run["peak"] >= 0.99 else "warning",
            "entity_id": run["entity_id"],
            "metric": run["metric"] or "",
            "detector": run["detector"],
            "series": run["series"],
        }
        what = f"score {run['peak']:.3f}"
        if run.get("value") is not None:
            what += f", value {run['value']:.4g}"
        if run.get("expected") is not None and np.isfinite(run["expected"]):
            what += f", expected about {run['expected']:.4g}"
        alerts.append(
            {
                "status": "resolved" if ended else "firing",
                "labels": labels,
                "annotations": {
                    "summary": f"指标异常 / metric anomaly: {run['entity_id']} {run['metric']}",
                    "description": what
                    + (f"; {run['explanation']}" if run.get("explanation") else ""),
                },
                "startsAt": rfc3339(run["start"]),
                "endsAt": rfc3339(run["end"] + timedelta(seconds=GRID_S))
                if ended
                else "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": hashlib.sha256(
                    json.dumps(labels, sort_keys=True).encode()
                ).hexdigest()[:16],
            }
        )
    body = webhook_body(alerts, alertname=ALERTNAME, receiver=RECEIVER)
    digest = hashlib.sha256(body).hexdigest()[:16]
    batch_id = re.sub(r"[^A-Za-z0-9_.\-]", "_", f"anomalies-{day}-{digest}")
    return LandingZone(lake).write(
        SOURCE, body, fmt="json", batch_id=batch_id, received_at=at, dt=day, connector=CONNECTOR
    )


def point_slices(lake: Lake, day: str, rows: int = SLICE_ROWS) -> Iterator[pa.Table]:
    """Day ``day`` of silver metric points, about ``rows`` at a time, in whole series: every
    grid series of an (entity, metric) pair is in one slice (``series.series_slices``)."""
    return series_slices(lake, day, _SCORED_COLUMNS, rows=rows)


def _concat_states(states: Sequence[DetectorState]) -> DetectorState:
    """One state whose series are those of ``states`` in order; ``states`` give up their
    arrays as they are joined (a province's state is gigabytes: one copy, not two)."""
    merged = dataclasses.replace(states[0])
    for name in _series_arrays(merged):
        setattr(merged, name, np.concatenate([getattr(s, name) for s in states], axis=0))
        for state in states:
            setattr(state, name, None)
    return merged


def score_slices(
    day: str, slices: Iterable[pa.Table], previous: tuple[list[str], DetectorState] | None
) -> Scored:
    """Score a day given as slices of whole series (``point_slices``), carrying on from
    ``previous``: the same scores as one grid of the whole day, a slice's memory at a time."""
    parts = [score_grid(grid(points, *day_bounds(day)), previous) for points in slices]
    parts = [p for p in parts if p.keys] or [
        score_grid(grid(METRIC_POINTS.empty_table(), *day_bounds(day)), previous)
    ]
    if len(parts) == 1:
        return parts[0]
    return Scored(
        pa.concat_tables([p.anomalies for p in parts]),
        [k for p in parts for k in p.keys],
        _concat_states([p.state for p in parts]),
        sum(p.series for p in parts),
        sum(p.points for p in parts),
    )


def previous_state(
    lake: Lake, day: str, history_days: int = 2
) -> tuple[list[str], DetectorState] | None:
    """The state at the end of the day before ``day``: saved, else rebuilt from silver.

    Rebuilding scores the previous ``history_days`` of silver metric points (whatever of
    them exists) from a fresh state, so a backfill or a lost state costs a little history,
    not correctness of the causal scores.
    """
    first = date.fromisoformat(day)
    yesterday = (first - timedelta(days=1)).isoformat()
    saved = load_state(lake, yesterday)
    if saved is not None:
        return saved
    days = [(first - timedelta(days=k)).isoformat() for k in range(history_days, 0, -1)]
    days = [d for d in days if d in set(lake.partitions("silver", "metric_points"))]
    state: tuple[list[str], DetectorState] | None = None
    for d in days:
        scored = score_slices(d, point_slices(lake, d), state)
        state = (scored.keys, scored.state)
    return state


def score_day(
    lake: Lake, day: str, points: pa.Table | Iterable[pa.Table], *, save: bool = True
) -> Scored:
    """Score one day of metric points (a table, or slices of whole series), continuing the
    detector's history."""
    slices = [points] if isinstance(points, pa.Table) else points
    scored = score_slices(day, slices, previous_state(lake, day))
    if save:
        save_state(lake, day, scored.keys, scored.state)
    return scored
