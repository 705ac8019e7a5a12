"""The catalog as tables in the warehouse: metrics, versions, dimensions, lineage (S6.2f).

They are small and rewritten whole (no partitions) each time the warehouse is refreshed;
versions and usage keep their own append-only history in the lake.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import pyarrow as pa

from opslake.metrics_catalog.catalog import Catalog
from opslake.metrics_catalog.compute import SCOPE_COLUMNS
from opslake.metrics_catalog.lineage import lineage_table

DESCRIPTIONS = {
    "catalog_metrics": "Every catalog metric as defined now: id, names (zh-CN, en, zh-TW), "
    "description, unit, category, type, expression, dimensions, grains, "
    "owner, thresholds, SLO, status, current version, file and line.",
    "catalog_versions": "The full history of every metric definition: version (MAJOR.MINOR), "
    "change (new / breaking / minor), changed fields, the definition as "
    "JSON, when and by whom it was recorded.",
    "catalog_dimensions": "Which dimensions each metric can be broken down by, and the gold "
    "columns that carry them.",
    "catalog_lineage": "Lineage of every metric, hop by hop: metric → input metrics → silver "
    "columns → bronze tables → landing sources.",
}

METRICS_SCHEMA = pa.schema(
    [
        ("metric_id", pa.string()),
        ("family", pa.string()),
        ("category", pa.string()),
        ("type", pa.string()),
        ("unit", pa.string()),
        ("status", pa.string()),
        ("owner", pa.string()),
        ("name_zh_cn", pa.string()),
        ("name_en", pa.string()),
        ("name_zh_tw", pa.string()),
        ("description", pa.string()),
        ("expression", pa.string()),
        ("dimensions", pa.list_(pa.string())),
        ("grains", pa.list_(pa.string())),
        ("tags", pa.list_(pa.string())),
        ("threshold_warning", pa.float64()),
        ("threshold_critical", pa.float64()),
        ("threshold_direction", pa.string()),
        ("slo", pa.float64()),
        ("runbook", pa.string()),
        ("current_version", pa.string()),
        ("file", pa.string()),
        ("line", pa.int32()),
    ]
)
DIMENSIONS_SCHEMA = pa.schema(
    [("metric_id", pa.string()), ("dimension", pa.string()), ("columns", pa.list_(pa.string()))]
)


def expression(definition: dict) -> str:
    """A one-line summary of how a metric is computed."""
    kind = definition["type"]
    if kind == "simple":
        measure = definition["measure"]
        text = f"{measure['agg']}({measure['expr']}) FROM {definition['model']}"
        return text + (f" WHERE {definition['filter']}" if definition.get("filter") else "")
    if kind == "ratio":
        return f"{definition['numerator']} / {definition['denominator']}"
    if kind == "derived":
        return f"{definition['expr']} WITH {json.dumps(definition['inputs'], sort_keys=True)}"
    return f"sum of {definition['base']} over {definition['window_days']} days"


def metrics_table(catalog: Catalog) -> pa.Table:
    """One row per metric as defined now."""
    rows = []
    for m in sorted(catalog.metrics.metrics.values(), key=lambda m: m.id):
        latest = catalog.versions.latest(m.id)
        th = m.thresholds
        rows.append(
            {
                "metric_id": m.id,
                "family": m.family,
                "category": m.category,
                "type": m.type,
                "unit": m.unit,
                "status": m.status,
                "owner": m.owner,
                "name_zh_cn": m.names.get("zh-CN"),
                "name_en": m.names.get("en"),
                "name_zh_tw": m.names.get("zh-TW"),
                "description": m.description,
                "expression": expression(m.to_dict()),
                "dimensions": list(m.dimensions),
                "grains": list(m.grains),
                "tags": list(m.tags),
                "threshold_warning": th.warning if th else None,
                "threshold_critical": th.critical if th else None,
                "threshold_direction": th.direction if th else None,
                "slo": m.slo,
                "runbook": m.runbook,
                "current_version": latest.version
                if latest and latest.fingerprint == m.fingerprint()
                else None,
                "file": m.source_file,
                "line": m.source_line,
            }
        )
    return pa.Table.from_pylist(rows, schema=METRICS_SCHEMA)


def dimensions_table(catalog: Catalog) -> pa.Table:
    """(metric, dimension, gold columns) rows, ``all`` included for every metric."""
    rows = [
        {"metric_id": m.id, "dimension": d, "columns": list(SCOPE_COLUMNS.get(d, ()))}
        for m in sorted(catalog.metrics.metrics.values(), key=lambda m: m.id)
        for d in [*m.dimensions, "all"]
    ]
    return pa.Table.from_pylist(rows, schema=DIMENSIONS_SCHEMA)


def write_catalog_tables(catalog: Catalog, upstream: Mapping[str, list[str]]) -> dict[str, int]:
    """Rewrite the four catalog tables; returns rows per table."""
    out = {
        "catalog_metrics": metrics_table(catalog),
        "catalog_versions": catalog.versions.table(),
        "catalog_dimensions": dimensions_table(catalog),
        "catalog_lineage": lineage_table(catalog.metrics, upstream),
    }
    for name, table in out.items():
        catalog.lake.write_table(table, "gold", name, {})
    return {name: table.num_rows for name, table in out.items()}
