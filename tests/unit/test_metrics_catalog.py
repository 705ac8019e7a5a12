"""The metrics catalog (S6.2c, S6.2f): validation with file:line, hand-computed values of each
metric type, versions, lineage, bulk export/import and editing through the CLI, usage."""

from __future__ import annotations

import difflib
import hashlib
import shutil
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from opslake.errors import DefinitionError
from opslake.lake.schemas import ASSETS, METRIC_POINTS, OBJECT_KINDS
from opslake.lake.storage import Lake
from opslake.metrics_catalog import compute as compute_mod
from opslake.metrics_catalog.catalog import Catalog
from opslake.metrics_catalog.definition import METRIC_TYPES, Measure
from opslake.metrics_catalog.lineage import lineage, sources
from opslake.metrics_catalog.loader import MetricSet, load, load_texts
from opslake.metrics_catalog.models import current_rows
from opslake.metrics_catalog.usage import USAGE_SCHEMA, read_usage, record_usage
from opslake.metrics_catalog.versions import VersionStore
from opslake.settings import Settings

REPO_METRICS = Path(__file__).resolve().parents[2] / "metrics"


@pytest.fixture(scope="module")
def repo_catalog() -> MetricSet:
    """The repository's catalog, validated once for the module."""
    return load(REPO_METRICS)


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the only line of ``text`` containing ``needle``."""
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


# -- the repository's definitions --------------------------------------------------------


def test_every_definition_in_the_repository_validates(repo_catalog: MetricSet) -> None:
    metrics = repo_catalog.metrics
    assert len(metrics) >= 60
    categories = {m.category for m in metrics.values()}
    assert set(OBJECT_KINDS) | {"service"} <= categories
    assert {m.type for m in metrics.values()} == set(METRIC_TYPES)
    # Every metric belongs to exactly one family, and every family has a file.
    members = [i for ids in repo_catalog.families.values() for i in ids]
    assert sorted(members) == sorted(metrics)
    assert set(repo_catalog.family_files) == set(repo_catalog.families)
    for m in metrics.values():
        assert m.source_file.endswith(".yaml") and m.source_line > 0, m.id
        assert all(m.names.get(lang) for lang in ("zh-CN", "en", "zh-TW")), m.id


# -- malformed definitions: each problem names its file and line --------------------------

HEAD = """\
family: probe
category: cloud
owner: team:test
model: metric_points
metrics:
"""


def entry(metric_id: str, body: str, unit: str = "ratio") -> str:
    return (
        f"  - id: {metric_id}\n"
        "    names: {zh-CN: 甲, en: A, zh-TW: 甲}\n"
        "    description: A test metric.\n"
        f"    unit: {unit}\n"
        f"{body}"
    )


SIMPLE = "    type: simple\n    measure: {agg: avg, expr: value}\n"


def problems_of(texts: dict[str, str]) -> list:
    with pytest.raises(DefinitionError) as caught:
        load_texts(texts)
    problems = caught.value.problems
    for p in problems:  # the exception text carries FILE:LINE of each problem
        assert f"{p.file}:{p.line}: " in str(caught.value)
    return problems


def test_unknown_column_in_a_measure_names_the_measure_line() -> None:
    text = (
        HEAD
        + entry("t.ok", SIMPLE)
        + entry("t.bad", "    type: simple\n    measure: {agg: avg, expr: valu * 2}\n")
    )
    (p,) = problems_of({"metrics/x/probe.yaml": text})
    assert (p.file, p.line) == ("metrics/x/probe.yaml", line_of(text, "valu * 2"))
    assert p.line == 17
    assert "t.bad" in p.message and "valu" in p.message and "unknown column" in p.message


def test_unknown_column_in_a_filter_names_the_filter_line() -> None:
    text = HEAD + entry("t.bad", SIMPLE + "    filter: metrc = 'cpu'\n")
    (p,) = problems_of({"f.yaml": text})
    assert p.line == line_of(text, "filter:") == 12
    assert "metrc" in p.message


def test_bad_unit_names_the_unit_line() -> None:
    text = HEAD + entry("t.ok", SIMPLE) + entry("t.bad", SIMPLE, unit="furlongs")
    (p,) = problems_of({"f.yaml": text})
    assert p.line == line_of(text, "unit: furlongs") == 15
    assert "furlongs" in p.message and "t.bad" in p.message


def test_a_cycle_between_derived_metrics_names_both_entries() -> None:
    text = (
        HEAD
        + entry("t.a", "    type: derived\n    inputs: {b: t.b}\n    expr: b + 1\n")
        + entry("t.b", "    type: derived\n    inputs: {a: t.a}\n    expr: a * 2\n")
    )
    problems = problems_of({"f.yaml": text})
    assert sorted((p.file, p.line) for p in problems) == [
        ("f.yaml", line_of(text, "- id: t.a")),
        ("f.yaml", line_of(text, "- id: t.b")),
    ]
    assert [p.line for p in sorted(problems, key=lambda p: p.line)] == [6, 13]
    assert all("cycle" in p.message and "t.a → t.b → t.a" in p.message for p in problems)


def test_duplicate_id_in_two_files_names_both_locations() -> None:
    first = HEAD + entry("t.ok", SIMPLE) + entry("t.same", SIMPLE)
    second = HEAD.replace("family: probe", "family: other") + entry("t.same", SIMPLE)
    (p,) = problems_of({"a/first.yaml": first, "b/second.yaml": second})
    assert (p.file, p.line) == ("b/second.yaml", 6)
    assert f"a/first.yaml:{line_of(first, '- id: t.same')}" in p.message
    assert "a/first.yaml:12" in p.message and "duplicate id 't.same'" in p.message


@pytest.mark.parametrize(
    "field, body",
    [
        (
            "measure",
            (
                "    type: simple\n"
                "    measure: {agg: avg, expr: (SELECT max(value) FROM metric_points)}\n"
            ),
        ),
        ("filter", SIMPLE + "    filter: metric IN (SELECT metric FROM metric_points)\n"),
    ],
)
def test_a_subquery_in_an_expression_is_refused(field: str, body: str) -> None:
    text = HEAD + entry("t.sub", body)
    (p,) = problems_of({"f.yaml": text})
    assert p.line == line_of(text, f"{field}:")
    assert "subquery is not allowed" in p.message


def test_a_subquery_in_a_derived_expression_is_refused() -> None:
    text = (
        HEAD
        + entry("t.ok", SIMPLE)
        + entry("t.sub", "    type: derived\n    inputs: {x: t.ok}\n    expr: x + (SELECT 1)\n")
    )
    (p,) = problems_of({"f.yaml": text})
    assert p.line == line_of(text, "expr: x + (SELECT 1)") == 18
    assert "subquery" in p.message


def test_a_filter_that_is_not_boolean_is_refused() -> None:
    text = HEAD + entry("t.f", SIMPLE + "    filter: value + 1\n")
    (p,) = problems_of({"f.yaml": text})
    assert p.line == line_of(text, "filter: value + 1") == 12
    assert "not true/false" in p.message


def test_a_ratio_over_an_unknown_metric_names_the_reference() -> None:
    text = (
        HEAD
        + entry("t.n", SIMPLE)
        + entry("t.r", "    type: ratio\n    numerator: t.n\n    denominator: t.nope\n")
    )
    (p,) = problems_of({"f.yaml": text})
    assert p.line == line_of(text, "denominator: t.nope") == 18
    assert "unknown metric 't.nope'" in p.message


# -- hand-computed values, one metric of each type ---------------------------------------

DAY = "2026-03-02"
T0 = datetime(2026, 3, 2, tzinfo=UTC)
END = T0 + timedelta(days=1)

HAND = """\
family: hand
category: cloud
owner: team:test
model: metric_points
dimensions: [entity, business, region]
metrics:
  - id: t.cpu.mean
    names: {zh-CN: 均值, en: Mean, zh-TW: 均值}
    description: Mean CPU.
    unit: ratio
    type: simple
    measure: {agg: avg, expr: value}
    filter: metric = 'cpu'
  - id: t.cpu.p95
    names: {zh-CN: P95, en: P95, zh-TW: P95}
    description: p95 CPU.
    unit: ratio
    type: simple
    measure: {agg: p95, expr: value}
    filter: metric = 'cpu'
  - id: t.cpu.hot
    names: {zh-CN: 热, en: Hot, zh-TW: 熱}
    description: Samples above one half.
    unit: count
    type: simple
    measure: {agg: count}
    filter: metric = 'cpu' AND value > 0.5
  - id: t.cpu.samples
    names: {zh-CN: 样本, en: Samples, zh-TW: 樣本}
    description: CPU samples.
    unit: count
    type: simple
    measure: {agg: count}
    filter: metric = 'cpu'
  - id: t.cpu.hot_share
    names: {zh-CN: 热占比, en: Hot share, zh-TW: 熱佔比}
    description: Share of hot samples.
    unit: ratio
    type: ratio
    numerator: t.cpu.hot
    denominator: t.cpu.samples
  - id: t.cpu.spread
    names: {zh-CN: 差, en: Spread, zh-TW: 差}
    description: p95 minus mean.
    unit: ratio
    type: derived
    inputs: {p: t.cpu.p95, a: t.cpu.mean}
    expr: p - a
  - id: t.cpu.hot_3d
    names: {zh-CN: 三天热, en: Hot 3 days, zh-TW: 三天熱}
    description: Hot samples over three days.
    unit: count
    type: cumulative
    base: t.cpu.hot
    window_days: 3
    grains: [1d]
