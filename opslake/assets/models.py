"""Models domain (S6.7): trained models in the registry, retrained when due, and their use.

``models/*`` are unpartitioned: each materialization asks the registry whether the champion
is due and only then trains, evaluates, registers and (if it beats the champion) promotes a
challenger (opslake.ml.training). The ``ml_training`` job runs them daily;
``gold/incident_risk`` scores each day with whatever is champion (opslake.ml.risk). This
module wires them and turns the outcomes into metadata for the UI.
"""

from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

import dagster as dg

from opslake.assets.keys import OWNER, key
from opslake.assets.partitions import DAILY
from opslake.assets.resources import LakeResource
from opslake.assets.retries import STEP_RETRY
from opslake.ml import registry, risk, training
from opslake.ml.training import MULTIVARIATE_MODEL, Outcome

T = TypeVar("T")

SILVER_INPUTS = [
    key("silver", t) for t in ("assets", "relations", "tickets", "events", "metric_points")
]


class TrainingConfig(dg.Config):
    """Run-time options of a model asset (Launchpad)."""

    force: bool = False
    """Train a challenger even when the champion is not due; it must still beat it."""


# -- outcomes as metadata -------------------------------------------------------------------
def _psi_table(report: registry.DriftReport | None) -> dg.MetadataValue:
    if report is None:
        return dg.MetadataValue.md("no champion to compare with")
    worst = sorted(report.psi.items(), key=lambda kv: -kv[1])[:8]
    lines = [
        f"{report.rows} recent rows; PSI > {report.threshold} means the feature moved",
        "",
        "| feature | PSI |",
        "|---|---|",
    ]
    lines += [
        f"| {name} | {value:.3f}{' ⚠' if value > report.threshold else ''} |"
        for name, value in worst
    ]
    return dg.MetadataValue.md("\n".join(lines))


def _verdict_metadata(verdict: registry.RetrainVerdict, end: datetime) -> dict[str, Any]:
    """Why the champion is (not) due: its age against the latest data, and drift."""
    out: dict[str, Any] = {"champion_version": verdict.version, "drift": _psi_table(verdict.drift)}
    if verdict.age is not None:
        out["age_days"] = round(verdict.age / timedelta(days=1), 2)
    if verdict.drift is not None:
        out["max_psi"] = round(max(verdict.drift.psi.values(), default=0.0), 4)
    if not verdict.retrain:
        age = f"{out.get('age_days', 0):g}"
        out["why"] = (
            f"v{verdict.version} is not due: its training window ended {age} day(s) "
            f"before the latest silver data (ends {end:%Y-%m-%d %H:%M} UTC; due after "
            f"{training.MAX_AGE.days} days) and no feature drifted (max PSI "
            f"{out.get('max_psi', 0):g} ≤ {registry.PSI_DRIFTED})"
        )
    else:
        out["why"] = "; ".join(verdict.reasons)
    return out


def _check(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    config: TrainingConfig,
    retrain: Callable[..., Outcome[T]],
    figures: Callable[[T, registry.ModelVersion], dict[str, Any]],
) -> dg.MaterializeResult:
    """Run one training check; its metadata, with ``figures`` of a registered challenger."""
    lk = lake.lake()
    outcome = retrain(lk, force=config.force, by=f"dagster run {context.run.run_id}")
    if outcome.skipped is not None:
        context.log.warning(outcome.skipped)
        return dg.MaterializeResult(metadata={"retrained": False, "why": outcome.skipped})
    if outcome.version is None:
        meta = {"retrained": False, **_verdict_metadata(outcome.verdict, outcome.end)}
        if outcome.not_again is not None:
            meta["why"] = outcome.not_again
        return dg.MaterializeResult(metadata=meta)
    version, decision = outcome.version, outcome.decision
    verdict = "promoted" if decision.promoted else "refused"
    context.log.info(f"{version.name} v{version.version} {verdict}: {decision.reason}")
    out: dict[str, Any] = {
        "retrained": True,
        **(
            _verdict_metadata(outcome.verdict, outcome.end)
            if outcome.verdict
            else {"why": "forced" if config.force else "no champion yet", "drift": _psi_table(None)}
        ),
        "version": version.version,
        "decision": verdict,
        "decision_reason": decision.reason,
        f"challenger_{decision.metric}": round(decision.challenger_value, 5),
        "champion": registry.champion(lk, version.name).version,
    }
    if decision.champion_value is not None:
        out[f"champion_{decision.metric}"] = round(decision.champion_value, 5)
    return dg.MaterializeResult(metadata={**out, **figures(outcome.challenger, version)})


