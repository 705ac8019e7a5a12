"""``opslake catalog …``: the metrics catalog from the command line (S6.2c, S6.2f).

The logic lives in :mod:`opslake.metrics_catalog`; these commands only parse, prompt and print.
"""

from __future__ import annotations

import getpass
import io
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.tree import Tree

from opslake.cli._common import console, stdout
from opslake.errors import ConfigError
from opslake.settings import Settings

app = typer.Typer(
    help="The metrics catalog: validate, list, show, import/export, add/edit, publish, deprecate.",
    no_args_is_help=True,
)


def _catalog():
    from opslake.metrics_catalog.catalog import Catalog

    return Catalog.from_settings(Settings.from_env())


def _who() -> str:
    return f"cli:{getpass.getuser()}"


@app.command()
def validate() -> None:
    """Check every definition (exit code 2 with file:line and the fix for each problem)."""
    catalog = _catalog()
    metrics = catalog.metrics
    stdout.print(
        f"{len(metrics.metrics)} metrics in {len(metrics.families)} families are "
        f"valid ({catalog.directory})"
    )


@app.command()
def sync() -> None:
    """Record a new version for every definition that changed since its last version."""
    catalog = _catalog()
    before = {mid: catalog.versions.latest(mid) for mid in catalog.metrics.metrics}
    versions = catalog.record_versions(by=_who())
    changed = {m: v for m, v in versions.items() if not before[m] or before[m].version != v}
    for mid, version in sorted(changed.items()):
        stdout.print(f"{mid} → {version}")
    stdout.print(f"{len(changed)} new version(s); {len(versions) - len(changed)} unchanged")


@app.command("list")
def list_(
    search: Annotated[str, typer.Argument(help="Text in id, names, description or tags.")] = "",
    category: Annotated[str | None, typer.Option(help="facility, cloud, application, …")] = None,
    status: Annotated[str | None, typer.Option(help="draft, published or deprecated.")] = None,
    tag: Annotated[str | None, typer.Option(help="Only metrics with this tag.")] = None,
    family: Annotated[str | None, typer.Option(help="Only this family.")] = None,
) -> None:
    """List (and search) metrics."""
    catalog = _catalog()
    found = catalog.search(search, category=category, status=status, tag=tag, family=family)
    table = Table("id", "名称", "name", "category", "type", "unit", "status", "version")
    for m in found:
        latest = catalog.versions.latest(m.id)
        table.add_row(
            m.id,
            m.name("zh-CN"),
            m.name("en"),
            m.category,
            m.type,
            m.unit,
            m.status,
            latest.version if latest else "-",
        )
    stdout.print(table)
    stdout.print(f"{len(found)} of {len(catalog.metrics.metrics)} metrics")


