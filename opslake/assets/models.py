"""Models domain (S6.7): trained models in the registry, retrained when due, and their use.

``models/*`` are unpartitioned: each materialization asks the registry whether the champion
is due (its training window ended more than a week before the latest silver day, or recent
data drifted from what it was trained on), and only then trains a challenger on the latest
silver days, evaluates it on held-out days, registers it and promotes it only if it beats
the champion. The ``ml_training`` job runs them daily; ``gold/incident_risk`` scores each
day with whatever is champion. The work itself is in opslake.ml (risk, multivariate,
registry); this module wires it and turns the figures into metadata for the UI.
"""

from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
import pyarrow as pa

from opslake.assets.keys import OWNER, key
from opslake.assets.partitions import DAILY
from opslake.assets.resources import LakeResource
from opslake.assets.retries import STEP_RETRY
from opslake.lake.schemas import ASSETS, METRIC_POINTS, TS
from opslake.lake.storage import Lake
from opslake.ml import anomalies, features, multivariate, registry, risk

RISK_MODEL = "incident_risk"
MULTIVARIATE_MODEL = anomalies.MULTIVARIATE_MODEL
#: A champion is due for retraining once the data has moved on this far past its window.
MAX_AGE = timedelta(days=7)
#: Silver days a challenger is trained and evaluated on (at most).
RISK_DAYS = 14
MULTIVARIATE_DAYS = 7
#: Rows at least this likely get the businesses and departments they would hit. Incidents
#: are rare (a 3-8 % base rate per CI and 4 h on the simulated estate, calibrated
#: probabilities peaking near 0.25), so "likely" here means a few times the base rate.
IMPACT_FROM = 0.15
#: A multivariate score this high counts as an alarm (``anomalies.MULTIVARIATE_FLOOR``).
ALARM = anomalies.MULTIVARIATE_FLOOR

SILVER_INPUTS = [key("silver", t) for t in ("assets", "relations", "tickets", "events",
                                            "metric_points")]

INCIDENT_RISK = pa.schema([
    ("entity_id", pa.string()),
    ("ts", TS),
    ("probability", pa.float64()),
    ("horizon_h", pa.int32()),
    ("model_version", pa.int32()),
    ("affected_businesses", pa.list_(pa.string())),
    ("affected_departments", pa.list_(pa.string())),
])


class TrainingConfig(dg.Config):
    """Run-time options of a model asset (Launchpad)."""

    force: bool = False
    """Train a challenger even when the champion is not due; it must still beat it."""


# -- shared helpers -------------------------------------------------------------------------
def _silver_days(lake: Lake, tables: tuple[str, ...]) -> list[str]:
    """Days with silver data in any of ``tables``, without today's (still filling) one."""
    today = datetime.now(UTC).date().isoformat()
    found = set().union(*(lake.partitions("silver", t) for t in tables))
    return sorted(d for d in found if d != today)


def _day_end(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day) + timedelta(days=1), datetime.min.time(),
                            tzinfo=UTC)