# -- event prediction -----------------------------------------------------------------------
def _reliability(rows: list[dict[str, float]]) -> dg.MetadataValue:
    lines = ["| predicted | observed | rows | |", "|---|---|---|---|"]
    top = max((max(r["predicted"], r["observed"]) for r in rows), default=0.0) or 1.0
    for r in rows:
        bar = "█" * round(12 * r["observed"] / top)
        lines.append(f"| {r['predicted']:.4f} | {r['observed']:.4f} | {r['rows']} | {bar} |")
    return dg.MetadataValue.md("\n".join(lines))


def _risk_figures(cand: risk.Candidate, _: registry.ModelVersion) -> dict[str, Any]:
    """The challenger's held-out figures: ROC AUC, Brier, reliability, top features."""
    fig = cand.figures
    return {
        "roc_auc": fig["roc_auc"],
        "brier": fig["brier"],
        "brier_base_rate": fig["brier_base_rate"],
        "brier_skill": fig["brier_skill"],
        "rows": cand.rows,
        "test_rows": fig["test_rows"],
        "test_positives": fig["test_positives"],
        "train_window": f"{cand.start:%Y-%m-%d} .. {cand.end:%Y-%m-%d} (exclusive)",
        "test_days": ", ".join(fig["test_days"]),
        "label_source": cand.label_source,
        "reliability": _reliability(fig["reliability"]),
        "top_features": dg.MetadataValue.md(
            "\n".join(
                f"- {t['feature']}: AUC drop {t['auc_drop']:.4f}" for t in fig["top_features"]
            )
            or "none"
        ),
        "by_fault_type": dg.MetadataValue.json(fig.get("by_fault_type", {})),
    }


@dg.asset(
    key=key("models", risk.RISK_MODEL),
    group_name="models",
    kinds={"scikitlearn"},
    owners=[OWNER],
    deps=SILVER_INPUTS,
    description=(
        "事件预测模型 / incident-risk model: the calibrated probability that a CI has an "
        f"incident within the next {risk.HORIZON_H} h (gradient-boosted trees on topology "
        "exposure and announced changes, opslake.ml.risk). Retrained when the champion is "
        f"due (window ended over {training.MAX_AGE.days} days before the latest silver day, or "
        f"recent features drifted, PSI > {registry.PSI_DRIFTED}): trained on the last up to "
        f"{training.RISK_DAYS} silver days, labelled by the simulator's ground truth where the "
        "lake has one, else by incident tickets; evaluated on the held-out last day(s) (ROC AUC "
        "decides, Brier score against the base rate shown); promoted only if it beats the "
        "champion (registry under ml/models/incident_risk)."
    ),
)
def incident_risk_model(
    context: dg.AssetExecutionContext, lake: LakeResource, config: TrainingConfig
) -> dg.MaterializeResult:
    """Train, evaluate and register a challenger when the champion is due."""
    return _check(context, lake, config, training.retrain_incident_risk, _risk_figures)


