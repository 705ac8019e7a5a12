"""Event prediction (S6.7a): the calibrated probability that an entity has an incident soon.

The flow, all on plain DataFrames so Dagster assets and the CLI can wire it as they like::

    inputs = load_inputs(lake, start, end)
    rows = build_features(inputs, start, end, horizon_h=4)      # one row per entity and hour
    rows["label"] = label(rows, load_faults(lake), horizon_h=4)  # simulator ground truth
    figures = evaluate(rows, test_days=3)                      # held-out later days
    model = train(rows)                                        # picklable RiskModel
    risk = predict(model, rows, Topology.at(inputs.assets, inputs.relations, end))

or, as the Dagster assets do, :func:`candidate` (all of the above for a window of the lake,
labelled by :func:`load_labels`), :func:`recent_features` (for drift checks) and
:func:`champion_scores` (:func:`score_day` with the registered champion, as the rows of
``gold/incident_risk``).

The classifier is a small gradient-boosted tree ensemble; its probabilities are calibrated
on whole days it was not fitted on (cross-validation grouped by day), so a probability of
0.2 means about one in five such rows sees an incident within the horizon.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from opslake.errors import InputError
from opslake.lake.schemas import TS
from opslake.lake.storage import Lake
from opslake.ml import registry
from opslake.ml.features import (
    GROUND_TRUTH,
    HOUR_S,
    METRIC_FEATURES,
    MODEL_FEATURES,
    SCORE_FEATURES,
    Topology,
    as_utc,
    build_features,
    label,
    load_faults,
    load_incidents,
    load_inputs,
)

# scikit-learn is imported where a model is fitted or evaluated: opslake.assets.models imports
# this module, so importing it here cost every process that loads the Dagster definitions
# (each CLI run, the UI, each cluster step) 1.2 s.
if TYPE_CHECKING:
    from sklearn.calibration import CalibratedClassifierCV

__all__ = [
    "Candidate",
    "ChampionScores",
    "RiskModel",
    "Topology",
    "build_features",
    "candidate",
    "champion_scores",
    "evaluate",
    "label",
    "load_faults",
    "load_inputs",
    "load_labels",
    "predict",
    "recent_features",
    "score_day",
    "train",
]

CALIBRATION = ("sigmoid", "isotonic")
#: Hours ahead an incident counts, for the model the pipeline trains.
HORIZON_H = 4
LABELS_SIMULATED = "simulator ground truth"
LABELS_TICKETS = "incident tickets"
#: The registry name of the model the pipeline trains.
RISK_MODEL = "incident_risk"
#: Rows at least this likely get the businesses and departments they would hit. Incidents
#: are rare (a 3-8 % base rate per CI and 4 h on the simulated estate, calibrated
#: probabilities peaking near 0.25), so "likely" here means a few times the base rate.
IMPACT_FROM = 0.15

INCIDENT_RISK = pa.schema(
    [
        ("entity_id", pa.string()),
        ("ts", TS),
        ("probability", pa.float64()),
        ("horizon_h", pa.int32()),
        ("model_version", pa.int32()),
        ("affected_businesses", pa.list_(pa.string())),
        ("affected_departments", pa.list_(pa.string())),
    ]
)


@dataclass
class RiskModel:
    """A calibrated classifier with what it needs to read a feature table."""

    classifier: CalibratedClassifierCV
    features: tuple[str, ...]
    types: tuple[str, ...]
    horizon_h: int
    base_rate: float
    trained_until: str

    def matrix(self, rows: pd.DataFrame) -> np.ndarray:
        """The classifier's input: the entity type as a category code, then the features."""
        _require(rows, ["type", *self.features, "horizon_h"])
        horizons = set(rows["horizon_h"].unique().tolist())
        if horizons - {self.horizon_h}:
            raise InputError(
                f"features were built for horizon(s) {sorted(horizons)} h but the "
                f"model predicts {self.horizon_h} h; rebuild them with "
                f"horizon_h={self.horizon_h}"
            )
        codes = pd.Categorical(rows["type"], categories=list(self.types)).codes.astype(float)
        codes[codes < 0] = np.nan  # a type unseen in training is treated as missing
        return np.column_stack([codes, rows[list(self.features)].to_numpy(dtype=float)])


