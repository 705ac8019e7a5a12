"""Bulk export and import of definitions as YAML, JSON or CSV (S6.2c bulk import/export).

Every format carries the same thing: each family (name, description) with its metrics in
full (no file-level defaults), so exporting, importing into an empty catalog and exporting
again gives the same bytes. CSV has one row per metric; nested fields are JSON in a cell.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import yaml

from opslake.errors import ConfigError
from opslake.metrics_catalog.loader import MetricSet, load_texts

FORMATS = ("yaml", "json", "csv")
_CSV_SCALARS = (
    "family",
    "family_description",
    "id",
    "description",
    "unit",
    "category",
    "type",
    "owner",
    "status",
    "model",
    "filter",
    "numerator",
    "denominator",
    "expr",
    "base",
    "window_days",
    "slo",
    "runbook",
)
_CSV_JSON = (
    "names",
    "dimensions",
    "grains",
    "tags",
    "applies_to",
    "thresholds",
    "measure",
    "inputs",
)


def families(metrics: MetricSet) -> list[dict[str, Any]]:
    """Families with their metrics, as plain data in a stable order."""
    return [
        {
            "family": name,
            "description": metrics.family_descriptions.get(name, ""),
            "metrics": [m.to_dict() for m in metrics.family(name)],
        }
        for name in sorted(metrics.families)
    ]


def export(metrics: MetricSet, fmt: str) -> str:
    """The whole catalog as text in ``fmt``."""
    data = families(metrics)
    if fmt == "yaml":
        return yaml.safe_dump({"families": data}, allow_unicode=True, sort_keys=False, width=100)
    if fmt == "json":
        return json.dumps({"families": data}, ensure_ascii=False, indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=[*_CSV_SCALARS, *_CSV_JSON], lineterminator="\n")
        writer.writeheader()
        for family in data:
            for metric in family["metrics"]:
                row = {"family": family["family"], "family_description": family["description"]}
                for key in _CSV_SCALARS[2:]:
                    row[key] = "" if metric.get(key) is None else metric[key]
                for key in _CSV_JSON:
                    row[key] = (
                        ""
                        if key not in metric
                        else json.dumps(metric[key], ensure_ascii=False, sort_keys=True)
                    )
                writer.writerow(row)
        return out.getvalue()
    raise ConfigError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def _from_csv(text: str) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for n, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        family = out.setdefault(
            row["family"],
            {"family": row["family"], "metrics": [], "description": row["family_description"]},
        )
        metric: dict[str, Any] = {}
        for key in _CSV_SCALARS[2:]:
            if row.get(key):
                metric[key] = row[key]
        for key in ("window_days",):
            if key in metric:
                metric[key] = int(metric[key])
        if "slo" in metric:
            metric["slo"] = float(metric["slo"])
        for key in _CSV_JSON:
            if row.get(key):
                try:
                    metric[key] = json.loads(row[key])
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"CSV line {n}: column {key} is not JSON ({exc})") from None
        family["metrics"].append(metric)
    return list(out.values())


def parse(text: str, fmt: str) -> list[dict[str, Any]]:
    """Families from exported text."""
    if fmt not in FORMATS:
        raise ConfigError(
            f"unknown format {fmt!r}; use one of {', '.join(FORMATS)} (or a "
            ".yaml, .json or .csv file name)"
        )
    if fmt == "csv":
        return _from_csv(text)
    try:
        data = yaml.safe_load(text) if fmt == "yaml" else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"the {fmt} input does not parse: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("families"), list):
        raise ConfigError("an export is {families: [{family, description, metrics: [...]}]}")
    return data["families"]


def family_file(family: dict[str, Any]) -> str:
    """The YAML file text of one family."""
    body = {"family": family["family"]}
    if family.get("description"):
        body["description"] = family["description"]
    body["metrics"] = family["metrics"]
    return yaml.safe_dump(body, allow_unicode=True, sort_keys=False, width=100)


def family_path(directory: Path, family: dict[str, Any]) -> Path:
    """Where a family's file goes: ``<dir>/<category of its first metric>/<family>.yaml``."""
    category = (family["metrics"][0].get("category") if family["metrics"] else None) or "other"
    return directory / str(category) / f"{family['family']}.yaml"


def import_into(
    directory: Path, incoming: list[dict[str, Any]], existing: MetricSet | None
) -> list[Path]:
    """Merge families into the catalog at ``directory``, validating everything first.

    A metric with an id already in the catalog replaces it; the catalog that results must
    validate as a whole, or nothing is written.
    """
    merged: dict[str, dict[str, Any]] = {}
    paths: dict[str, Path] = {}
    if existing is not None:
        for family in families(existing):
            merged[family["family"]] = family
            paths[family["family"]] = Path(existing.family_files[family["family"]])
    changed = {f["family"] for f in incoming}
    for family in incoming:
        ids = {m.get("id") for m in family.get("metrics", [])}
        for other in merged.values():
            kept = [m for m in other["metrics"] if m.get("id") not in ids]
            if len(kept) != len(other["metrics"]):
                changed.add(other["family"])
                other["metrics"] = kept
        target = merged.setdefault(
            family["family"], {"family": family["family"], "description": "", "metrics": []}
        )
        target["description"] = family.get("description") or target["description"]
        target["metrics"] += family.get("metrics", [])
    texts = {}
    for name, family in merged.items():
        if not family["metrics"]:
            continue
        path = paths.get(name) or family_path(directory, family)
        paths[name] = path
        texts[str(path)] = family_file(family)
    load_texts(texts)  # raises DefinitionError naming the imported file's problems
    written = []
    for name in sorted(changed):
        path = paths[name]
        if not merged[name]["metrics"]:  # every metric moved to another family
            path.unlink(missing_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(texts[str(path)], encoding="utf-8")
        written.append(path)
    return sorted(written)