@dg.asset(
    key=key("gold", "incident_risk"),
    group_name="gold",
    kinds={"scikitlearn", "parquet"},
    owners=[OWNER],
    partitions_def=DAILY,
    deps=[*SILVER_INPUTS, key("models", risk.RISK_MODEL)],
    description=(
        "事件风险 / incident risk of the day: for every CI and hour of the day, the champion "
        f"model's probability of an incident within the next {risk.HORIZON_H} h (from what "
        "was known at that hour), with the businesses and departments it would hit (through "
        f"the CMDB topology) where the probability is at least {risk.IMPACT_FROM}. Nothing is "
        "written until models/incident_risk has a champion."
    ),
)
def incident_risk_daily(
    context: dg.AssetExecutionContext, lake: LakeResource
) -> dg.MaterializeResult:
    """Score every entity hourly for the day with the champion."""
    lk, day = lake.lake(), context.partition_key
    found = risk.champion_scores(lk, date.fromisoformat(day), risk.IMPACT_FROM)
    if found is None:
        # No file rather than an empty one: the warehouse serves only tables with rows.
        return dg.MaterializeResult(
            metadata={
                "rows": 0,
                "model": "none yet",
                "note": "models/incident_risk has no champion yet: materialize it (job "
                "ml_training), then this partition again",
            }
        )
    lk.write_table(found.table, "gold", "incident_risk", {"dt": day})
    scored, n = found.scored, found.table.num_rows
    risky = scored[scored["probability"] >= risk.IMPACT_FROM]
    top = scored.sort_values("probability", ascending=False).drop_duplicates("entity_id")[:10]
    return dg.MaterializeResult(
        metadata={
            "rows": n,
            "entities": int(scored["entity_id"].nunique()),
            "model": f"v{found.version}",
            "mean_probability": round(float(scored["probability"].mean()), 5) if n else 0.0,
            "max_probability": round(float(scored["probability"].max()), 5) if n else 0.0,
            f"rows_at_least_{risk.IMPACT_FROM}": len(risky),
            "top": dg.MetadataValue.md(
                "\n".join(
                    f"- {r.entity_id} {r.ts:%H:%M} p={r.probability:.3f}"
                    + (f" → {', '.join(r.affected_businesses)}" if r.affected_businesses else "")
                    for r in top.itertuples()
                )
                or "none"
            ),
        }
    )


# -- multi-metric anomaly detector ----------------------------------------------------------
def _detector_figures(found: training.Detector, version: registry.ModelVersion) -> dict[str, Any]:
    """The challenger's held-out figures, types and trending metrics."""
    model = found.model
    rows = ["| type | metrics | grid rows |", "|---|---|---|"]
    rows += [f"| {name} | {len(t.metrics)} | {t.rows} |" for name, t in model.types.items()]
    return {
        "evaluation": version.parameters["evaluation"],
        **{k: round(v, 5) for k, v in found.metrics.items()},
        "rows": sum(t.rows for t in model.types.values()),
        "train_window": f"{found.train_days[0]} .. {found.train_days[-1]}",
        "test_day": found.test_day,
        "types": dg.MetadataValue.md("\n".join(rows)),
        "trending": dg.MetadataValue.md(
            "\n".join(f"- {t}: {m}" for t, m in model.trending) or "none"
        ),
    }


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
        f"{training.MAX_AGE.days} days before the latest silver day, or the champion's scores "
        f"on the latest day drifted, PSI > {registry.PSI_DRIFTED}) on up to "
        f"{training.MULTIVARIATE_DAYS - 1} silver days, evaluated on the following (held-out) "
        "day: ROC AUC against the simulator's fault windows where the lake has ground truth, "
        f"else the share of points scored ≥ {training.ALARM} (a false-alarm rate, lower is "
        "better); promoted only if better."
    ),
)
def anomaly_multivariate_model(
    context: dg.AssetExecutionContext, lake: LakeResource, config: TrainingConfig
) -> dg.MaterializeResult:
    """Fit, evaluate and register a challenger detector when the champion is due."""
    return _check(context, lake, config, training.retrain_multivariate, _detector_figures)


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

defs = dg.Definitions(
    assets=[incident_risk_model, anomaly_multivariate_model, incident_risk_daily],
    jobs=[ml_training],
    schedules=[ml_training_schedule],
)
