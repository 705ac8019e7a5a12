"""Root-cause benchmark on cases in the PetShop layout (``opslake ml evaluate-rca``).

A case folder holds ``metrics.csv`` (three header rows: microservice, metric, statistic;
then ``unix_timestamp`` rows every five minutes) and ``target.json`` (``target``: the
symptom; ``root_cause``: the label, when given). Its scenario folder holds ``graph.csv`` (an
adjacency matrix: row X, column Y = 1 means X calls Y, so X needs Y) and, usually,
``noissue/metrics.csv``: normal operation. A scenario without ``noissue/`` is warmed up on
the normal data of the other scenarios given.

Each case is turned into what the production ranking takes: relations (``depends_on``),
metric points (long: ``ts``, ``entity_id``, ``metric``, ``statistic``, ``value``) and a
symptom; :func:`opslake.alerting.rootcause.rank_symptom` ranks it. Loading a case never
reads its label: :func:`label` does, and only the evaluation calls it, after ranking.

Knobs (:class:`~opslake.alerting.rootcause.SymptomKnobs`) are judged by leave-one-scenario-
out: for each scenario, the knobs that rank the other scenarios' cases best are applied to
it, and the figure reported is over those held-out rankings.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from opslake.alerting import rootcause
from opslake.errors import ConfigError, InputError

NORMAL = "noissue"
#: The knob grid leave-one-scenario-out chooses from (every other knob keeps its default,
#: set a priori: the symptom's own metric and statistic, onset discount on, no timing,
#: detector alerts relative to the strongest evidence).
GRID: dict[str, Sequence[object]] = {
    "alert_at": (0.3, 0.5, 0.7, 0.8),
    "base": (0.0, 0.3, 0.6),
    "dominance": (0.0, 1.0, 2.0),
}
#: A wider grid (``--grid wide``): the a-priori choices too.
WIDE_GRID: dict[str, Sequence[object]] = {
    "series": ("symptom", "metric", "all"),
    "onset": (False, True),
    **GRID,
    "coverage_power": (0.5, 1.0),
    "precedence_tau_s": (0.0, 300.0),
}


@dataclass(frozen=True)
class Case:
    """One case as the ranking sees it: no label."""

    name: str  # "<scenario>/<split>/issue_N"
    scenario: str
    relations: pd.DataFrame  # src_entity_id needs dst_entity_id
    points: pd.DataFrame  # long metric points around the symptom
    normal: pd.DataFrame | None  # long metric points of normal operation (None: none)
    symptom: rootcause.Symptom
    path: Path


def read_metrics(path: Path) -> pd.DataFrame:
    """A PetShop ``metrics.csv`` as one column per (entity, metric, statistic), epoch-second rows."""
    try:
        frame = pd.read_csv(path, header=[0, 1, 2], index_col=0)
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{path}: not a PetShop metrics file ({exc}); it needs three header "
            "rows (microservice, metric, statistic) and a unix_timestamp "
            "column"
        ) from None
    frame = frame.apply(pd.to_numeric, errors="coerce")
    frame.index = pd.to_numeric(frame.index, errors="coerce")
    frame = frame[frame.index.notna()]
    frame.index = frame.index.astype("int64")
    frame.columns = pd.MultiIndex.from_tuples(
        [tuple(str(c) for c in col) for col in frame.columns],
        names=["entity_id", "metric", "statistic"],
    )
    return frame.groupby(level=0).mean().sort_index()


def to_points(frame: pd.DataFrame) -> pd.DataFrame:
    """Wide metrics as long metric points (missing cells dropped)."""
    long = frame.stack(level=[0, 1, 2], future_stack=True).dropna().reset_index()
    long.columns = ["ts", "entity_id", "metric", "statistic", "value"]
    long["ts"] = pd.to_datetime(long["ts"], unit="s", utc=True)
    return long


def read_relations(path: Path) -> pd.DataFrame:
    """``graph.csv`` as relations: row X, column Y = 1 means X calls (needs) Y."""
    try:
        matrix = pd.read_csv(path, index_col=0)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not an adjacency matrix ({exc})") from None
    pairs = [
        (str(src), str(dst))
        for src, row in matrix.iterrows()
        for dst, v in row.items()
        if pd.notna(v) and float(v) != 0.0 and src != dst
    ]
    return pd.DataFrame(pairs or [], columns=["src_entity_id", "dst_entity_id"]).assign(
        relation="depends_on"
    )


def read_symptom(case_dir: Path) -> rootcause.Symptom:
    """The symptom of a case (``target.json``'s ``target``; the label is not read here)."""
    doc = _target(case_dir)
    try:
        t = doc["target"]
        return rootcause.Symptom(
            str(t["node"]),
            str(t["metric"]),
            datetime.fromtimestamp(float(t["timestamp"]), tz=UTC),
            str(t["agg"]) if t.get("agg") else None,
        )
    except (KeyError, TypeError, ValueError):
        raise InputError(
            f"{case_dir}/target.json: 'target' needs node, metric and timestamp (agg optional)"
        ) from None


def label(case: Case) -> str | None:
    """The injected root cause of ``case`` when its target.json says (evaluation only)."""
    root = _target(case.path).get("root_cause")
    return str(root["node"]) if isinstance(root, dict) and root.get("node") else None


def _target(case_dir: Path) -> dict:
    try:
        return json.loads((case_dir / "target.json").read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{case_dir}/target.json cannot be read ({exc})") from None


def load_cases(data: Path) -> list[Case]:
    """Every case under ``data``: scenario folders with a ``graph.csv``, split folders of
    ``issue_*`` cases. A scenario without ``noissue/`` gets the others' normal data."""
    data = Path(data)
    scenarios = sorted(p.parent for p in data.glob("*/graph.csv"))
    if (data / "graph.csv").exists():
        scenarios = [data]
    if not scenarios:
        raise ConfigError(
            f"{data}: no scenario folder with a graph.csv (the PetShop layout: "
            "<scenario>/graph.csv, <scenario>/<split>/issue_N/)"
        )
    normals = {
        s: to_points(read_metrics(s / NORMAL / "metrics.csv"))
        for s in scenarios
        if (s / NORMAL / "metrics.csv").exists()
    }
    cases = []
    for s in scenarios:
        normal = normals.get(s)
        if normal is None and normals:
            normal = pd.concat([v for k, v in normals.items() if k != s], ignore_index=True)
        relations = read_relations(s / "graph.csv")
        for case_dir in sorted(p.parent for p in s.glob("*/issue_*/metrics.csv")):
            name = case_dir.relative_to(data.parent if s == data else data).as_posix()
            cases.append(
                Case(
                    name,
                    s.name,
                    relations,
                    to_points(read_metrics(case_dir / "metrics.csv")),
                    normal,
                    read_symptom(case_dir),
                    case_dir,
                )
            )
    cases.sort(key=lambda c: (c.scenario, c.name.split("/")[1], _issue_no(c.name)))
    return cases


def _issue_no(name: str) -> int:
    tail = name.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


@dataclass
class Prepared:
    """A case with its graph and detector scores computed once (they do not depend on knobs)."""

    case: Case
    graph: object
    series: rootcause.SeriesScores


def prepare(cases: Iterable[Case]) -> list[Prepared]:
    """Graphs and detector scores for each case (normal data scored once per scenario set)."""
    wides: dict[int, pd.DataFrame] = {}
    out = []
    for c in cases:
        normal = None
        if c.normal is not None:
            key = id(c.normal)
            if key not in wides:
                wides[key] = rootcause.wide(c.normal)
            normal = wides[key]
        series = rootcause.score_series(rootcause.wide(c.points), normal)
        out.append(Prepared(c, rootcause.graph_from_relations(c.relations), series))
    return out


def rank_scored(
    prepared: Sequence[Prepared], knobs: rootcause.SymptomKnobs | None = None
) -> dict[str, list[rootcause.Candidate]]:
    """``{case name: [candidate, … best first]}`` by the production ranking."""
    return {
        p.case.name: rootcause.rank_symptom(
            p.case.symptom,
            p.graph,  # type: ignore[arg-type]
            p.series,
            knobs=knobs,
        )
        for p in prepared
    }


def rank_cases(
    prepared: Sequence[Prepared], knobs: rootcause.SymptomKnobs | None = None
) -> dict[str, list[str]]:
    """``{case name: [entity, … best first]}`` by the production ranking."""
    return {n: [c.entity_id for c in ranked] for n, ranked in rank_scored(prepared, knobs).items()}


def accuracy(
    rankings: Mapping[str, Sequence[str] | Sequence[rootcause.Candidate]],
    labels: Mapping[str, str | None],
) -> dict[str, float | int]:
    """Top-1, top-3 and mean reciprocal rank over the labelled cases; with scored rankings
    also the mean margin (the label's score less the best other one, over the top score)."""
    scored = [(rankings.get(n, []), lab) for n, lab in labels.items() if lab]
    if not scored:
        return {"cases": 0}
    n = len(scored)
    names = [[c if isinstance(c, str) else c.entity_id for c in r] for r, _ in scored]
    labs = [lab for _, lab in scored]
    rr = [1.0 / (r.index(lab) + 1) if lab in r else 0.0 for r, lab in zip(names, labs, strict=True)]
    out: dict[str, float | int] = {
        "cases": n,
        "top1": sum(r[:1] == [lab] for r, lab in zip(names, labs, strict=True)) / n,
        "top3": sum(lab in r[:3] for r, lab in zip(names, labs, strict=True)) / n,
        "mrr": sum(rr) / n,
    }
    if all(r and not isinstance(r[0], str) for r, _ in scored):
        margins = []
        for ranked, lab in scored:
            own = next((c.score for c in ranked if c.entity_id == lab), 0.0)
            other = max((c.score for c in ranked if c.entity_id != lab), default=0.0)
            margins.append((own - other) / max(ranked[0].score, 1e-12))
        out["margin"] = sum(margins) / n
    return out


def grid(space: Mapping[str, Sequence[object]] = GRID) -> list[rootcause.SymptomKnobs]:
    """Every combination of the grid's values over the default knobs."""
    names = list(space)
    return [
        replace(rootcause.SymptomKnobs(), **dict(zip(names, values, strict=True)))
        for values in itertools.product(*(space[k] for k in names))
    ]


def _key(acc: Mapping[str, float | int]) -> tuple[float, ...]:
    return tuple(float(acc.get(k, 0)) for k in ("top1", "top3", "mrr", "margin"))


def _public(acc: Mapping[str, float | int]) -> dict[str, float | int]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in acc.items()}


def leave_one_scenario_out(
    prepared: Sequence[Prepared],
    labels: Mapping[str, str | None],
    space: Mapping[str, Sequence[object]] = GRID,
) -> dict[str, object]:
    """For each scenario, the knobs best on the other scenarios (top-1, then top-3, then
    mean reciprocal rank, then mean margin; ties: the first in grid order) and its cases
    ranked with them."""
    scenarios = sorted({p.case.scenario for p in prepared})
    if len(scenarios) < 2:
        return {"note": "leave-one-scenario-out needs two scenarios or more"}
    options = grid(space)
    by_knobs = [rank_scored(prepared, k) for k in options]
    held: dict[str, list[rootcause.Candidate]] = {}
    per: dict[str, object] = {}
    for s in scenarios:
        train = {n: lab for n, lab in labels.items() if _scenario(prepared, n) != s}
        test = {n: lab for n, lab in labels.items() if _scenario(prepared, n) == s}
        best = max(range(len(options)), key=lambda i: (_key(accuracy(by_knobs[i], train)), -i))
        held.update({n: by_knobs[best][n] for n in test})
        chosen = {k: getattr(options[best], k) for k in space}
        per[s] = {
            **_public(accuracy(by_knobs[best], test)),
            "knobs": chosen,
            "tuned_on": _public(accuracy(by_knobs[best], train)),
        }
    return {**_public(accuracy(held, labels)), "scenarios": per}


def _scenario(prepared: Sequence[Prepared], name: str) -> str:
    return next(p.case.scenario for p in prepared if p.case.name == name)


def evaluate(data: Path, *, loso: bool = True) -> tuple[dict[str, list[str]], dict[str, object]]:
    """Rank every case with the default knobs; with labels, the accuracy figures too."""
    cases = load_cases(data)
    prepared = prepare(cases)
    scored = rank_scored(prepared)
    rankings = {n: [c.entity_id for c in r] for n, r in scored.items()}
    # Labels are read only now, after every ranking exists.
    labels = {c.name: label(c) for c in cases}
    report: dict[str, object] = {"cases": len(cases)}
    if any(labels.values()):
        report["default_knobs"] = {
            **_public(accuracy(scored, labels)),
            "by_scenario": {
                s: _public(
                    accuracy(
                        scored, {n: lab for n, lab in labels.items() if _scenario(prepared, n) == s}
                    )
                )
                for s in sorted({c.scenario for c in cases})
            },
        }
        if loso:
            report["leave_one_scenario_out"] = leave_one_scenario_out(prepared, labels)
    return rankings, report
