"""Retraining the registered models (S6.7): checked on the latest silver days, promoted if better.

Each check asks the registry whether the champion is due (its training window ended more
than :data:`MAX_AGE` before the latest silver day, or recent data drifted from what it was
trained on); only then is a challenger trained on the latest silver days, evaluated on
held-out days, registered, and promoted only if it beats the champion. The ``models/*``
assets call :func:`retrain_incident_risk` and :func:`retrain_multivariate` and turn the
:class:`Outcome` into metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Generic, TypeVar

import numpy as np
import polars as pl

from opslake.lake.schemas import ASSETS, METRIC_POINTS
from opslake.lake.storage import Lake
from opslake.ml import anomalies, features, multivariate, registry, risk

MULTIVARIATE_MODEL = anomalies.MULTIVARIATE_MODEL
#: A champion is due for retraining once the data has moved on this far past its window.
MAX_AGE = timedelta(days=7)
#: Silver days a challenger is trained and evaluated on (at most).
RISK_DAYS = 14
MULTIVARIATE_DAYS = 7
#: A multivariate score this high counts as an alarm (``anomalies.MULTIVARIATE_FLOOR``).
ALARM = anomalies.MULTIVARIATE_FLOOR

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """One check of a model: skipped, not due, not again, or a challenger and its decision.

    ``verdict`` is None when there was no champion to judge or the check was forced.
    """

    verdict: registry.RetrainVerdict | None = None
    end: datetime | None = None  # end of the latest silver day checked against
    skipped: str | None = None  # why no challenger could be trained or judged
    not_again: str | None = None  # why a due champion gets no identical challenger
    challenger: T | None = None  # the model-specific figures of the registered challenger
    version: registry.ModelVersion | None = None
    decision: registry.Decision | None = None


@dataclass(frozen=True)
class Detector:
    """A multi-metric challenger: the model, its held-out figures and its days."""

    model: multivariate.MultiMetricModel
    metrics: dict[str, float]
    train_days: list[str]
    test_day: str


def silver_days(lake: Lake, tables: tuple[str, ...]) -> list[str]:
    """Days with silver data in any of ``tables``, without today's (still filling) one."""
    today = datetime.now(UTC).date().isoformat()
    found = set().union(*(lake.partitions("silver", t) for t in tables))
    return sorted(d for d in found if d != today)


def day_end(day: str) -> datetime:
    """The end of ``day`` (midnight after it, UTC)."""
    return datetime.combine(
        date.fromisoformat(day) + timedelta(days=1), datetime.min.time(), tzinfo=UTC
    )


def _due(
    lake: Lake, name: str, end: datetime, force: bool, recent: Callable[[], Any]
) -> tuple[registry.RetrainVerdict | None, Outcome | None]:
    """The verdict on the champion, and the outcome when no challenger is to be trained.

    ``recent`` gives the latest data drift is judged on. A champion that stays due (old, or
    drifted while challengers are refused) would otherwise get an identical challenger at
    every check until a new silver day lands: not again when the newest version already saw
    this data.
    """
    if registry.champion(lake, name) is None or force:
        return None, None
    # MAX_AGE is read here, at each check, so a test can move it.
    verdict = registry.needs_retraining(lake, name, recent(), max_age=MAX_AGE, now=end)
    if not verdict.retrain:
        return verdict, Outcome(verdict, end)
    found = registry.versions(lake, name)
    if not found or found[-1].parameters.get("data_end") != end.isoformat():
        return verdict, None
    return verdict, Outcome(
        verdict,
        end,
        not_again=(
            f"due ({'; '.join(verdict.reasons)}), but v{found[-1].version} was already trained "
            f"on silver up to {end:%Y-%m-%d %H:%M} UTC; the next check after a new silver day "
            "retrains (or materialize with force: true)"
        ),
    )