"""
SCOPES = ("entity", "business", "region", "all")
#: entity → (business, department, region, kind, type) as of the day.
CMDB = {
    "h1": ("B1", "D1", "R1", "cloud", "host"),
    "h2": ("B2", "D1", "R2", "cloud", "host"),
    "v1": ("B1", "D2", "R1", "cloud", "vm"),
}
#: (entity, minutes after midnight, value) of metric 'cpu' on the day; x9 is not in the CMDB.
SAMPLES = [
    ("h1", 10, 0.2),
    ("h1", 40, 0.6),
    ("h1", 80, 0.9),
    ("h2", 5, 0.4),
    ("h2", 110, 0.7),
    ("h2", 1439, 0.55),
    ("v1", 30, 0.95),
    ("v1", 135, 0.1),
    ("x9", 15, 0.3),
    ("v1", 59, 0.51),
]


def cmdb_table() -> pa.Table:
    rows = []
    for e, (business, department, region, kind, kind_type) in CMDB.items():
        rows.append(
            {
                "entity_id": e,
                "kind": kind,
                "type": kind_type,
                "name": e,
                "business": business,
                "department": department,
                "region": region,
                "lifecycle_state": "in_service",
                "valid_from": T0 - timedelta(days=9),
            }
        )
    # h2's earlier version (another business) is no longer current at the end of the day.
    rows.append(
        {
            "entity_id": "h2",
            "kind": "cloud",
            "type": "host",
            "name": "h2",
            "business": "B0",
            "department": "D0",
            "region": "R0",
            "lifecycle_state": "in_service",
            "valid_from": T0 - timedelta(days=30),
            "valid_to": T0 - timedelta(days=9),
        }
    )
    history = pa.Table.from_pylist(
        [{n: r.get(n) for n in ASSETS.names} for r in rows], schema=ASSETS
    )
    return current_rows(history, END)


def points_table() -> pa.Table:
    rows = [(e, T0 + timedelta(minutes=m), v, "cpu") for e, m, v in SAMPLES]
    rows += [
        ("h1", T0 - timedelta(minutes=1), 0.99, "cpu"),  # the day before
        ("h1", END, 0.99, "cpu"),  # the next day
        ("h1", T0 + timedelta(minutes=20), 5.0, "mem"),
    ]  # another metric
    return pa.Table.from_pylist(
        [
            {
                "ts": ts,
                "metric": metric,
                "entity_id": e,
                "value": v,
                "labels": [],
                "source": "prometheus",
                "batch_id": "b1",
            }
            for e, ts, v, metric in rows
        ],
        schema=METRIC_POINTS,
    )


def attrs(entity: str | None) -> tuple:
    business, department, region, kind, kind_type = {**CMDB, **OLD_CI}.get(entity, (None,) * 5)
    return business, department, region, kind, kind_type


def scope_key(scope: str, entity: str) -> tuple:
    """(scope, entity_id, business, department, region, object_kind, object_type)."""
    business, department, region, kind, kind_type = attrs(entity)
    return {
        "entity": (scope, entity, business, department, region, kind, kind_type),
        "business": (scope, None, business, None, None, None, None),
        "region": (scope, None, None, None, region, None, None),
        "all": (scope, None, None, None, None, None, None),
    }[scope]


def by_group(select=lambda value: True) -> dict[tuple, list[float]]:
    """(grain, bucket_start, scope, dims…) → sample values, in plain Python."""
    out: dict[tuple, list[float]] = defaultdict(list)
    for e, minutes, value in SAMPLES:
        if not select(value):
            continue
        ts = T0 + timedelta(minutes=minutes)
        for grain, bucket in (("1h", ts.replace(minute=0)), ("1d", T0)):
            for scope in SCOPES:
                out[(grain, bucket, *scope_key(scope, e))].append(value)
    return dict(out)


def rows_of(values: pa.Table, metric_id: str, column: str = "value") -> dict[tuple, float]:
    out = {}
    for r in values.to_pylist():
        if r["metric_id"] == metric_id:
            key = (
                r["grain"],
                r["bucket_start"],
                r["scope"],
                r["entity_id"],
                r["business"],
                r["department"],
                r["region"],
                r["object_kind"],
                r["object_type"],
            )
            assert key not in out, key
            out[key] = r[column]
    return out


def hist_row(scope: str, entity: str | None, day: str, value: float, grain: str = "1d") -> dict:
    _, entity_id, business, department, region, kind, kind_type = scope_key(scope, entity)
    return {
        "metric_id": "t.cpu.hot",
        "metric_version": "1.0",
        "grain": grain,
        "bucket_start": datetime.fromisoformat(day).replace(tzinfo=UTC),
        "scope": scope,
        "entity_id": entity_id,
        "business": business,
        "department": department,
        "region": region,
        "object_kind": kind,
        "object_type": kind_type,
        "value": value,
        "numerator": None,
        "denominator": None,
    }


OLD_CI = {"h0": ("B9", "D9", "R9", "cloud", "vm")}  # reported two days ago, retired since
HISTORY = [
    hist_row("entity", "h1", "2026-03-01", 2),
    hist_row("all", None, "2026-03-01", 5),
    hist_row("business", "h1", "2026-03-01", 4),
    hist_row("entity", "h1", "2026-03-01", 1000, grain="1h"),  # not a daily row
    hist_row("entity", "h1", "2026-02-28", 1),
    hist_row("all", None, "2026-02-28", 4),
    hist_row("entity", "h0", "2026-02-28", 3),
    hist_row("entity", "h1", "2026-02-27", 500),
]  # outside the three-day window


@pytest.fixture(scope="module")
def hand_values() -> tuple[pa.Table, list]:
    metrics = load_texts({"hand.yaml": HAND})
    calls: list = []

    def history(ids: list[str], days: list[str]) -> pa.Table:
        calls.append((list(ids), list(days)))
        rows = [
            r
            for r in HISTORY
            if r["metric_id"] in ids and r["bucket_start"].date().isoformat() in days
        ]
        return pa.Table.from_pylist(rows, schema=compute_mod.METRIC_VALUES)

    ids = list(metrics.metrics)
    versions = {mid: f"{n + 1}.0" for n, mid in enumerate(ids)}
    values = compute_mod.compute(
        metrics,
        ids,
        day=DAY,
        silver={"metric_points": points_table()},
        cmdb=cmdb_table(),
        versions=versions,
        start=T0,
        end=END,
        history=history,
    )
    for r in values.to_pylist():
        assert r["metric_version"] == versions[r["metric_id"]]
    return values, calls


def test_simple_average_with_its_numerator_and_denominator(hand_values) -> None:
    values, _ = hand_values
    groups = by_group()
    got = rows_of(values, "t.cpu.mean")
    assert set(got) == set(groups)
    for key, vals in groups.items():
        assert got[key] == pytest.approx(sum(vals) / len(vals)), key
    numerators = rows_of(values, "t.cpu.mean", "numerator")
    denominators = rows_of(values, "t.cpu.mean", "denominator")
    for key, vals in groups.items():
        assert numerators[key] == pytest.approx(sum(vals)) and denominators[key] == len(vals)
    # Spot checks written out: h1 on the day, and the whole estate in hour 0.
    assert got[("1d", T0, *scope_key("entity", "h1"))] == pytest.approx((0.2 + 0.6 + 0.9) / 3)
    assert got[("1h", T0, *scope_key("all", None))] == pytest.approx(
        (0.2 + 0.6 + 0.4 + 0.95 + 0.3 + 0.51) / 6
    )
    # h2 is grouped under its current business, not the retired version's.
    assert ("1d", T0, *scope_key("business", "h2")) in got
    assert not any(k[4] == "B0" for k in got)


def test_simple_p95_is_numpy_linear_percentile(hand_values) -> None:
    values, _ = hand_values
    groups = by_group()
    got = rows_of(values, "t.cpu.p95")
    assert set(got) == set(groups)
    for key, vals in groups.items():
        assert got[key] == pytest.approx(float(np.percentile(vals, 95, method="linear"))), key
    assert set(rows_of(values, "t.cpu.p95", "numerator").values()) == {None}


def test_simple_count_with_filter(hand_values) -> None:
    values, _ = hand_values
    hot = by_group(lambda v: v > 0.5)
    got = rows_of(values, "t.cpu.hot")
    assert set(got) == set(hot)  # buckets without a hot sample have no row
    assert got == {k: float(len(v)) for k, v in hot.items()}
    assert got[("1d", T0, *scope_key("all", None))] == 6.0
    assert got[("1h", T0, *scope_key("entity", "v1"))] == 2.0


def test_ratio_is_numerator_over_denominator_with_zero_for_missing_numerators(hand_values) -> None:
    values, _ = hand_values
    samples, hot = by_group(), by_group(lambda v: v > 0.5)
    got = rows_of(values, "t.cpu.hot_share")
    nums = rows_of(values, "t.cpu.hot_share", "numerator")
    dens = rows_of(values, "t.cpu.hot_share", "denominator")
    assert set(got) == set(samples)
    for key, vals in samples.items():
        n = len(hot.get(key, []))
        assert (got[key], nums[key], dens[key]) == (pytest.approx(n / len(vals)), n, len(vals))
    assert got[("1d", T0, *scope_key("entity", "x9"))] == 0.0
    assert got[("1d", T0, *scope_key("all", None))] == pytest.approx(6 / 10)


def test_derived_applies_its_expression_to_the_inputs(hand_values) -> None:
    values, _ = hand_values
    groups = by_group()
    got = rows_of(values, "t.cpu.spread")
    assert set(got) == set(groups)
    for key, vals in groups.items():
        expected = float(np.percentile(vals, 95)) - sum(vals) / len(vals)
        assert got[key] == pytest.approx(expected), key


def test_cumulative_adds_the_earlier_days_of_its_window(hand_values) -> None:
    values, calls = hand_values
    assert calls == [(["t.cpu.hot"], ["2026-03-01", "2026-02-28"])]
    expected: dict[tuple, float] = defaultdict(float)
    for key, vals in by_group(lambda v: v > 0.5).items():
        if key[0] == "1d":
            expected[key] += len(vals)
    for r in HISTORY:
        if r["grain"] == "1d" and r["bucket_start"] >= T0 - timedelta(days=2):
            expected[
                (
                    "1d",
                    T0,
                    r["scope"],
                    r["entity_id"],
                    r["business"],
                    r["department"],
                    r["region"],
                    r["object_kind"],
                    r["object_type"],
                )
            ] += r["value"]
    got = rows_of(values, "t.cpu.hot_3d")
    assert got == pytest.approx(dict(expected))
    assert got[("1d", T0, *scope_key("all", None))] == 6 + 5 + 4
    assert got[("1d", T0, *scope_key("entity", "h1"))] == 2 + 2 + 1
    assert {k[0] for k in got} == {"1d"} and {k[1] for k in got} == {T0}


# -- versions ------------------------------------------------------------------------------


def test_versions_minor_and_breaking_changes_keep_their_history(tmp_path: Path, lake: Lake) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    path = directory / "compute.yaml"
    shutil.copy(REPO_METRICS / "cloud" / "compute.yaml", path)
    mid = "cloud.host.cpu_utilisation"
    catalog = Catalog(directory, lake)

    first = catalog.versions.record(catalog.get(mid), by="test")
    assert (first.version, first.change, first.changed_fields) == ("1.0", "new", ())
    assert catalog.versions.record(catalog.get(mid), by="test").version == "1.0"  # unchanged

    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace(
            "Mean CPU busy ratio of physical hosts.", "Mean CPU busy ratio of the physical hosts."
        ),
        encoding="utf-8",
    )
    catalog.reload()
    second = catalog.versions.record(catalog.get(mid), by="test")
    assert (second.version, second.change, second.changed_fields) == (
        "1.1",
        "minor",
        ("description",),
    )

    text = path.read_text(encoding="utf-8")
    assert text.count("measure: {agg: avg, expr: value}") == 1
    path.write_text(
        text.replace("measure: {agg: avg, expr: value}", "measure: {agg: avg, expr: value * 100}"),
        encoding="utf-8",
    )
    catalog.reload()
    third = catalog.versions.record(catalog.get(mid), by="test")
    assert (third.version, third.change) == ("2.0", "breaking")
    assert "measure" in third.changed_fields

    # A fresh store reads the whole history back from the lake, old definitions intact.
    history = VersionStore(lake).history()[mid]
    assert [(v.version, v.change) for v in history] == [
        ("1.0", "new"),
        ("1.1", "minor"),
        ("2.0", "breaking"),
    ]
    assert history[0].definition["measure"] == {"agg": "avg", "expr": "value"}
    assert history[2].definition["measure"] == {"agg": "avg", "expr": "value * 100"}
    table = VersionStore(lake).table()
    assert table.num_rows == 3
    assert table.column("version").to_pylist() == ["1.0", "1.1", "2.0"]
    assert table.column("change").to_pylist() == ["new", "minor", "breaking"]
    assert set(table.column("metric_id").to_pylist()) == {mid}


def test_a_breaking_change_of_an_input_is_a_breaking_change_of_what_uses_it(
    tmp_path: Path, lake: Lake
) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    path = directory / "compute.yaml"
    shutil.copy(REPO_METRICS / "cloud" / "compute.yaml", path)
    catalog = Catalog(directory, lake)
    ratio, headroom = "cloud.vm.cpu_saturation_ratio", "cloud.vm.cpu_headroom"
    first = catalog.record_versions(by="test")
    assert first[ratio] == first[headroom] == "1.0"

    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace(
            "AND object_type = 'vm' AND value > 0.9", "AND object_type = 'vm' AND value > 0.8"
        ),
        encoding="utf-8",
    )
    catalog.reload()
    assert catalog.entry(ratio).pending == "breaking"
    second = catalog.record_versions(by="test")
    assert second["cloud.vm.saturated_samples"] == "2.0"
    assert second[ratio] == "2.0"  # its numerator changed
    assert second["cloud.vm.saturated_samples_7d"] == "2.0"
    assert second[headroom] == "1.0"  # p95 did not change
    latest = catalog.versions.latest(ratio)
    assert latest.changed_fields == ("input:cloud.vm.saturated_samples",)
    assert catalog.record_versions(by="test") == second  # nothing new the second time


# -- lineage ---------------------------------------------------------------------------


def test_lineage_of_a_derived_metric_reaches_the_landing_sources(repo_catalog) -> None:
    from opslake.assets.metric_catalog import upstream_map
    from opslake.orchestration.runner import definitions

    edges = lineage(
        repo_catalog, "cloud.vm.cpu_headroom", upstream_map(definitions().resolve_asset_graph())
    )
    assert {"landing/prometheus", "landing/cmdb"} <= set(sources(edges))
    hops = {(e.node, e.upstream, e.upstream_column, e.relation) for e in edges}
    assert (
        "metric:cloud.vm.cpu_headroom",
        "metric:cloud.vm.cpu_utilisation_p95",
        None,
        "derived_input",
    ) in hops
    assert ("metric:cloud.vm.cpu_utilisation_p95", "silver/metric_points", "value", "reads") in hops
    assert ("metric:cloud.vm.cpu_utilisation_p95", "silver/assets", "business", "reads") in hops
    assert ("bronze/prometheus_samples", "landing/prometheus", None, "built_from") in hops
    assert ("silver/assets", "bronze/cmdb_cis", None, "built_from") in hops


# -- the CLI: export/import, publish/deprecate, add ----------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Runs ``opslake catalog …`` on a copy of the repository's catalog in a temp lake."""
    from opslake.cli import app

    directory = tmp_path / "metrics"
    shutil.copytree(REPO_METRICS, directory)
    monkeypatch.setenv("OPSLAKE_HOME", str(tmp_path / "lake"))
    monkeypatch.delenv("OPSLAKE_STATE_DIR", raising=False)
    monkeypatch.delenv("OPSLAKE_S3_ENDPOINT", raising=False)
    monkeypatch.setenv("OPSLAKE_METRICS_DIR", str(directory))
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, ok: bool = True):
        result = runner.invoke(app, ["catalog", *args], input=input)
        if ok:
            assert result.exit_code == 0, (result.output, result.exception)
        return result

    invoke.directory = directory
    invoke.lake = Lake.from_settings(Settings.from_env())
    invoke.use = lambda d: monkeypatch.setenv("OPSLAKE_METRICS_DIR", str(d))
    return invoke


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("fmt", ["yaml", "json", "csv"])
def test_export_import_into_an_empty_catalog_export_again_is_identical(
    cli, tmp_path: Path, fmt: str, repo_catalog
) -> None:
    first = tmp_path / f"first.{fmt}"
    cli("export", "--format", fmt, "--output", str(first))
    text = first.read_text(encoding="utf-8")
    assert text.count("cloud.host.cpu_utilisation") >= 1

    empty = tmp_path / "empty"
    empty.mkdir()
    cli.use(empty)
    result = cli("import", str(first))
    assert "wrote" in result.output
    second = tmp_path / f"second.{fmt}"
    cli("export", "-f", fmt, "-o", str(second))
    assert second.read_text(encoding="utf-8") == text

    imported = load(empty)
    assert set(imported.metrics) == set(repo_catalog.metrics)
    for mid, original in repo_catalog.metrics.items():
        assert imported.metrics[mid].to_dict() == original.to_dict(), mid
        assert imported.metrics[mid].family == original.family, mid
    assert imported.family_descriptions == repo_catalog.family_descriptions
    # The import recorded a first version of every metric it brought in.
    versions = VersionStore(cli.lake).history()
    assert len(versions) == len(repo_catalog.metrics)
    assert {v[-1].version for v in versions.values()} == {"1.0"}


