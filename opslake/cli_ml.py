"""``opslake ml …``: evaluate, backtest and inspect the models from the command line.

The logic lives in :mod:`opslake.ml`; these commands only parse and print.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from opslake.settings import Settings

app = typer.Typer(help="Intelligent analysis: anomaly detection on NAB, forecast backtests, "
                       "event-risk evaluation and the model registry.", no_args_is_help=True)


def _lake():
    from opslake.lake.storage import Lake

    return Lake.from_settings(Settings.from_env())


@app.command("evaluate-nab")
def evaluate_nab(
    data: Annotated[Path, typer.Option(help="NAB's data folder (category folders of CSVs).")],
    windows: Annotated[Path, typer.Option(help="NAB's combined_windows.json.")],
    scores_out: Annotated[Path | None, typer.Option(
        "--scores-out", help="Also write each file's per-row scores "
        "(timestamp,value,anomaly_score) under the same relative path here.")] = None,
) -> None:
    """Score the production detector on NAB-format series; print the normalised scores."""
    from opslake.ml import detect, nab

    corpus = nab.load_corpus(data, windows)
    config = detect.DetectorConfig()
    scores = nab.run_detector(corpus, lambda ts, v: detect.score_series(ts, v, config))
    results = nab.Scorer(corpus).score(scores)
    out: dict[str, object] = {name: round(r.score, 2) for name, r in results.items()}
    out["details"] = {name: r.as_dict() for name, r in results.items()}
    out["files"] = len(corpus)
    out["windows"] = sum(len(s.windows) for s in corpus)
    out["detector"] = {"name": "opslake.ml.detect", **config.__dict__}
    if scores_out is not None:
        out["scores_written"] = len(nab.write_scores(scores_out, corpus, scores))
    typer.echo(json.dumps(out, ensure_ascii=False))