def _require(rows: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in rows.columns]
    if missing:
        hint = (
            " (build the features with anomalies= as for training)"
            if set(missing) & set(SCORE_FEATURES)
            else ""
        )
        raise InputError(
            f"feature table lacks {', '.join(missing)}; build it with build_features{hint}"
        )


def _days(rows: pd.DataFrame) -> np.ndarray:
    return rows["ts"].dt.strftime("%Y-%m-%d").to_numpy()


def train(
    features: pd.DataFrame,
    columns: Sequence[str] = MODEL_FEATURES,
    method: str = "sigmoid",
    seed: int = 0,
) -> RiskModel:
    """Fit the classifier on labelled rows and calibrate it on days it was not fitted on."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import GroupKFold

    if method not in CALIBRATION:
        raise InputError(f"calibration {method!r} is unknown; use one of {CALIBRATION}")
    _require(features, ["ts", "label", "horizon_h", "type", *columns])
    y = features["label"].to_numpy(dtype=bool)
    days = _days(features)
    if len(np.unique(days)) < 2 or y.all() or not y.any():
        raise InputError(
            "training needs rows from at least two days with both incident and "
            "quiet hours; build features over a longer period"
        )
    horizons = features["horizon_h"].unique()
    if len(horizons) != 1:
        raise InputError(f"rows mix horizons {sorted(horizons.tolist())}; train on one")
    model = RiskModel(
        classifier=CalibratedClassifierCV(
            HistGradientBoostingClassifier(
                learning_rate=0.05,
                max_iter=150,
                max_leaf_nodes=8,
                min_samples_leaf=50,
                l2_regularization=1.0,
                categorical_features=[0],
                early_stopping=False,
                random_state=seed,
            ),
            method=method,
            cv=list(
                GroupKFold(n_splits=min(3, len(np.unique(days)))).split(features, y, groups=days)
            ),
        ),
        features=tuple(columns),
        types=tuple(sorted(features["type"].dropna().unique())),
        horizon_h=int(horizons[0]),
        base_rate=float(y.mean()),
        trained_until=features["ts"].max().isoformat(),
    )
    model.classifier.fit(model.matrix(features), y)
    return model


def predict(
    model: RiskModel,
    features: pd.DataFrame,
    topology: Topology | None = None,
    min_probability: float = 0.5,
) -> pd.DataFrame:
    """Probability per row; with a topology, the businesses and departments at stake.

    Impact is listed only where the probability reaches ``min_probability`` (empty lists
    elsewhere), since walking the topology for every quiet hour tells nobody anything.
    """
    out = features[["entity_id", "ts"]].reset_index(drop=True)
    out["probability"] = model.classifier.predict_proba(model.matrix(features))[:, 1]
    if topology is not None:
        risky = out["probability"] >= min_probability
        walked = {e: topology.impact(e) for e in out.loc[risky, "entity_id"].unique()}
        impacts = [
            walked[e] if r else ([], []) for e, r in zip(out["entity_id"], risky, strict=True)
        ]
        out["affected_businesses"] = [b for b, _ in impacts]
        out["affected_departments"] = [d for _, d in impacts]
    return out


def _reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Mean predicted against observed rate in bins of equal row count."""
    edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
    return [
        {
            "predicted": round(float(p[which == b].mean()), 4),
            "observed": round(float(y[which == b].mean()), 4),
            "rows": int((which == b).sum()),
        }
        for b in np.unique(which)
    ]


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return round(float(roc_auc_score(y, p)), 4) if 0 < y.sum() < len(y) else None


def _by_fault_type(
    rows: pd.DataFrame,
    p: np.ndarray,
    y: np.ndarray,
    faults: Sequence[Mapping[str, Any]],
    horizon_h: int,
) -> dict[str, Any]:
    """Per fault type: rows it makes positive, their AUC against quiet rows, mean risk."""
    out: dict[str, Any] = {}
    for ftype in sorted({str(f["fault_type"]) for f in faults}):
        hit = label(rows, [f for f in faults if f["fault_type"] == ftype], horizon_h)
        if not hit.any():
            continue
        keep = hit | ~y
        out[ftype] = {
            "positive_rows": int(hit.sum()),
            "roc_auc": _auc(hit[keep], p[keep]),
            "mean_probability": round(float(p[hit].mean()), 4),
        }
    return out