def test_publish_and_deprecate_edit_only_the_status_and_record_a_minor_version(cli) -> None:
    cli("sync")
    data = cli.directory / "data" / "data_platform.yaml"
    before = data.read_text(encoding="utf-8").splitlines()
    result = cli("deprecate", "data.logs.unresolved_share")
    assert "version 1.1" in result.output
    after = data.read_text(encoding="utf-8").splitlines()
    changed = [(n, a, b) for n, (a, b) in enumerate(zip(before, after, strict=True), 1) if a != b]
    assert changed == [(49, "    status: draft", "    status: deprecated")]

    service = cli.directory / "service" / "service_management.yaml"
    before = service.read_text(encoding="utf-8").splitlines()
    cli("publish", "service.alert.noise_ratio")
    after = service.read_text(encoding="utf-8").splitlines()
    diff = [d for d in difflib.ndiff(before, after) if d[:1] in "+-"]
    assert diff == ["-     status: draft", "+     status: published"]

    # An inherited status is written on the metric itself, under its id: one line added.
    compute = cli.directory / "cloud" / "compute.yaml"
    before = compute.read_text(encoding="utf-8").splitlines()
    cli("deprecate", "cloud.vm.cpu_samples")
    after = compute.read_text(encoding="utf-8").splitlines()
    added = [d for d in difflib.ndiff(before, after) if d[:1] in "+-"]
    assert added == ["+     status: deprecated"]
    assert after[after.index("  - id: cloud.vm.cpu_samples") + 1] == "    status: deprecated"

    metrics = load(cli.directory)
    assert metrics.metrics["data.logs.unresolved_share"].status == "deprecated"
    assert metrics.metrics["service.alert.noise_ratio"].status == "published"
    assert metrics.metrics["cloud.vm.cpu_samples"].status == "deprecated"
    assert metrics.metrics["cloud.vm.cpu_headroom"].status == "published"  # its neighbour
    history = VersionStore(cli.lake).history()
    for mid in ("data.logs.unresolved_share", "service.alert.noise_ratio", "cloud.vm.cpu_samples"):
        assert [(v.version, v.change, v.changed_fields) for v in history[mid]] == [
            ("1.0", "new", ()),
            ("1.1", "minor", ("status",)),
        ], mid
    assert [v.version for v in history["cloud.vm.cpu_headroom"]] == ["1.0"]