@app.command()
def show(metric_id: Annotated[str, typer.Argument(help="Metric id.")]) -> None:
    """One metric: definition, versions and lineage down to the landing sources."""
    from opslake.assets.metric_catalog import upstream_map
    from opslake.metrics_catalog.lineage import lineage, sources
    from opslake.metrics_catalog.tables import expression
    from opslake.orchestration.runner import definitions

    catalog = _catalog()
    entry = catalog.entry(metric_id)
    m = entry.metric
    stdout.print(
        f"[bold]{m.id}[/] {m.names.get('zh-CN')} / {m.names.get('en')} / {m.names.get('zh-TW')}"
    )
    stdout.print(m.description)
    for label, value in (
        ("type", m.type),
        ("unit", m.unit),
        ("category", m.category),
        ("family", m.family),
        ("owner", m.owner),
        ("status", m.status),
        ("expression", expression(m.to_dict())),
        ("dimensions", ", ".join(m.dimensions) or "(estate total only)"),
        ("grains", ", ".join(m.grains)),
        ("tags", ", ".join(m.tags)),
        ("thresholds", m.to_dict().get("thresholds")),
        ("slo", m.slo),
        ("runbook", m.runbook),
        ("defined in", f"{m.source_file}:{m.source_line}"),
    ):
        if value not in (None, ""):
            stdout.print(f"  {label:<11} {value}")
    versions = catalog.versions.history().get(m.id, [])
    stdout.print(
        f"  {'version':<11} {entry.version.version if entry.version else '-'}"
        + (
            ""
            if entry.pending == "unchanged"
            else f" (the file has an unrecorded {entry.pending} change)"
        )
    )
    for v in versions:
        fields = f": {', '.join(v.changed_fields)}" if v.changed_fields else ""
        stdout.print(
            f"    {v.version:<8} {v.change:<9} {v.recorded_at:%Y-%m-%d %H:%M} "
            f"{v.recorded_by}{fields}"
        )
    edges = lineage(catalog.metrics, m.id, upstream_map(definitions().resolve_asset_graph()))
    tree = Tree(f"lineage of {m.id}")
    nodes = {f"metric:{m.id}": tree}
    for e in sorted(edges, key=lambda e: e.depth):
        parent = nodes.get(e.node)
        if parent is None:
            continue
        label = e.upstream + (f".{e.upstream_column}" if e.upstream_column else "")
        if e.column:
            label += f" (for {e.column})"
        child = parent.add(label)
        nodes.setdefault(e.upstream, child)
    stdout.print(tree)
    stdout.print(f"  landing sources: {', '.join(sources(edges))}")


@app.command()
def versions(metric_id: Annotated[str, typer.Argument(help="Metric id.")]) -> None:
    """The recorded versions of one metric, with what changed."""
    catalog = _catalog()
    catalog.get(metric_id)
    table = Table("version", "change", "fields", "status", "recorded", "by")
    for v in catalog.versions.history().get(metric_id, []):
        table.add_row(
            v.version,
            v.change,
            ", ".join(v.changed_fields),
            v.status,
            f"{v.recorded_at:%Y-%m-%d %H:%M:%S}",
            v.recorded_by,
        )
    stdout.print(table)


@app.command("export")
def export_(
    fmt: Annotated[str, typer.Option("--format", "-f", help="yaml, json or csv.")] = "yaml",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File (default: stdout).")
    ] = None,
) -> None:
    """Export every definition (bulk export)."""
    text = _catalog().export_text(fmt)
    if output:
        output.write_text(text, encoding="utf-8")
        console.print(f"wrote {output}")
    else:
        sys.stdout.write(text)


@app.command("import")
def import_(
    source: Annotated[Path, typer.Argument(help="An export (yaml, json or csv).")],
    fmt: Annotated[
        str | None, typer.Option("--format", "-f", help="Default: from the file suffix.")
    ] = None,
) -> None:
    """Import definitions (bulk import): merged by id; nothing is written unless all validate."""
    if not source.is_file():
        raise ConfigError(f"no file {source}")
    fmt = fmt or {".yml": "yaml", ".yaml": "yaml", ".json": "json", ".csv": "csv"}.get(
        source.suffix.lower(), ""
    )
    written = _catalog().import_text(source.read_text(encoding="utf-8"), fmt, by=_who())
    for path in written:
        stdout.print(f"wrote {path}")


def _prompt_list(label: str, default: tuple[str, ...] | list[str]) -> list[str]:
    text = typer.prompt(
        label + " (comma-separated, '-' for none)", default=",".join(default) or "-"
    )
    return [] if text.strip() == "-" else [t.strip() for t in text.split(",") if t.strip()]


