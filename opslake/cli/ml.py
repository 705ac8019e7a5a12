"""``opslake ml …``: evaluate, backtest and inspect the models from the command line.

The logic lives in :mod:`opslake.ml`; these commands only parse and print.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from opslake.cli._common import open_lake
from opslake.settings import Settings

app = typer.Typer(
    help="Intelligent analysis: anomaly detection on NAB, forecast backtests, "
    "event-risk evaluation and the model registry.",
    no_args_is_help=True,
)


@app.command("evaluate-nab")
def evaluate_nab(
    data: Annotated[Path, typer.Option(help="NAB's data folder (category folders of CSVs).")],
    windows: Annotated[Path, typer.Option(help="NAB's combined_windows.json.")],
    scores_out: Annotated[
        Path | None,
        typer.Option(
            "--scores-out",
            help="Also write each file's per-row scores "
            "(timestamp,value,anomaly_score) under the same relative path here.",
        ),
    ] = None,
    cv: Annotated[
        str | None,
        typer.Option(
            "--cv",
            help="'category': leave-one-category-out; each category is scored at the "
            "threshold chosen on the others, and all of them combined.",
        ),
    ] = None,
) -> None:
    """Score the production detector on NAB-format series; print the normalised scores."""
    from opslake.ml import detect, nab

    if cv not in (None, "category"):
        raise typer.BadParameter(f"only 'category' is supported (got {cv!r})", param_hint="--cv")

    corpus = nab.load_corpus(data, windows)
    config = detect.DetectorConfig()
    scores = nab.run_detector(corpus, lambda ts, v: detect.score_series(ts, v, config))
    results = nab.Scorer(corpus).score(scores)
    out: dict[str, object] = {name: round(r.score, 2) for name, r in results.items()}
    out["details"] = {name: r.as_dict() for name, r in results.items()}
    out["files"] = len(corpus)
    out["windows"] = sum(len(s.windows) for s in corpus)
    out["detector"] = {"name": "opslake.ml.detect", **config.__dict__}
    if cv is not None:
        folds = nab.cross_validate(corpus, scores)
        out["cv"] = {"by": cv, **{name: r.as_dict() for name, r in folds.items()}}
        out["cv_combined"] = {name: round(r.combined, 2) for name, r in folds.items()}
    if scores_out is not None:
        out["scores_written"] = len(nab.write_scores(scores_out, corpus, scores))
    typer.echo(json.dumps(out, ensure_ascii=False))


@app.command("backtest")
def backtest(
    nab_dir: Annotated[
        Path | None,
        typer.Option(
            "--nab", help="A folder of NAB CSVs (e.g. ../shared/data/nab/data/realKnownCause)."
        ),
    ] = None,
    estate: Annotated[
        bool,
        typer.Option("--estate", help="Backtest the lake's silver metric points (OPSLAKE_HOME)."),
    ] = False,
    folds: Annotated[int, typer.Option(min=1, help="Forecast origins, one horizon apart.")] = 3,
    prophet: Annotated[
        str,
        typer.Option(
            help="Estate series Prophet runs on: 'capacity' (the catalog's capacity_planning "
            "metrics, as in production) or 'sample' (a few of every metric)."
        ),
    ] = "capacity",
) -> None:
    """Rolling-origin forecast backtests against seasonal naive; prints one JSON object."""
    from opslake.errors import ConfigError
    from opslake.ml import backtest as bt

    if nab_dir is None and not estate:
        raise ConfigError("name what to backtest: --nab DIR and/or --estate")
    out: dict[str, object] = {}
    if nab_dir is not None:
        out["nab"] = bt.backtest_nab(nab_dir, folds=folds)
    if estate:
        settings = Settings.from_env()
        out["estate"] = bt.backtest_estate(
            open_lake(),
            folds=folds,
            timezone=settings.timezone,
            prophet=prophet,
            metrics_dir=settings.metrics_dir,
        )
    typer.echo(json.dumps(out, ensure_ascii=False, default=str))


@app.command("risk-evaluate")
def risk_evaluate(
    start: Annotated[str, typer.Option("--from", help="First day of features (YYYY-MM-DD).")],
    end: Annotated[str, typer.Option("--to", help="Last day of features (YYYY-MM-DD).")],
    test_days: Annotated[int, typer.Option(min=1, help="Held-out days at the end.")] = 3,
    horizon: Annotated[int, typer.Option(min=1, help="Hours ahead an incident counts.")] = 4,
) -> None:
    """Train the event-risk model on the earlier days, score the held-out ones (ROC AUC, Brier)."""
    from datetime import date

    from opslake.errors import ConfigError
    from opslake.ml import features as feats
    from opslake.ml import risk

    try:
        first, last = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError:
        raise ConfigError(f"--from/--to must be YYYY-MM-DD (got {start!r}, {end!r})") from None
    lake = open_lake()
    faults = feats.load_faults(lake)
    rows = feats.build_features(
        feats.load_inputs(lake, first, last), first, last, horizon_h=horizon
    )
    rows["label"] = feats.label(rows, faults, horizon)
    typer.echo(
        json.dumps(
            risk.evaluate(rows, test_days=test_days, faults=faults), ensure_ascii=False, default=str
        )
    )


@app.command("train")
def train(
    force: Annotated[
        bool,
        typer.Option(
            help="Train challengers even when the champions are "
            "not due (they must still evaluate better)."
        ),
    ] = False,
) -> None:
    """Run the ml_training job now (recorded in Dagster) and print each model's decision."""
    from opslake.orchestration import runner

    result = runner.train_models(Settings.from_env(), force=force)
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        meta = {k: v.value for k, v in materialization.metadata.items()}
        if "decision" in meta:
            outcome = f"v{meta['version']} {meta['decision']}: {meta['decision_reason']}"
        else:
            outcome = f"not retrained: {meta.get('why', 'not due')}"
        typer.echo(f"{materialization.asset_key.to_user_string()}: {outcome}")