#: Answers to `catalog add`'s prompts, in order (status is not asked: a new metric is draft).
ADD_ANSWERS = [
    "test.cpu.mean_busy",
    "测试CPU",
    "Test CPU",
    "測試CPU",
    "Mean CPU of hosts.",
    "ratio",
    "cloud",
    "simple",
    "team:test",
    "metric_points",
    "avg",
    "value",
    "metric = 'node_cpu_utilisation_ratio'",
    "entity,business",
    "1h,1d",
    "capacity",
]
ADD_INPUT = "".join(f"{answer}\n" for answer in ADD_ANSWERS)


def test_add_with_prompted_input_writes_a_valid_metric(cli) -> None:
    before = snapshot(cli.directory)
    result = cli("add", "--family", "my_family", input=ADD_INPUT)
    assert "added test.cpu.mean_busy to my_family as version 1.0" in result.output
    after = snapshot(cli.directory)
    assert set(after) - set(before) == {"cloud/my_family.yaml"}
    assert {k: after[k] for k in before} == before  # no other file touched

    metrics = load(cli.directory)
    m = metrics.metrics["test.cpu.mean_busy"]
    assert m.family == "my_family" and metrics.families["my_family"] == [m.id]
    assert (m.type, m.unit, m.category, m.owner, m.status, m.model) == (
        "simple",
        "ratio",
        "cloud",
        "team:test",
        "draft",
        "metric_points",
    )
    assert m.measure == Measure("avg", "value")
    assert m.filter == "metric = 'node_cpu_utilisation_ratio'"
    assert m.names == {"zh-CN": "测试CPU", "en": "Test CPU", "zh-TW": "測試CPU"}
    assert (m.dimensions, m.grains, m.tags) == (("entity", "business"), ("1h", "1d"), ("capacity",))
    assert VersionStore(cli.lake).latest(m.id).version == "1.0"