def retrain_incident_risk(
    lake: Lake, *, force: bool = False, by: str = "opslake"
) -> Outcome[risk.Candidate]:
    """Train, evaluate and register an incident-risk challenger when the champion is due."""
    days = silver_days(lake, ("assets", "events", "tickets"))[-RISK_DAYS:]
    if len(days) < 3:
        return Outcome(
            skipped=f"{len(days)} complete day(s) of silver; training needs 3 (2 to "
            "train, 1 to evaluate): materialize silver for more days"
        )
    end = day_end(days[-1])

    def recent() -> Any:
        meta = registry.version(
            lake, risk.RISK_MODEL, registry.champion(lake, risk.RISK_MODEL).version
        )
        return risk.recent_features(
            lake,
            list(meta.profile),
            date.fromisoformat(days[-1]),
            int(meta.parameters.get("horizon_h", risk.HORIZON_H)),
        )

    verdict, stop = _due(lake, risk.RISK_MODEL, end, force, recent)
    if stop is not None:
        return stop
    # A quarter of the window is held out (1 to 3 days): enough hours to judge ranking.
    test_days = max(1, min(3, len(days) // 4))
    cand = risk.candidate(lake, date.fromisoformat(days[0]), end, test_days=test_days)
    fig = cand.figures
    if fig["roc_auc"] is None:
        return Outcome(
            skipped=f"the held-out day(s) {fig['test_days']} have "
            f"{fig['test_positives']} labelled incident hour(s) among "
            f"{fig['test_rows']}: ROC AUC cannot judge the challenger; it is "
            "tried again at the next check"
        )
    metrics = {
        k: fig[k]
        for k in (
            "roc_auc",
            "brier",
            "brier_base_rate",
            "brier_skill",
            "average_precision",
            "test_rows",
            "test_positives",
        )
        if fig.get(k) is not None
    }
    version = registry.register(
        lake,
        risk.RISK_MODEL,
        cand.model,
        kind="opslake.ml.risk.RiskModel",
        train_start=cand.start,
        train_end=cand.end,
        features=list(cand.model.features),
        metrics=metrics,
        primary_metric="roc_auc",
        higher_is_better=True,
        profile=cand.profile,
        created_by=by,
        parameters={
            "horizon_h": cand.model.horizon_h,
            "calibration": fig["calibration"],
            "label_source": cand.label_source,
            "train_days": fig["train_days"],
            "test_days": fig["test_days"],
            "rows": cand.rows,
            "seed": 0,
            "data_end": end.isoformat(),
        },
    )
    decision = registry.promote_if_better(lake, risk.RISK_MODEL, version.version, decided_by=by)
    return Outcome(verdict, end, challenger=cand, version=version, decision=decision)


def _points(lake: Lake, days: list[str]) -> pl.DataFrame:
    table = lake.read_table(
        "silver",
        "metric_points",
        schema=METRIC_POINTS,
        dts=days,
        columns=["ts", "entity_id", "metric", "value"],
    )
    return pl.from_arrow(table)


def _entity_types(lake: Lake, day: str) -> dict[str, str]:
    """Entity → CMDB type from the latest silver assets up to ``day`` (the id prefix else)."""
    cmdb = [d for d in sorted(lake.partitions("silver", "assets")) if d <= day]
    if not cmdb:
        return {}
    assets = lake.read_table(
        "silver", "assets", schema=ASSETS, dts=cmdb[-1:], columns=["entity_id", "type"]
    ).to_pylist()
    return {a["entity_id"]: a["type"] for a in assets if a["entity_id"] and a["type"]}


def retrain_multivariate(
    lake: Lake, *, force: bool = False, by: str = "opslake"
) -> Outcome[Detector]:
    """Fit, evaluate and register a multi-metric challenger when the champion is due.

    The held-out day is judged by ROC AUC against the simulator's fault windows where the
    lake has ground truth, else by the share of points scored at least :data:`ALARM` (a
    false-alarm rate, lower is better).
    """
    days = silver_days(lake, ("metric_points",))[-MULTIVARIATE_DAYS:]
    if len(days) < 2:
        return Outcome(
            skipped=f"{len(days)} complete day(s) of silver metric points; "
            "training needs 2 (1 to train, 1 to evaluate): materialize "
            "silver for more days"
        )
    end = day_end(days[-1])

    def recent() -> Any:
        champion, _ = registry.load(lake, MULTIVARIATE_MODEL)
        return {"score": multivariate.score(champion, _points(lake, days[-1:]))["score"].to_numpy()}

    verdict, stop = _due(lake, MULTIVARIATE_MODEL, end, force, recent)
    if stop is not None:
        return stop
    types = _entity_types(lake, days[-1])
    model = multivariate.fit(_points(lake, days[:-1]), entity_types=types or None)
    held_out = multivariate.score(model, _points(lake, days[-1:]))
    scores = held_out["score"].to_numpy()
    if not len(scores):
        return Outcome(
            skipped=f"no held-out points of {days[-1]} could be scored (entities "
            "unseen in training?); tried again at the next check"
        )
    metrics: dict[str, float] = {
        "alarm_share": float(np.mean(scores >= ALARM)),
        "held_out_points": float(len(scores)),
    }
    primary, higher = "alarm_share", False
    if lake.exists(lake.path(*features.GROUND_TRUTH)):
        primary, higher = "roc_auc", True
        faulted = features.in_fault(
            held_out["entity_id"].to_list(), held_out["ts"].to_list(), features.load_faults(lake)
        )
        if faulted.all() or not faulted.any():
            return Outcome(
                skipped=f"held-out day {days[-1]} has {int(faulted.sum())} of "
                f"{len(scores)} points in fault windows: ROC AUC cannot "
                "judge the challenger; tried again at the next check"
            )
        from sklearn.metrics import roc_auc_score

        metrics["roc_auc"] = float(roc_auc_score(faulted, scores))
        metrics["fault_points"] = float(faulted.sum())
        metrics["alarm_share_in_faults"] = float(np.mean(scores[faulted] >= ALARM))
        metrics["alarm_share_outside_faults"] = float(np.mean(scores[~faulted] >= ALARM))
    version = registry.register(
        lake,
        MULTIVARIATE_MODEL,
        model,
        kind="opslake.ml.multivariate.MultiMetricModel",
        train_start=model.train_start,
        train_end=day_end(days[-2]),
        features=sorted({m for t in model.types.values() for m in t.metrics}),
        metrics=metrics,
        primary_metric=primary,
        higher_is_better=higher,
        # The detector's scores on unseen days are what drift is judged on later.
        profile=registry.profile({"score": scores}),
        created_by=by,
        parameters={
            **model.parameters,
            "train_days": days[:-1],
            "test_day": days[-1],
            "data_end": end.isoformat(),
            "types": len(model.types),
            "evaluation": (
                "ROC AUC against simulator fault windows"
                if primary == "roc_auc"
                else f"share of held-out points scored >= {ALARM}, lower is better"
            ),
        },
    )
    decision = registry.promote_if_better(lake, MULTIVARIATE_MODEL, version.version, decided_by=by)
    return Outcome(
        verdict,
        end,
        challenger=Detector(model, metrics, days[:-1], days[-1]),
        version=version,
        decision=decision,
    )