def evaluate(
    features: pd.DataFrame,
    test_days: int = 3,
    faults: Sequence[Mapping[str, Any]] | None = None,
    columns: Sequence[str] = MODEL_FEATURES,
    method: str = "sigmoid",
    seed: int = 0,
) -> dict[str, Any]:
    """Train on the earlier days, score the last ``test_days``: JSON-able figures.

    Training rows whose label window reaches into the test days are dropped, so no test
    incident is seen in training. With ``faults``, figures per fault type are added.
    """
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import average_precision_score, brier_score_loss

    _require(features, ["ts", "label", "horizon_h"])
    days = _days(features)
    all_days = sorted(set(days))
    if len(all_days) < test_days + 2 or test_days < 1:
        raise InputError(
            f"{len(all_days)} day(s) of rows cannot be split into training days "
            f"and {test_days} test day(s); build features over at least "
            f"{test_days + 2} days or lower test_days"
        )
    horizon_h = int(features["horizon_h"].iloc[0])
    tested = all_days[-test_days:]
    test = features[np.isin(days, tested)].reset_index(drop=True)
    cut = pd.Timestamp(tested[0], tz="UTC") - pd.Timedelta(seconds=horizon_h * HOUR_S)
    fit_rows = features[features["ts"] < cut].reset_index(drop=True)
    model = train(fit_rows, columns, method=method, seed=seed)
    y = test["label"].to_numpy(dtype=bool)
    test_day = _days(test)
    x = model.matrix(test)
    p = model.classifier.predict_proba(x)[:, 1]
    brier = float(brier_score_loss(y, p))
    brier_base = float(brier_score_loss(y, np.full(len(y), model.base_rate)))
    # A few thousand rows rank the features about as well as all of them, far faster; the
    # baseline must come from the same rows (sklearn's max_samples scores it on all rows).
    some = np.random.default_rng(seed).permutation(len(y))[:4000]
    importance = (
        permutation_importance(
            model.classifier, x[some], y[some], scoring="roc_auc", n_repeats=3, random_state=seed
        )
        if 0 < y[some].sum() < len(some)
        else None
    )
    names = ["type", *model.features]
    top = (
        []
        if importance is None
        else sorted(
            (
                {"feature": n, "auc_drop": round(float(m), 4)}
                for n, m in zip(names, importance.importances_mean, strict=True)
            ),
            key=lambda r: -r["auc_drop"],
        )[:8]
    )
    figures: dict[str, Any] = {
        "horizon_h": horizon_h,
        "calibration": method,
        "train_days": sorted(set(_days(fit_rows))),
        "test_days": tested,
        "train_rows": len(fit_rows),
        "test_rows": len(test),
        "train_positives": int(fit_rows["label"].sum()),
        "test_positives": int(y.sum()),
        "base_rate_train": round(model.base_rate, 5),
        "base_rate_test": round(float(y.mean()), 5),
        "roc_auc": _auc(y, p),
        "roc_auc_by_day": {d: _auc(y[test_day == d], p[test_day == d]) for d in tested},
        "average_precision": round(float(average_precision_score(y, p)), 4) if y.any() else None,
        "brier": round(brier, 5),
        "brier_base_rate": round(brier_base, 5),
        "brier_skill": round(1 - brier / brier_base, 4) if brier_base > 0 else None,
        "reliability": _reliability(y, p),
        "top_features": top,
    }
    if faults is not None:
        figures["by_fault_type"] = _by_fault_type(test, p, y, faults, horizon_h)
    return figures


# -- the lake end to end (what the Dagster assets call) --------------------------------------
def load_labels(
    lake: Lake, start: date | datetime, end: date | datetime
) -> tuple[list[dict[str, Any]], str]:
    """Faults to label rows with, and where they come from.

    The simulator's ground truth where the lake has one, else the incident tickets in
    silver opened in ``[start, end)``, so a real estate is labelled by its own incidents.
    """
    if lake.exists(lake.path(*GROUND_TRUTH)):
        return load_faults(lake), LABELS_SIMULATED
    return load_incidents(lake, start, end), LABELS_TICKETS