def test_edit_offers_current_values_and_records_only_what_changed(cli) -> None:
    mid = "cloud.host.cpu_utilisation"
    cli("sync")
    before = load(cli.directory).metrics[mid]
    # Enter keeps each offered value; only the description (5th prompt) is new.
    answers = ["", "", "", "", "Mean CPU busy ratio of every physical host.", *[""] * 12]
    result = cli("edit", mid, input="".join(f"{a}\n" for a in answers))
    assert f"{mid} is now version 1.1 (minor)" in result.output
    after = load(cli.directory).metrics[mid]
    assert after.description == "Mean CPU busy ratio of every physical host."
    assert {k: v for k, v in after.to_dict().items() if k != "description"} == {
        k: v for k, v in before.to_dict().items() if k != "description"
    }
    assert VersionStore(cli.lake).latest(mid).changed_fields == ("description",)


def test_an_invalid_import_is_rejected_and_writes_nothing(cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "families:\n"
        "  - family: cloud_compute\n"
        "    description: replaced\n"
        "    metrics:\n"
        "      - {id: cloud.host.cpu_utilisation, names: {zh-CN: a, en: a, zh-TW: a},\n"
        "         description: d, unit: furlongs, category: cloud, type: simple,\n"
        "         owner: team:x, model: metric_points, measure: {agg: avg, expr: value}}\n"
        "      - {id: cloud.new.metric, names: {zh-CN: b, en: b, zh-TW: b}, description: d,\n"
        "         unit: ratio, category: cloud, type: simple, owner: team:x,\n"
        "         model: metric_points, measure: {agg: avg, expr: value}}\n",
        encoding="utf-8",
    )
    before = snapshot(cli.directory)
    result = cli("import", str(bad), ok=False)
    assert result.exit_code != 0
    assert isinstance(result.exception, DefinitionError)
    assert "furlongs" in str(result.exception)
    assert snapshot(cli.directory) == before
    assert not cli.lake.exists(cli.lake.path("catalog", "versions"))
    assert "cloud.new.metric" not in load(cli.directory).metrics