@app.command("models")
def models(
    name: Annotated[
        str | None,
        typer.Argument(help="A model: list its versions and champion/challenger decisions."),
    ] = None,
) -> None:
    """The model registry: models, or one model's versions and decisions."""
    from dataclasses import asdict

    from opslake.ml import registry

    lake = open_lake()
    if name is None:
        out: object = [
            {
                "name": n,
                "versions": len(registry.versions(lake, n)),
                "champion": getattr(registry.champion(lake, n), "version", None),
            }
            for n in registry.models(lake)
        ]
    else:
        out = {
            "versions": [_public(asdict(v)) for v in registry.versions(lake, name)],
            "champion": _public(asdict(c)) if (c := registry.champion(lake, name)) else None,
            "decisions": [_public(asdict(d)) for d in registry.decisions(lake, name)],
        }
    typer.echo(json.dumps(out, ensure_ascii=False, default=str, indent=1))


def _public(record: dict) -> dict:
    """A registry record without its bulky drift profile."""
    return {k: v for k, v in record.items() if k != "profile"}


@app.command("evaluate-rca")
def evaluate_rca(
    data: Annotated[
        Path,
        typer.Option(
            help="Cases in the PetShop layout: <scenario>/graph.csv, "
            "<scenario>/noissue/, <scenario>/<split>/issue_N/."
        ),
    ],
    rankings_out: Annotated[
        Path,
        typer.Option(
            "--rankings-out",
            help='Write {"<scenario>/<split>/issue_N": [node, … best first]} here (JSON).',
        ),
    ],
    loso: Annotated[
        bool,
        typer.Option(
            help="Also the leave-one-scenario-out figure (knobs chosen on the other scenarios)."
        ),
    ] = True,
) -> None:
    """Rank the root cause of every case with the production ranking; print top-1/top-3."""
    from opslake.ml import petshop

    rankings, report = petshop.evaluate(data, loso=loso)
    rankings_out.parent.mkdir(parents=True, exist_ok=True)
    rankings_out.write_text(json.dumps(rankings, ensure_ascii=False, indent=1))
    report["rankings_written"] = str(rankings_out)
    typer.echo(json.dumps(report, ensure_ascii=False, default=str))


@app.command("evaluate-estate")
def evaluate_estate(
    start: Annotated[
        str | None,
        typer.Option(
            "--from", help="First day whose faults are judged (default: the simulated window)."
        ),
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="Last day judged.")] = None,
    faults: Annotated[bool, typer.Option(help="Also print each fault's ranking.")] = False,
) -> None:
    """Root-cause top-1/top-3 and anomaly-event precision/recall on the simulated estate
    (OPSLAKE_HOME, taken to gold/incidents), each beside its chance baseline."""
    from datetime import date, timedelta

    from opslake.errors import ConfigError
    from opslake.ml import estate_eval

    lake = open_lake()
    days = None
    if start or end:
        truth = estate_eval.load_truth(lake)
        try:
            first = date.fromisoformat(start or truth.window["start"])
            last = (
                date.fromisoformat(end)
                if end
                else date.fromisoformat(truth.window["end"]) - timedelta(days=1)
            )
        except ValueError:
            raise ConfigError(f"--from/--to must be YYYY-MM-DD (got {start!r}, {end!r})") from None
        days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
        if not days:
            raise ConfigError("--to is before --from")
    figures = estate_eval.evaluate(lake, Settings.from_env(), days)
    typer.echo(json.dumps(figures.as_dict(rows=faults), ensure_ascii=False, default=str))