def _prompt_metric(current: dict[str, Any]) -> dict[str, Any]:
    """Ask for each field, offering the current value."""
    from opslake.metrics_catalog.definition import (
        AGGREGATIONS,
        CATEGORIES,
        METRIC_TYPES,
        STATUSES,
        UNITS,
    )

    def ask(
        label: str, key: str, choices: tuple[str, ...] | None = None, required: bool = True
    ) -> str | None:
        hint = f" [{'/'.join(choices)}]" if choices else ""
        value = typer.prompt(
            f"{label}{hint}", default=current.get(key) or ("" if required else "-")
        )
        value = value.strip()
        if not required and value in ("", "-"):
            return None
        if choices and value not in choices:
            raise ConfigError(f"{label} must be one of {', '.join(choices)}")
        return value

    names = current.get("names", {})
    out: dict[str, Any] = {"id": ask("id", "id")}
    out["names"] = {
        lang: typer.prompt(f"name ({lang})", default=names.get(lang) or "")
        for lang in ("zh-CN", "en", "zh-TW")
    }
    out["description"] = ask("description", "description")
    out["unit"] = ask("unit", "unit", UNITS)
    out["category"] = ask("category", "category", CATEGORIES)
    out["type"] = ask("type", "type", METRIC_TYPES)
    out["owner"] = ask("owner", "owner")
    out["status"] = ask("status", "status", STATUSES) if current.get("status") else "draft"
    if out["type"] == "simple":
        measure = current.get("measure", {})
        out["model"] = ask("model", "model")
        out["measure"] = {
            "agg": typer.prompt(
                f"aggregation [{'/'.join(AGGREGATIONS)}]", default=measure.get("agg", "avg")
            ),
            "expr": typer.prompt("expression", default=measure.get("expr", "value")),
        }
        out["filter"] = ask("filter", "filter", required=False)
    elif out["type"] == "ratio":
        out["numerator"] = ask("numerator metric", "numerator")
        out["denominator"] = ask("denominator metric", "denominator")
    elif out["type"] == "derived":
        pairs = _prompt_list(
            "inputs alias=metric", [f"{a}={i}" for a, i in current.get("inputs", {}).items()]
        )
        out["inputs"] = dict(p.split("=", 1) for p in pairs)
        out["expr"] = ask("expression over the aliases", "expr")
    else:
        out["base"] = ask("base metric", "base")
        out["window_days"] = int(
            typer.prompt("window (days)", default=str(current.get("window_days", 7)))
        )
    out["dimensions"] = _prompt_list("dimensions", current.get("dimensions", ["entity"]))
    out["grains"] = _prompt_list("grains", current.get("grains", ["1h", "1d"]))
    tags = _prompt_list("tags", current.get("tags", []))
    if tags:
        out["tags"] = tags
    return {k: v for k, v in out.items() if v is not None}


@app.command()
def add(family: Annotated[str, typer.Option(help="Family (file) to add it to.")]) -> None:
    """Add one metric by answering prompts (manual entry); validated before it is written."""
    catalog = _catalog()
    data = _prompt_metric({})
    version = catalog.upsert(data, family=family, by=_who())
    stdout.print(f"added {data['id']} to {family} as version {version.version}")


@app.command()
def edit(metric_id: Annotated[str, typer.Argument(help="Metric id.")]) -> None:
    """Edit one metric by answering prompts (current values offered); records a version."""
    catalog = _catalog()
    metric = catalog.get(metric_id)
    data = _prompt_metric(metric.to_dict())
    for key in ("thresholds", "slo", "runbook", "applies_to"):
        if key in metric.to_dict():
            data.setdefault(key, metric.to_dict()[key])
    if data["id"] != metric_id:
        raise ConfigError(
            "the id of a metric cannot change; add a new metric and deprecate this one"
        )
    version = catalog.upsert(data, family=metric.family, by=_who())
    stdout.print(f"{metric_id} is now version {version.version} ({version.change})")


def _set_status(metric_id: str, status: str) -> None:
    version = _catalog().set_status(metric_id, status, by=_who())
    stdout.print(f"{metric_id} is {status} (version {version.version})")


@app.command()
def publish(metric_id: Annotated[str, typer.Argument(help="Metric id.")]) -> None:
    """Publish a metric: consumers (API, screens) may rely on it."""
    _set_status(metric_id, "published")


@app.command()
def deprecate(metric_id: Annotated[str, typer.Argument(help="Metric id.")]) -> None:
    """Deprecate a metric: still computed, flagged for consumers to move off it."""
    _set_status(metric_id, "deprecated")