# -- usage ---------------------------------------------------------------------------------


def test_record_usage_appends_rows_readable_by_read_usage(lake: Lake) -> None:
    at = datetime(2026, 3, 2, 8, 30, tzinfo=UTC)
    record_usage(
        lake,
        principal_kind="job",
        principal="dagster:daily",
        action="compute",
        metrics={"a.b": ("1.0", 24), "a.c": ("2.1", 0)},
        detail={"day": "2026-03-02"},
        at=at,
    )
    record_usage(
        lake,
        principal_kind="api_key",
        principal="key-7",
        action="read",
        metrics={"a.b": ("1.0", 3)},
        at=at + timedelta(days=1),
    )
    record_usage(lake, principal_kind="cli", principal="me", action="read", metrics={})
    with pytest.raises(ValueError):
        record_usage(
            lake, principal_kind="robot", principal="x", action="read", metrics={"a.b": ("1.0", 1)}
        )
    usage = read_usage(lake)
    assert usage.schema.names == USAGE_SCHEMA.names
    rows = sorted(
        (
            r["at"],
            r["principal_kind"],
            r["principal"],
            r["action"],
            r["metric_id"],
            r["metric_version"],
            r["rows"],
        )
        for r in usage.to_pylist()
    )
    assert rows == [
        (at, "job", "dagster:daily", "compute", "a.b", "1.0", 24),
        (at, "job", "dagster:daily", "compute", "a.c", "2.1", 0),
        (at + timedelta(days=1), "api_key", "key-7", "read", "a.b", "1.0", 3),
    ]
    assert lake.partitions("gold", "metric_usage") == ["2026-03-02", "2026-03-03"]
    details = {r["detail"] for r in usage.to_pylist() if r["principal_kind"] == "job"}
    assert details == {'{"day": "2026-03-02"}'}
