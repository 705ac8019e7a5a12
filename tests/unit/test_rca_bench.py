"""Root cause from a symptom, a service graph and metrics (``opslake ml evaluate-rca``).

The fixtures are small PetShop-layout cases whose answer is known by construction: a fault
injected in one service raises its latency and that of everything that calls it.
"""

from __future__ import annotations

import csv
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from opslake.alerting import rootcause
from opslake.alerting.convergence import Alert
from opslake.ml import petshop

#: front calls api and search; api calls db; search calls cache and a remote ELB leaf.
CALLS = {
    "front": ["api", "search", "elb_remote"],
    "api": ["db"],
    "search": ["cache"],
    "client": ["search"],
}
NODES = ["front", "api", "search", "db", "cache", "elb_remote", "client"]
#: Who sees a fault in each node (it and everything that calls it, transitively).
CALLERS = {
    "db": ["db", "api", "front"],
    "cache": ["cache", "search", "front", "client"],
    "search": ["search", "front", "client"],
    "api": ["api", "front"],
}
STEP = 300
T_CASE = 1_700_000_000 - 1_700_000_000 % STEP


def _write_metrics(
    path: Path, ts: np.ndarray, values: dict[tuple[str, str, str], np.ndarray]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(values)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["microservice", *[k[0] for k in keys]])
        w.writerow(["metric", *[k[1] for k in keys]])
        w.writerow(["statistic", *[k[2] for k in keys]])
        w.writerow(["unix_timestamp", *[""] * len(keys)])
        for i, t in enumerate(ts):
            w.writerow(
                [
                    f"{float(t)}",
                    *[("" if np.isnan(values[k][i]) else f"{values[k][i]:.6f}") for k in keys],
                ]
            )


def _series(rng: np.random.Generator, n: int) -> dict[tuple[str, str, str], np.ndarray]:
    out = {}
    for node in NODES:
        base = 0.02 + 0.01 * NODES.index(node)
        out[(node, "latency", "Average")] = base * (1 + 0.05 * rng.standard_normal(n))
        out[(node, "availability", "Average")] = np.full(n, 100.0)
    return out


def _scenario(
    root: Path,
    name: str,
    faults: list[str],
    *,
    seed: int,
    normal: bool = True,
    with_label: bool = True,
) -> None:
    rng = np.random.default_rng(seed)
    scen = root / name
    scen.mkdir(parents=True)
    with (scen / "graph.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", *NODES])
        for a in NODES:
            w.writerow([a, *[1 if b in CALLS.get(a, []) else 0 for b in NODES]])
    if normal:
        n = 2 * 288
        ts = T_CASE + 30 * 86_400 + np.arange(n) * STEP  # recorded later, as in PetShop
        _write_metrics(scen / "noissue" / "metrics.csv", ts, _series(rng, n))
    for i, fault in enumerate(faults):
        ts = T_CASE + i * 86_400 + np.arange(5) * STEP
        values = _series(rng, 5)
        for node in CALLERS[fault]:
            values[(node, "latency", "Average")][2:4] *= 6.0 if node == fault else 3.0
        case = scen / "train" / f"issue_{i}"
        _write_metrics(case / "metrics.csv", ts, values)
        doc: dict = {
            "target": {
                "node": "front",
                "metric": "latency",
                "agg": "Average",
                "timestamp": int(ts[1] + 200),
            }
        }
        if with_label:
            doc["root_cause"] = {"node": fault, "metric": None}
        (case / "target.json").write_text(json.dumps(doc))


@pytest.fixture
def cases(tmp_path: Path) -> Path:
    data = tmp_path / "cases"
    _scenario(data, "alpha", ["db", "cache", "search"], seed=1)
    _scenario(data, "beta", ["search", "api"], seed=2)
    return data


def test_the_injected_service_ranks_first(cases: Path) -> None:
    rankings, report = petshop.evaluate(cases)
    assert rankings["alpha/train/issue_0"][0] == "db"  # deepest: below api and front
    assert rankings["alpha/train/issue_1"][0] == "cache"
    assert rankings["alpha/train/issue_2"][0] == "search"  # not its healthy cache
    assert rankings["beta/train/issue_1"][0] == "api"
    assert report["default_knobs"]["top1"] == 1.0  # type: ignore[index]
    loso = report["leave_one_scenario_out"]
    assert loso["cases"] == 5 and set(loso["scenarios"]) == {"alpha", "beta"}  # type: ignore[index]
    # Only what the symptom needs is a candidate: the client calls search but front does not
    # need it.
    assert all("client" not in r for r in rankings.values())


def test_the_ranking_never_reads_the_label(cases: Path, tmp_path: Path) -> None:
    blind = tmp_path / "blind"
    shutil.copytree(cases, blind)
    for target in blind.glob("*/*/issue_*/target.json"):
        doc = json.loads(target.read_text())
        del doc["root_cause"]
        target.write_text(json.dumps(doc))
    with_labels, _ = petshop.evaluate(cases, loso=False)
    without, report = petshop.evaluate(blind, loso=False)
    assert without == with_labels
    assert "default_knobs" not in report  # nothing to score against


def test_a_scenario_without_normal_data_uses_the_others(tmp_path: Path) -> None:
    data = tmp_path / "cases"
    _scenario(data, "alpha", ["db"], seed=1)
    _scenario(data, "gamma", ["cache", "api"], seed=3, normal=False)
    loaded = {c.name: c for c in petshop.load_cases(data)}
    assert loaded["gamma/train/issue_0"].normal is not None
    rankings, _ = petshop.evaluate(data, loso=False)
    assert rankings["gamma/train/issue_0"][0] == "cache"
    assert rankings["gamma/train/issue_1"][0] == "api"


def test_cli_writes_rankings_and_prints_accuracy(cases: Path, tmp_path: Path) -> None:
    from opslake.cli.ml import app

    out = tmp_path / "rankings.json"
    result = CliRunner().invoke(
        app, ["evaluate-rca", "--data", str(cases), "--rankings-out", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["default_knobs"]["top1"] == 1.0
    assert "top3" in report["leave_one_scenario_out"]
    written = json.loads(out.read_text())
    assert set(written) == {
        "alpha/train/issue_0",
        "alpha/train/issue_1",
        "alpha/train/issue_2",
        "beta/train/issue_0",
        "beta/train/issue_1",
    }


def test_alerts_that_exist_add_evidence_to_the_metric_path() -> None:
    relations = __import__("pandas").DataFrame(
        [(a, b) for a, bs in CALLS.items() for b in bs], columns=["src_entity_id", "dst_entity_id"]
    )
    graph = rootcause.graph_from_relations(relations)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    symptom = rootcause.Symptom("front", "latency", at)
    # No metrics: only the symptom itself alerted, every candidate covers it, the closest wins...
    assert rootcause.rank_symptom(symptom, graph)[0].entity_id == "front"
    # ...and an alert on db (related to front through api) names it.
    alert = Alert(
        "a1",
        "DbSlow/db",
        "alertmanager",
        "DbSlow",
        "major",
        "DbSlow",
        "db",
        {},
        at - timedelta(minutes=1),
        None,
    )
    ranked = rootcause.rank_symptom(symptom, graph, alerts=[alert])
    assert ranked[0].entity_id == "db" and ranked[0].coverage == 1.0
    assert {c.entity_id for c in ranked} == {"front", "api", "search", "db", "cache", "elb_remote"}