@app.command()
def query(
    metric_id: Annotated[str, typer.Argument(help="Metric id.")],
    from_: Annotated[
        str | None, typer.Option("--from", help="First day (default: the last computed day).")
    ] = None,
    to: Annotated[str | None, typer.Option(help="Last day (default: --from).")] = None,
    grain: Annotated[str, typer.Option(help="1h or 1d.")] = "1d",
    scope: Annotated[
        str,
        typer.Option(help="all, entity, business, department, region, object_kind or object_type."),
    ] = "all",
    where: Annotated[list[str] | None, typer.Option(help="column=value, repeatable.")] = None,
    live: Annotated[bool, typer.Option(help="Read the near-real-time hours.")] = False,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, csv or json.")] = "table",
) -> None:
    """A metric's values from gold (recorded in the usage log)."""
    import json
    from datetime import date

    import pyarrow.csv as pacsv

    from opslake.metrics_catalog.query import day_range
    from opslake.metrics_catalog.query import query as run_query

    catalog = _catalog()
    metric = catalog.get(metric_id)
    table_name = "metric_values_live" if live else "metric_values"
    days = catalog.lake.partitions("gold", table_name)
    if from_ is None and not days:
        raise ConfigError("no metric values yet; run `opslake materialize` first")
    try:
        first = date.fromisoformat(from_) if from_ else date.fromisoformat(max(days))
        last = date.fromisoformat(to) if to else first
    except ValueError:
        raise ConfigError("--from/--to take YYYY-MM-DD") from None
    filters = {}
    for term in where or []:
        column, sep, value = term.partition("=")
        if not sep:
            raise ConfigError(f"--where {term!r}: write column=value")
        filters[column.strip()] = value.strip()
    start, end = day_range(first, last)
    rows = run_query(
        catalog.lake,
        metric,
        start=start,
        end=end,
        grain=grain,
        scope=scope,
        where=filters,
        live=live,
        principal=("cli", _who()),
    )
    if fmt == "csv":
        sink = io.BytesIO()
        pacsv.write_csv(rows, sink)
        sys.stdout.write(sink.getvalue().decode())
    elif fmt == "json":
        sys.stdout.write(json.dumps(rows.to_pylist(), default=str, ensure_ascii=False) + "\n")
    elif fmt == "table":
        table = Table(
            *rows.column_names[:-3],
            "version",
            title=f"{metric.name('zh-CN')} / {metric.name('en')} ({metric.unit})",
        )
        for row in rows.to_pylist():
            cells = [row[c] for c in rows.column_names[:-4]] + [row["value"]]
            table.add_row(
                *(
                    "" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v)
                    for v in cells
                ),
                row["metric_version"],
            )
        stdout.print(table)
        stdout.print(f"{rows.num_rows} rows")
    else:
        raise ConfigError(f"unknown format {fmt!r}; use table, csv or json")


@app.command("map")
def map_() -> None:
    """The metric map: categories → families → metrics, with status, owner and version."""
    catalog = _catalog()
    tree = Tree(f"metrics catalog ({len(catalog.metrics.metrics)} metrics)")
    by_category: dict[str, dict[str, list]] = {}
    for m in catalog.metrics.metrics.values():
        by_category.setdefault(m.category, {}).setdefault(m.family, []).append(m)
    for category in sorted(by_category):
        families = by_category[category]
        branch = tree.add(f"[bold]{category}[/] ({sum(len(v) for v in families.values())})")
        for family in sorted(families):
            node = branch.add(f"{family}  [dim]{catalog.metrics.family_files[family]}[/]")
            for m in sorted(families[family], key=lambda m: m.id):
                latest = catalog.versions.latest(m.id)
                inputs = f" ← {', '.join(m.upstream_metrics())}" if m.upstream_metrics() else ""
                node.add(
                    f"{m.id}  {m.name('zh-CN')}  [dim]{m.type} · {m.status} · {m.owner} · "
                    f"v{latest.version if latest else '-'}{inputs}[/]"
                )
    stdout.print(tree)