def _skipped(reason: str, context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    context.log.warning(reason)
    return dg.MaterializeResult(metadata={"retrained": False, "why": reason})


def _psi_table(report: registry.DriftReport | None) -> dg.MetadataValue:
    if report is None:
        return dg.MetadataValue.md("no champion to compare with")
    worst = sorted(report.psi.items(), key=lambda kv: -kv[1])[:8]
    lines = [f"{report.rows} recent rows; PSI > {report.threshold} means the feature moved",
             "", "| feature | PSI |", "|---|---|"]
    lines += [f"| {name} | {value:.3f}{' ⚠' if value > report.threshold else ''} |"
              for name, value in worst]
    return dg.MetadataValue.md("\n".join(lines))


def _verdict_metadata(verdict: registry.RetrainVerdict, end: datetime) -> dict[str, Any]:
    """Why the champion is (not) due: its age against the latest data, and drift."""
    out: dict[str, Any] = {"champion_version": verdict.version,
                           "drift": _psi_table(verdict.drift)}
    if verdict.age is not None:
        out["age_days"] = round(verdict.age / timedelta(days=1), 2)
    if verdict.drift is not None:
        out["max_psi"] = round(max(verdict.drift.psi.values(), default=0.0), 4)
    if not verdict.retrain:
        age = f"{out.get('age_days', 0):g}"
        out["why"] = (f"v{verdict.version} is not due: its training window ended {age} day(s) "
                      f"before the latest silver data (ends {end:%Y-%m-%d %H:%M} UTC; due after "
                      f"{MAX_AGE.days} days) and no feature drifted (max PSI "
                      f"{out.get('max_psi', 0):g} ≤ {registry.PSI_DRIFTED})")
    else:
        out["why"] = "; ".join(verdict.reasons)
    return out


def _tried(lake: Lake, name: str, end: datetime, verdict: registry.RetrainVerdict
           ) -> dg.MaterializeResult | None:
    """Not again when the newest version already saw this data (it was refused, or is current).

    A champion that stays due (old, or drifted while challengers are refused) would
    otherwise get an identical challenger at every check until a new silver day lands.
    """
    found = registry.versions(lake, name)
    if not found or found[-1].parameters.get("data_end") != end.isoformat():
        return None
    return dg.MaterializeResult(metadata={
        "retrained": False, **_verdict_metadata(verdict, end),
        "why": f"due ({'; '.join(verdict.reasons)}), but v{found[-1].version} was already "
               f"trained on silver up to {end:%Y-%m-%d %H:%M} UTC; the next check after a new "
               "silver day retrains (or materialize with force: true)"})


def _decide(lake: Lake, name: str, version: registry.ModelVersion, run_id: str,
            context: dg.AssetExecutionContext) -> dict[str, Any]:
    """Promote the challenger if it beats the champion; the decision as metadata."""
    decision = registry.promote_if_better(lake, name, version.version,
                                          decided_by=f"dagster run {run_id}")
    verdict = "promoted" if decision.promoted else "refused"
    context.log.info(f"{name} v{version.version} {verdict}: {decision.reason}")
    out: dict[str, Any] = {
        "version": version.version, "decision": verdict, "decision_reason": decision.reason,
        f"challenger_{decision.metric}": round(decision.challenger_value, 5),
        "champion": registry.champion(lake, name).version,
    }
    if decision.champion_value is not None:
        out[f"champion_{decision.metric}"] = round(decision.champion_value, 5)
    return out


# -- event prediction -----------------------------------------------------------------------
def _reliability(rows: list[dict[str, float]]) -> dg.MetadataValue:
    lines = ["| predicted | observed | rows | |", "|---|---|---|---|"]
    top = max((max(r["predicted"], r["observed"]) for r in rows), default=0.0) or 1.0
    for r in rows:
        bar = "█" * round(12 * r["observed"] / top)
        lines.append(f"| {r['predicted']:.4f} | {r['observed']:.4f} | {r['rows']} | {bar} |")
    return dg.MetadataValue.md("\n".join(lines))


@dg.asset(
    key=key("models", RISK_MODEL),
    group_name="models",
    kinds={"scikitlearn"},
    owners=[OWNER],
    deps=SILVER_INPUTS,
    description=(
        "事件预测模型 / incident-risk model: the calibrated probability that a CI has an "
        f"incident within the next {risk.HORIZON_H} h (gradient-boosted trees on topology "
        "exposure and announced changes, opslake.ml.risk). Retrained when the champion is "
        f"due (window ended over {MAX_AGE.days} days before the latest silver day, or recent "
        f"features drifted, PSI > {registry.PSI_DRIFTED}): trained on the last up to "
        f"{RISK_DAYS} silver days, labelled by the simulator's ground truth where the lake "
        "has one, else by incident tickets; evaluated on the held-out last day(s) (ROC AUC "
        "decides, Brier score against the base rate shown); promoted only if it beats the "
        "champion (registry under ml/models/incident_risk)."
    ),
)
def incident_risk_model(context: dg.AssetExecutionContext, lake: LakeResource,
                        config: TrainingConfig) -> dg.MaterializeResult:
    """Train, evaluate and register a challenger when the champion is due."""
    lk = lake.lake()
    days = _silver_days(lk, ("assets", "events", "tickets"))[-RISK_DAYS:]
    if len(days) < 3:
        return _skipped(f"{len(days)} complete day(s) of silver; training needs 3 (2 to train, "
                        "1 to evaluate): materialize silver for more days", context)
    end = _day_end(days[-1])
    verdict = None
    if registry.champion(lk, RISK_MODEL) is not None and not config.force:
        meta = registry.version(lk, RISK_MODEL, registry.champion(lk, RISK_MODEL).version)
        recent = risk.recent_features(lk, list(meta.profile), date.fromisoformat(days[-1]),
                                      int(meta.parameters.get("horizon_h", risk.HORIZON_H)))
        verdict = registry.needs_retraining(lk, RISK_MODEL, recent, max_age=MAX_AGE, now=end)
        if not verdict.retrain:
            return dg.MaterializeResult(metadata={"retrained": False,
                                                  **_verdict_metadata(verdict, end)})
        if (tried := _tried(lk, RISK_MODEL, end, verdict)) is not None:
            return tried
    # A quarter of the window is held out (1 to 3 days): enough hours to judge ranking.
    test_days = max(1, min(3, len(days) // 4))
    cand = risk.candidate(lk, date.fromisoformat(days[0]), end, test_days=test_days)
    fig = cand.figures
    if fig["roc_auc"] is None:
        return _skipped(f"the held-out day(s) {fig['test_days']} have "
                        f"{fig['test_positives']} labelled incident hour(s) among "
                        f"{fig['test_rows']}: ROC AUC cannot judge the challenger; it is "
                        "tried again at the next check", context)
    metrics = {k: fig[k] for k in ("roc_auc", "brier", "brier_base_rate", "brier_skill",
                                   "average_precision", "test_rows", "test_positives")
               if fig.get(k) is not None}
    version = registry.register(
        lk, RISK_MODEL, cand.model, kind="opslake.ml.risk.RiskModel", train_start=cand.start,
        train_end=cand.end, features=list(cand.model.features), metrics=metrics,
        primary_metric="roc_auc", higher_is_better=True, profile=cand.profile,
        created_by=f"dagster run {context.run.run_id}",
        parameters={"horizon_h": cand.model.horizon_h, "calibration": fig["calibration"],
                    "label_source": cand.label_source, "train_days": fig["train_days"],
                    "test_days": fig["test_days"], "rows": cand.rows, "seed": 0,
                    "data_end": end.isoformat()})
    return dg.MaterializeResult(metadata={
        "retrained": True,
        **(_verdict_metadata(verdict, end) if verdict else
           {"why": "forced" if config.force else "no champion yet",
            "drift": _psi_table(None)}),
        **_decide(lk, RISK_MODEL, version, context.run.run_id, context),
        "roc_auc": fig["roc_auc"], "brier": fig["brier"],
        "brier_base_rate": fig["brier_base_rate"], "brier_skill": fig["brier_skill"],
        "rows": cand.rows, "test_rows": fig["test_rows"],
        "test_positives": fig["test_positives"],
        "train_window": f"{cand.start:%Y-%m-%d} .. {cand.end:%Y-%m-%d} (exclusive)",
        "test_days": ", ".join(fig["test_days"]), "label_source": cand.label_source,
        "reliability": _reliability(fig["reliability"]),
        "top_features": dg.MetadataValue.md("\n".join(
            f"- {t['feature']}: AUC drop {t['auc_drop']:.4f}" for t in fig["top_features"])
            or "none"),
        "by_fault_type": dg.MetadataValue.json(fig.get("by_fault_type", {})),
    })


@dg.asset(
    key=key("gold", "incident_risk"),
    group_name="gold",
    kinds={"scikitlearn", "parquet"},
    owners=[OWNER],
    partitions_def=DAILY,
    deps=[*SILVER_INPUTS, key("models", RISK_MODEL)],
    description=(
        "事件风险 / incident risk of the day: for every CI and hour of the day, the champion "
        f"model's probability of an incident within the next {risk.HORIZON_H} h (from what "
        "was known at that hour), with the businesses and departments it would hit (through "
        f"the CMDB topology) where the probability is at least {IMPACT_FROM}. Nothing is "
        "written until models/incident_risk has a champion."
    ),
)
def incident_risk_daily(context: dg.AssetExecutionContext, lake: LakeResource
                        ) -> dg.MaterializeResult:
    """Score every entity hourly for the day with the champion."""
    lk, day = lake.lake(), context.partition_key
    if registry.champion(lk, RISK_MODEL) is None:
        # No file rather than an empty one: the warehouse serves only tables with rows.
        return dg.MaterializeResult(metadata={
            "rows": 0, "model": "none yet",
            "note": "models/incident_risk has no champion yet: materialize it (job "
                    "ml_training), then this partition again"})
    model, meta = registry.load(lk, RISK_MODEL)
    scored = risk.score_day(lk, model, date.fromisoformat(day), IMPACT_FROM)
    n = len(scored)
    table = pa.table({
        "entity_id": pa.array(scored["entity_id"], pa.string()),
        "ts": pa.array(scored["ts"], TS),
        "probability": pa.array(scored["probability"], pa.float64()),
        "horizon_h": pa.array(np.full(n, model.horizon_h), pa.int32()),
        "model_version": pa.array(np.full(n, meta.version), pa.int32()),
        "affected_businesses": pa.array(scored["affected_businesses"], pa.list_(pa.string())),
        "affected_departments": pa.array(scored["affected_departments"],
                                         pa.list_(pa.string())),
    }, schema=INCIDENT_RISK)
    lk.write_table(table, "gold", "incident_risk", {"dt": day})
    risky = scored[scored["probability"] >= IMPACT_FROM]
    top = scored.sort_values("probability", ascending=False).drop_duplicates("entity_id")[:10]
    return dg.MaterializeResult(metadata={
        "rows": n, "entities": int(scored["entity_id"].nunique()), "model": f"v{meta.version}",
        "mean_probability": round(float(scored["probability"].mean()), 5) if n else 0.0,
        "max_probability": round(float(scored["probability"].max()), 5) if n else 0.0,
        f"rows_at_least_{IMPACT_FROM}": len(risky),
        "top": dg.MetadataValue.md("\n".join(
            f"- {r.entity_id} {r.ts:%H:%M} p={r.probability:.3f}"
            + (f" → {', '.join(r.affected_businesses)}" if r.affected_businesses else "")
            for r in top.itertuples()) or "none"),
    })


# -- multi-metric anomaly detector ----------------------------------------------------------
def _points(lake: Lake, days: list[str]) -> pl.DataFrame:
    table = lake.read_table("silver", "metric_points", schema=METRIC_POINTS, dts=days,
                            columns=["ts", "entity_id", "metric", "value"])
    return pl.from_arrow(table)


def _entity_types(lake: Lake, day: str) -> dict[str, str]:
    """Entity → CMDB type from the latest silver assets up to ``day`` (the id prefix else)."""
    cmdb = [d for d in sorted(lake.partitions("silver", "assets")) if d <= day]
    if not cmdb:
        return {}
    assets = lake.read_table("silver", "assets", schema=ASSETS, dts=cmdb[-1:],
                             columns=["entity_id", "type"]).to_pylist()
    return {a["entity_id"]: a["type"] for a in assets if a["entity_id"] and a["type"]}


@dg.asset(
    key=key("models", MULTIVARIATE_MODEL),
    group_name="models",
    kinds={"scikitlearn"},
    owners=[OWNER],
    deps=[key("silver", "metric_points"), key("silver", "assets")],
    description=(
        "多指标异常模型 / multi-metric anomaly detector: one isolation forest per CMDB entity "
        "type over each entity's metric vector on a 5-minute grid (opslake.ml.multivariate), "
        "used by gold/anomalies. Retrained when due (window ended over "
        f"{MAX_AGE.days} days before the latest silver day, or the champion's scores on the "
        f"latest day drifted, PSI > {registry.PSI_DRIFTED}) on up to {MULTIVARIATE_DAYS - 1} "
        "silver days, evaluated on the following (held-out) day: ROC AUC against the "
        "simulator's fault windows where the lake has ground truth, else the share of points "
        f"scored ≥ {ALARM} (a false-alarm rate, lower is better); promoted only if better."
    ),
)
def anomaly_multivariate_model(context: dg.AssetExecutionContext, lake: LakeResource,
                               config: TrainingConfig) -> dg.MaterializeResult:
    """Fit, evaluate and register a challenger detector when the champion is due."""
    lk = lake.lake()
    days = _silver_days(lk, ("metric_points",))[-MULTIVARIATE_DAYS:]
    if len(days) < 2:
        return _skipped(f"{len(days)} complete day(s) of silver metric points; training "
                        "needs 2 (1 to train, 1 to evaluate): materialize silver for more "
                        "days", context)
    end = _day_end(days[-1])
    verdict = None
    if registry.champion(lk, MULTIVARIATE_MODEL) is not None and not config.force:
        champion, _ = registry.load(lk, MULTIVARIATE_MODEL)
        latest = multivariate.score(champion, _points(lk, days[-1:]))
        verdict = registry.needs_retraining(lk, MULTIVARIATE_MODEL,
                                            {"score": latest["score"].to_numpy()},
                                            max_age=MAX_AGE, now=end)
        if not verdict.retrain:
            return dg.MaterializeResult(metadata={"retrained": False,
                                                  **_verdict_metadata(verdict, end)})
        if (tried := _tried(lk, MULTIVARIATE_MODEL, end, verdict)) is not None:
            return tried
    types = _entity_types(lk, days[-1])
    model = multivariate.fit(_points(lk, days[:-1]), entity_types=types or None)
    held_out = multivariate.score(model, _points(lk, days[-1:]))
    scores = held_out["score"].to_numpy()
    if not len(scores):
        return _skipped(f"no held-out points of {days[-1]} could be scored (entities unseen "
                        "in training?); tried again at the next check", context)
    metrics: dict[str, float] = {"alarm_share": float(np.mean(scores >= ALARM)),
                                 "held_out_points": float(len(scores))}
    primary, higher = "alarm_share", False
    faulted = None
    if lk.exists(lk.path(*features.GROUND_TRUTH)):
        primary, higher = "roc_auc", True
        faulted = features.in_fault(held_out["entity_id"].to_list(), held_out["ts"].to_list(),
                                    features.load_faults(lk))
        if faulted.all() or not faulted.any():
            return _skipped(f"held-out day {days[-1]} has {int(faulted.sum())} of "
                            f"{len(scores)} points in fault windows: ROC AUC cannot judge "
                            "the challenger; tried again at the next check", context)
        from sklearn.metrics import roc_auc_score

        metrics["roc_auc"] = float(roc_auc_score(faulted, scores))
        metrics["fault_points"] = float(faulted.sum())
        metrics["alarm_share_in_faults"] = float(np.mean(scores[faulted] >= ALARM))
        metrics["alarm_share_outside_faults"] = float(np.mean(scores[~faulted] >= ALARM))
    version = registry.register(
        lk, MULTIVARIATE_MODEL, model, kind="opslake.ml.multivariate.MultiMetricModel",
        train_start=model.train_start, train_end=_day_end(days[-2]),
        features=sorted({m for t in model.types.values() for m in t.metrics}),
        metrics=metrics, primary_metric=primary, higher_is_better=higher,
        # The detector's scores on unseen days are what drift is judged on later.
        profile=registry.profile({"score": scores}),
        created_by=f"dagster run {context.run.run_id}",
        parameters={**model.parameters, "train_days": days[:-1], "test_day": days[-1],
                    "data_end": end.isoformat(),
                    "types": len(model.types), "evaluation": (
                        "ROC AUC against simulator fault windows" if primary == "roc_auc"
                        else f"share of held-out points scored >= {ALARM}, lower is better")})
    rows = ["| type | metrics | grid rows |", "|---|---|---|"]
    rows += [f"| {name} | {len(t.metrics)} | {t.rows} |" for name, t in model.types.items()]
    return dg.MaterializeResult(metadata={
        "retrained": True,
        **(_verdict_metadata(verdict, end) if verdict else
           {"why": "forced" if config.force else "no champion yet",
            "drift": _psi_table(None)}),
        **_decide(lk, MULTIVARIATE_MODEL, version, context.run.run_id, context),
        "evaluation": version.parameters["evaluation"],
        **{k: round(v, 5) for k, v in metrics.items()},
        "rows": sum(t.rows for t in model.types.values()),
        "train_window": f"{days[0]} .. {days[-2]}", "test_day": days[-1],
        "types": dg.MetadataValue.md("\n".join(rows)),
        "trending": dg.MetadataValue.md("\n".join(f"- {t}: {m}" for t, m in model.trending)
                                        or "none"),
    })


ml_training = dg.define_asset_job(
    "ml_training",
    selection=dg.AssetSelection.groups("models"),
    description="Check every model and retrain those that are due (age or drift); a "
                "challenger replaces the champion only if it evaluates better.",
    op_retry_policy=STEP_RETRY,
)

ml_training_schedule = dg.ScheduleDefinition(
    name="ml_training_schedule",
    cron_schedule="30 1 * * *",
    job=ml_training,
    execution_timezone="UTC",
    description="Daily at 01:30 UTC, after the daily pipeline: retraining happens when a "
                "champion is over a week behind the data or its inputs drifted.",
)

defs = dg.Definitions(assets=[incident_risk_model, anomaly_multivariate_model,
                              incident_risk_daily],
                      jobs=[ml_training], schedules=[ml_training_schedule])