def _uses_metrics(columns: Sequence[str]) -> bool:
    return bool(set(columns) & set(METRIC_FEATURES))


@dataclass
class Candidate:
    """A model trained on a window of the lake, with its held-out figures and data profile."""

    model: RiskModel
    figures: dict[str, Any]
    profile: dict[str, Any]
    label_source: str
    start: datetime
    end: datetime
    rows: int


def candidate(
    lake: Lake,
    start: date | datetime,
    end: date | datetime,
    *,
    test_days: int = 1,
    horizon_h: int = HORIZON_H,
    columns: Sequence[str] = MODEL_FEATURES,
    seed: int = 0,
) -> Candidate:
    """Build labelled rows for ``[start, end)``, evaluate on the last ``test_days``, refit on all.

    Rows in the last ``horizon_h`` hours are dropped: whether they see an incident is not
    known until after ``end``. The figures are those of the model fitted on the earlier
    days only (:func:`evaluate`); the returned model is refitted on every row, so it has
    seen the most recent days too.
    """
    t0, t1 = as_utc(start), as_utc(end)
    inputs = load_inputs(lake, t0, t1)
    rows = build_features(inputs, t0, t1, horizon_h, metrics=_uses_metrics(columns))
    faults, source = load_labels(lake, t0, t1)
    rows["label"] = label(rows, faults, horizon_h)
    rows = rows[rows["ts"] + pd.Timedelta(hours=horizon_h) <= pd.Timestamp(t1)]
    rows = rows.reset_index(drop=True)
    figures = evaluate(rows, test_days, faults, columns, seed=seed)
    model = train(rows, columns, seed=seed)
    return Candidate(
        model, figures, registry.profile(rows[list(columns)]), source, t0, t1, len(rows)
    )


def recent_features(
    lake: Lake, columns: Sequence[str], day: date | datetime, horizon_h: int = HORIZON_H
) -> pd.DataFrame:
    """The ``columns`` of one day's feature rows, for a drift check against a profile."""
    t0 = as_utc(day)
    t1 = t0 + timedelta(days=1)
    rows = build_features(
        load_inputs(lake, t0, t1), t0, t1, horizon_h, metrics=_uses_metrics(columns)
    )
    return rows[list(columns)]


def score_day(
    lake: Lake, model: RiskModel, day: date | datetime, min_probability: float = 0.5
) -> pd.DataFrame:
    """Every entity's probability at each hour of ``day``, with the impact of risky rows."""
    t0 = as_utc(day)
    t1 = t0 + timedelta(days=1)
    inputs = load_inputs(lake, t0, t1)
    rows = build_features(inputs, t0, t1, model.horizon_h, metrics=_uses_metrics(model.features))
    return predict(model, rows, Topology.at(inputs.assets, inputs.relations, t1), min_probability)


@dataclass(frozen=True)
class ChampionScores:
    """A day scored by the champion: the ``gold/incident_risk`` rows and the frame behind them."""

    table: pa.Table
    scored: pd.DataFrame
    version: int


def champion_scores(
    lake: Lake, day: date, impact_from: float = IMPACT_FROM
) -> ChampionScores | None:
    """Every entity's hourly probability on ``day`` by the champion; None before there is one."""
    if registry.champion(lake, RISK_MODEL) is None:
        return None
    model, meta = registry.load(lake, RISK_MODEL)
    scored = score_day(lake, model, day, impact_from)
    n = len(scored)
    table = pa.table(
        {
            "entity_id": pa.array(scored["entity_id"], pa.string()),
            "ts": pa.array(scored["ts"], TS),
            "probability": pa.array(scored["probability"], pa.float64()),
            "horizon_h": pa.array(np.full(n, model.horizon_h), pa.int32()),
            "model_version": pa.array(np.full(n, meta.version), pa.int32()),
            "affected_businesses": pa.array(scored["affected_businesses"], pa.list_(pa.string())),
            "affected_departments": pa.array(scored["affected_departments"], pa.list_(pa.string())),
        },
        schema=INCIDENT_RISK,
    )
    return ChampionScores(table, scored, meta.version)
