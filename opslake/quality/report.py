"""The data-quality check-up: one self-contained HTML page per day (数据质量体检报告).

The page is built from what the lake already holds:

- ``gold/quality_results`` (:mod:`opslake.quality.results`): scores per table, per source
  and overall for the day, the failed checks with their sample offending rows, and a trend of
  the daily score per table over the last ``days_back`` days;
- ``gold/metric_quality`` (the metrics catalog): the metrics with the lowest completeness;
- the landing manifests: per source, when the last batch arrived and how much came that day.

Everything is inline (CSS, SVG charts drawn here); the page loads nothing from anywhere, so it
can be mailed, archived or opened on an air-gapped workstation. Every value from the data is
escaped with :func:`html.escape`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from html import escape

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.quality.results import QUALITY_RESULTS, read_results

#: Weight of a check in a score, by severity (unknown severities weigh like a warning).
WEIGHTS = {"error": 3, "warning": 1}
#: Failed checks shown (errors first); the rest are counted.
MAX_FAILED = 200
#: Sample offending rows shown per failed check.
MAX_SAMPLE = 5
#: Metrics shown in the metric-quality table (lowest completeness first).
MAX_METRICS = 15
PALETTE = (
    "#2563eb",
    "#dc2626",
    "#16a34a",
    "#d97706",
    "#7c3aed",
    "#0891b2",
    "#db2777",
    "#65a30d",
    "#ea580c",
    "#475569",
)

REPORT = "quality_report"


def scores(results: pa.Table) -> dict:
    """Quality scores (0–100) of rows of ``QUALITY_RESULTS``.

    A score is the weighted share of passed checks: ``100 * Σ w·passed / Σ w`` where a check of
    severity ``error`` weighs 3 and one of severity ``warning`` weighs 1 (any other severity 1;
    a null ``passed`` counts as failed). Returns::

        {"overall": float | None,            # all rows; None when there are none
         "tables": {"<layer>.<table>": float, ...},
         "sources": {"<source>": float, ...}}  # rows without a source are not in "sources"

    Scores are not rounded. The rows are taken as given: pass one day's rows for that day's
    score.
    """
    overall = [0, 0]
    tables: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    sources: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    cols = results.select(["layer", "table", "severity", "passed", "source"]).to_pydict()
    for layer, table, severity, passed, source in zip(
        cols["layer"], cols["table"], cols["severity"], cols["passed"], cols["source"], strict=True
    ):
        weight = WEIGHTS.get(severity, 1)
        got = weight if passed else 0
        targets = [overall, tables[f"{layer}.{table}"]]
        if source is not None:
            targets.append(sources[source])
        for acc in targets:
            acc[0] += got
            acc[1] += weight

    def pct(acc: list[int]) -> float | None:
        return 100.0 * acc[0] / acc[1] if acc[1] else None

    return {
        "overall": pct(overall),
        "tables": {k: pct(v) for k, v in sorted(tables.items())},
        "sources": {k: pct(v) for k, v in sorted(sources.items())},
    }


# -- data --------------------------------------------------------------------------------


def _window(day: date, days_back: int) -> list[date]:
    return [day - timedelta(days=i) for i in range(max(1, days_back) - 1, -1, -1)]


def _rows_of_day(results: pa.Table, day: date) -> pa.Table:
    return results.filter(pc.equal(results["day"], pa.scalar(day, pa.date32())))


def _metric_quality(lake: Lake, day: date) -> list[dict] | None:
    """Rows of ``gold/metric_quality`` for ``day`` with their family; ``None`` when absent."""
    from opslake.metrics_catalog.completeness import METRIC_QUALITY_SCHEMA

    base = lake.table_path("gold", "metric_quality", {"dt": day.isoformat()})
    rows: list[dict] = []
    found = False
    for sub in lake.list_dirs(base):
        files = [f for f in lake.list_files(f"{base}/{sub}") if f.endswith(".parquet")]
        if not files:
            continue
        found = True
        family = sub.removeprefix("family=")
        table = ds.dataset(
            files, filesystem=lake.fs, format="parquet", schema=METRIC_QUALITY_SCHEMA
        ).to_table()
        rows.extend({**r, "family": family} for r in table.to_pylist())
    if not found:
        return None
    rows.sort(
        key=lambda r: (r["completeness"] is None, r["completeness"] or 0.0, r["metric_id"] or "")
    )
    return rows


def _freshness(lake: Lake, day: date) -> list[dict]:
    """Per landing source: batches and bytes of ``day`` and the last batch up to that day."""
    zone = LandingZone(lake)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
    out = []
    for source in zone.sources():
        batches = zone.batches(source, day.isoformat())
        last = max((b.received for b in batches), default=None)
        last_dt = day.isoformat() if batches else None
        if last is None:  # nothing that day: the newest earlier day tells how stale it is
            earlier = [d for d in zone.days(source) if d < day.isoformat()]
            for d in reversed(earlier):
                prior = zone.batches(source, d)
                if prior:
                    last, last_dt = max(b.received for b in prior), d
                    break
        out.append(
            {
                "source": source,
                "batches": len(batches),
                "bytes": sum(b.bytes for b in batches),
                "last": last,
                "last_dt": last_dt,
                "hours": None if last is None else (end - last).total_seconds() / 3600,
            }
        )
    return out


# -- HTML pieces -------------------------------------------------------------------------


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _num(n: int | None) -> str:
    return "–" if n is None else f"{n:,}"


def _fmt_score(score: float | None) -> str:
    return "–" if score is None else f"{score:.1f}"


def _grade(score: float | None) -> str:
    if score is None:
        return "none"
    return "good" if score >= 95 else "fair" if score >= 80 else "poor"


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _no_data(zh: str, en: str) -> str:
    return f'<p class="nodata">暂无数据 · No data — {_e(zh)} / {_e(en)}</p>'


def _h2(zh: str, en: str) -> str:
    return f'<h2>{_e(zh)} <span class="en">{_e(en)}</span></h2>'


def _gauge(score: float | None) -> str:
    """A ring gauge (inline SVG) with the score in the middle."""
    r, c = 52, 2 * 3.14159265 * 52
    filled = 0.0 if score is None else max(0.0, min(100.0, score)) / 100 * c
    return (
        f'<svg class="gauge g-{_grade(score)}" width="140" height="140" viewBox="0 0 140 140" '
        f'role="img" aria-label="overall score {_fmt_score(score)}">'
        f'<circle cx="70" cy="70" r="{r}" class="track"/>'
        f'<circle cx="70" cy="70" r="{r}" class="arc" stroke-dasharray="{filled:.1f} {c:.1f}" '
        f'transform="rotate(-90 70 70)"/>'
        f'<text x="70" y="78" text-anchor="middle" class="num">{_fmt_score(score)}</text>'
        f"</svg>"
    )


def _bar(score: float | None, width: int = 160) -> str:
    w = 0.0 if score is None else max(0.0, min(100.0, score)) / 100 * width
    return (
        f'<svg class="bar g-{_grade(score)}" width="{width}" height="8" '
        f'viewBox="0 0 {width} 8"><rect width="{width}" height="8" rx="4" class="track"/>'
        f'<rect width="{w:.1f}" height="8" rx="4" class="fill"/></svg>'
    )


def _card(title: str, score: float | None, detail: str) -> str:
    return (
        f'<div class="card g-{_grade(score)}"><div class="name" title="{_e(title)}">'
        f'{_e(title)}</div><div class="score">{_fmt_score(score)}</div>{_bar(score)}'
        f'<div class="detail">{detail}</div></div>'
    )


def _counts(rows: list[dict], key) -> dict[str, tuple[int, int]]:
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        k = key(r)
        if k is None:
            continue
        out[k][0] += 1
        out[k][1] += 0 if r["passed"] else 1
    return {k: (n, f) for k, (n, f) in out.items()}


def _sample_table(sample: str | None) -> str:
    if not sample:
        return ""
    try:
        rows = json.loads(sample)
    except ValueError:
        return f'<pre class="raw">{_e(sample[:2000])}</pre>'
    if not isinstance(rows, list) or not rows:
        return ""
    rows = rows[:MAX_SAMPLE]
    if not all(isinstance(r, dict) for r in rows):
        items = "".join(
            f"<li><code>{_e(json.dumps(r, ensure_ascii=False))}</code></li>" for r in rows
        )
        return f'<ul class="sample">{items}</ul>'
    columns: list[str] = []
    for r in rows:
        columns.extend(k for k in r if k not in columns)

    def cell(v: object) -> str:
        if v is None:
            return '<span class="null">null</span>'
        text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
        return _e(text if len(text) <= 200 else text[:200] + "…")

    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return (
        f'<details class="sample" open><summary>样本违规行 · Sample offending rows '
        f'({len(rows)})</summary><div class="scroll"><table class="mini"><thead><tr>{head}'
        f"</tr></thead><tbody>{body}</tbody></table></div></details>"
    )


def _failed_section(rows: list[dict]) -> str:
    failed = [r for r in rows if not r["passed"]]
    if not rows:
        return _no_data("当天没有质量检查结果", "no quality results for this day")
    if not failed:
        return '<p class="ok">全部检查通过 · All checks passed</p>'
    failed.sort(
        key=lambda r: (r["severity"] != "error", f"{r['layer']}.{r['table']}", r["check"] or "")
    )
    items = []
    for r in failed[:MAX_FAILED]:
        sev = "error" if r["severity"] == "error" else "warning"
        sev_label = "错误 error" if sev == "error" else "警告 warning"
        items.append(
            f'<tr class="sev-{sev}"><td><code>{_e(r["layer"])}.{_e(r["table"])}</code></td>'
            f'<td class="check"><b>{_e(r["check"])}</b>{_sample_table(r["sample"])}</td>'
            f'<td>{_e(r["kind"])}</td><td><span class="pill {sev}">{sev_label}</span></td>'
            f'<td><span class="obs">{_e(r["observed"])}</span> <span class="vs">vs</span> '
            f'<span class="thr">{_e(r["threshold"])}</span></td>'
            f'<td class="n">{_num(r["unexpected_rows"])} / {_num(r["rows"])}</td>'
            f"<td>{_e(r['source'] or '–')}</td></tr>"
        )
    more = (
        f'<p class="note">另有 {len(failed) - MAX_FAILED} 项未显示 · '
        f"{len(failed) - MAX_FAILED} more not shown</p>"
        if len(failed) > MAX_FAILED
        else ""
    )
    return (
        '<table class="grid failed"><thead><tr><th>表 Table</th><th>检查 Check</th>'
        "<th>类型 Kind</th><th>级别 Severity</th><th>观测值 vs 阈值 Observed vs threshold</th>"
        "<th>违规行 Unexpected / rows</th><th>来源 Source</th></tr></thead><tbody>"
        + "".join(items)
        + "</tbody></table>"
        + more
    )


def _trend_svg(days: list[date], series: dict[str, dict[date, float]]) -> str:
    """Line chart of the daily score per table; a day without results is a gap."""
    if not series:
        return _no_data("窗口内没有质量检查结果", "no quality results in the window")
    width, height = 1100, 300
    left, right, top, bottom = 44, 16, 14, 36
    pw, ph = width - left - right, height - top - bottom
    step = pw / max(1, len(days) - 1)
    index = {d: i for i, d in enumerate(days)}

    def x(d: date) -> float:
        return left + (index[d] * step if len(days) > 1 else pw / 2)

    def y(s: float) -> float:
        return top + ph * (1 - max(0.0, min(100.0, s)) / 100)

    parts = [
        (
            f'<svg class="trend" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="daily quality score per table">'
        )
    ]
    for v in (0, 25, 50, 75, 100):
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            f'class="gridline"/><text x="{left - 6}" y="{y(v) + 4:.1f}" '
            f'text-anchor="end" class="axis">{v}</text>'
        )
    label_every = max(1, -(-len(days) // 12))
    for i, d in enumerate(days):
        if (len(days) - 1 - i) % label_every == 0:  # the report's day always has a label
            parts.append(
                f'<text x="{x(d):.1f}" y="{height - 12}" text-anchor="middle" '
                f'class="axis">{d:%m-%d}</text>'
            )
    legend = []
    for n, (name, points) in enumerate(sorted(series.items())):
        color = PALETTE[n % len(PALETTE)]
        segment: list[str] = []
        segments: list[list[str]] = []
        for d in days:
            if d in points:
                segment.append(f"{x(d):.1f},{y(points[d]):.1f}")
            elif segment:
                segments.append(segment)
                segment = []
        if segment:
            segments.append(segment)
        parts.append(f'<g class="series" data-table="{_e(name)}" stroke="{color}" fill="{color}">')
        parts.extend(
            f'<polyline points="{" ".join(s)}" fill="none" stroke-width="2"/>'
            for s in segments
            if len(s) > 1
        )
        parts.extend(
            f'<circle class="pt" cx="{x(d):.1f}" cy="{y(points[d]):.1f}" r="3.5" '
            f'data-day="{d.isoformat()}"><title>{_e(name)} {d.isoformat()}: '
            f"{_fmt_score(points[d])}</title></circle>"
            for d in days
            if d in points
        )
        parts.append("</g>")
        legend.append(f'<span class="key"><i style="background:{color}"></i>{_e(name)}</span>')
    parts.append("</svg>")
    return f'<div class="scroll">{"".join(parts)}</div><div class="legend">{"".join(legend)}</div>'


def _metrics_section(rows: list[dict] | None) -> str:
    if rows is None:
        return _no_data(
            "指标目录尚未计算当天的指标质量 (gold/metric_quality)",
            "the metrics catalog has no metric quality for this day yet",
        )
    if not rows:
        return _no_data("当天没有指标", "no metrics for this day")
    body = []
    for r in rows[:MAX_METRICS]:
        comp = r["completeness"]
        score = None if comp is None else comp * 100
        comp_cell = (
            '<span class="null">n/a 事件类 event count</span>'
            if comp is None
            else f"{score:.1f}% {_bar(score, 100)}"
        )
        fresh = r["freshness_minutes"]
        last = r["last_bucket_start"]
        body.append(
            f'<tr class="g-{_grade(score)}"><td><code>{_e(r["metric_id"])}</code></td>'
            f"<td>{_e(r['family'])}</td><td>{_e(r['metric_version'])}</td>"
            f'<td class="n">{_num(r["rows"])}</td>'
            f'<td class="n">{_num(r["observed"])} / {_num(r["expected"])}</td>'
            f'<td class="comp">{comp_cell}</td>'
            f"<td>{_e(last.strftime('%Y-%m-%d %H:%M') if last else '–')}</td>"
            f'<td class="n">{_e("–" if fresh is None else f"{fresh:.0f}")}</td></tr>'
        )
    note = (
        f'<p class="note">共 {len(rows)} 个指标, 显示完整度最低的 {MAX_METRICS} 个 · '
        f"{len(rows)} metrics, the {MAX_METRICS} with the lowest completeness shown</p>"
        if len(rows) > MAX_METRICS
        else ""
    )
    return (
        '<table class="grid"><thead><tr><th>指标 Metric</th><th>族 Family</th>'
        "<th>版本 Version</th><th>行数 Rows</th><th>已观测 / 应有 Observed / expected</th>"
        "<th>完整度 Completeness</th><th>最新时段 Last bucket (UTC)</th>"
        "<th>滞后 Freshness (min)</th></tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table>"
        + note
    )


def _freshness_section(rows: list[dict], day: date) -> str:
    if not rows:
        return _no_data("落地区没有任何数据源", "no source has landed any batch")
    body = []
    for r in rows:
        hours = r["hours"]
        if r["batches"] == 0:
            grade, status = "poor", "当天无数据 · none that day"
        elif hours is not None and hours <= 1:
            grade, status = "good", "及时 · on time"
        elif hours is not None and hours <= 6:
            grade, status = "fair", "滞后 · lagging"
        else:
            grade, status = "poor", "陈旧 · stale"
        if hours is None:
            gap = "–"
        elif hours < 0:
            gap = f"日终后 {-hours:.1f} h after end of day"
        else:
            gap = f"{hours:.1f}"
        last = r["last"]
        last_text = last.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if last else "–"
        if last and r["last_dt"] != day.isoformat():
            last_text += f" (dt={r['last_dt']})"
        body.append(
            f'<tr class="g-{grade}"><td><code>{_e(r["source"])}</code></td>'
            f'<td>{_e(last_text)}</td><td class="n">{_e(gap)}</td>'
            f'<td class="n">{r["batches"]}</td>'
            f'<td class="n" title="{r["bytes"]} bytes">{_e(_bytes(r["bytes"]))}</td>'
            f'<td><span class="pill {grade}">{_e(status)}</span></td></tr>'
        )
    return (
        '<table class="grid fresh"><thead><tr><th>数据源 Source</th>'
        "<th>最后一批接收时间 Last batch received (UTC)</th>"
        "<th>距日终 Hours before end of day</th><th>批次 Batches</th><th>字节 Bytes</th>"
        "<th>状态 Status</th></tr></thead><tbody>" + "".join(body) + "</tbody></table>"
    )


CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f1f5f9;color:#0f172a;font:14px/1.5 "Noto Sans CJK SC",
"Source Han Sans SC","PingFang SC","Microsoft YaHei","WenQuanYi Micro Hei",system-ui,
"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
header{background:linear-gradient(120deg,#0f172a,#1e3a8a);color:#fff;padding:24px 32px}
header h1{margin:0;font-size:26px}header h1 .en{font-weight:400;opacity:.8;font-size:20px}
header .meta{opacity:.8;margin-top:4px}
main{max-width:1200px;margin:0 auto;padding:16px 24px 48px}
section{background:#fff;border-radius:10px;box-shadow:0 1px 3px rgba(15,23,42,.12);
padding:16px 20px;margin:16px 0}
h2{font-size:18px;margin:0 0 12px}h2 .en,h3 .en{color:#64748b;font-weight:400}
h3{font-size:15px;margin:16px 0 8px}
.overview{display:flex;gap:24px;align-items:center;flex-wrap:wrap}
.overview .summary{font-size:15px}.overview .summary b{font-size:20px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:12px}
.card{border:1px solid #e2e8f0;border-left:5px solid #94a3b8;border-radius:8px;padding:10px 12px}
.card .name{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px;
overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.card .score{font-size:26px;font-weight:700}.card .detail{color:#64748b;font-size:12px}
.card.g-good{border-left-color:#16a34a}.card.g-fair{border-left-color:#d97706}
.card.g-poor{border-left-color:#dc2626}
.track{fill:#e2e8f0}.gauge .track{fill:none;stroke:#e2e8f0;stroke-width:14}
.gauge .arc{fill:none;stroke-width:14;stroke-linecap:round}
.gauge .num{font-size:30px;font-weight:700;fill:#0f172a}
.g-good .arc{stroke:#16a34a}.g-fair .arc{stroke:#d97706}.g-poor .arc{stroke:#dc2626}
.g-none .arc{stroke:#94a3b8}
.bar .fill{fill:#94a3b8}.g-good .bar .fill,.bar.g-good .fill{fill:#16a34a}
.bar.g-fair .fill{fill:#d97706}.bar.g-poor .fill{fill:#dc2626}
table.grid{border-collapse:collapse;width:100%;font-size:13px}
table.grid th{background:#f8fafc;text-align:left;font-weight:600;color:#334155;
border-bottom:2px solid #e2e8f0;padding:6px 8px;vertical-align:bottom}
table.grid td{border-bottom:1px solid #e2e8f0;padding:6px 8px;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.failed>tbody>tr.sev-error>td:first-child{box-shadow:inset 4px 0 #dc2626}
table.failed>tbody>tr.sev-warning>td:first-child{box-shadow:inset 4px 0 #d97706}
.pill{display:inline-block;border-radius:999px;padding:1px 8px;font-size:12px;
white-space:nowrap;background:#e2e8f0}
.pill.error,.pill.poor{background:#fee2e2;color:#991b1b}
.pill.warning,.pill.fair{background:#fef3c7;color:#92400e}.pill.good{background:#dcfce7;color:#166534}
.obs{font-weight:600;color:#b91c1c}.thr{color:#334155}.vs{color:#94a3b8;font-size:11px}
details.sample{margin-top:6px}details.sample summary{color:#64748b;font-size:12px;cursor:pointer}
table.mini{border-collapse:collapse;font-size:12px;margin-top:4px}
table.mini th,table.mini td{border:1px solid #e2e8f0;padding:2px 6px;text-align:left;
font-family:ui-monospace,"DejaVu Sans Mono",monospace;white-space:nowrap}
table.mini th{background:#f8fafc}
.null{color:#94a3b8;font-style:italic}
.scroll{overflow-x:auto;max-width:100%}
td.check{max-width:520px}
td.comp svg{vertical-align:middle;margin-left:6px}
.trend .gridline{stroke:#e2e8f0}.trend .axis{font-size:11px;fill:#64748b}
.legend{display:flex;flex-wrap:wrap;gap:6px 16px;margin-top:8px;font-size:12px}
.legend i{display:inline-block;width:12px;height:12px;border-radius:3px;margin-right:5px;
vertical-align:-1px}
.nodata{color:#64748b;background:#f8fafc;border:1px dashed #cbd5e1;border-radius:8px;
padding:14px;text-align:center;margin:0}
.ok{color:#166534;background:#f0fdf4;border-radius:8px;padding:12px;margin:0}
.note{color:#64748b;font-size:12px}
footer{color:#94a3b8;font-size:12px;text-align:center;padding:16px}
""".replace("\n", "")


def render_report(lake: Lake, day: date, *, days_back: int = 30) -> str:
    """The day's check-up as one self-contained HTML page (no scripts, styles or fonts loaded
    from anywhere).

    Sections: overall score and cards per table and per source (:func:`scores`); failed checks
    with up to five sample offending rows each; the daily score per table over the last
    ``days_back`` days (an SVG line chart, gaps where a day has no results); the metrics with
    the lowest completeness from ``gold/metric_quality``; per landing source, the last batch
    received and the day's batches and bytes. A section without data says so.
    """
    window = _window(day, days_back)
    # The trend needs only what scores() reads; the day itself needs every column.
    history = lake.read_table(
        "gold",
        "quality_results",
        schema=QUALITY_RESULTS,
        dts=[d.isoformat() for d in window],
        columns=["day", "layer", "table", "severity", "passed", "source"],
    ).combine_chunks()
    today = _rows_of_day(read_results(lake, [day.isoformat()]), day)
    today_rows = today.to_pylist()
    score = scores(today)

    table_counts = _counts(today_rows, lambda r: f"{r['layer']}.{r['table']}")
    source_counts = _counts(today_rows, lambda r: r["source"])

    def detail(counts: tuple[int, int]) -> str:
        n, f = counts
        return f"{n} 项检查 checks · {f} 项失败 failed"

    series: dict[str, dict[date, float]] = defaultdict(dict)
    if history.num_rows:
        for d in window:
            rows = _rows_of_day(history, d)
            if rows.num_rows:
                for name, s in scores(rows)["tables"].items():
                    if s is not None:
                        series[name][d] = s

    total = len(today_rows)
    failed = sum(1 for r in today_rows if not r["passed"])
    errors = sum(1 for r in today_rows if not r["passed"] and r["severity"] == "error")
    runs = sorted({r["run_id"] for r in today_rows if r["run_id"]})
    last_at = max((r["at"] for r in today_rows if r["at"]), default=None)

    if total:
        summary = (
            f'<div class="summary"><div><b>{total}</b> 项检查 checks · '
            f"<b>{failed}</b> 项失败 failed (<b>{errors}</b> 错误 errors, "
            f"<b>{failed - errors}</b> 警告 warnings)</div>"
            f"<div>{len(table_counts)} 张表 tables · {len(source_counts)} 个来源 sources"
            f" · {len(runs)} 次运行 run(s)</div>"
            f'<div class="note">评分 = 通过检查的加权占比 (错误 ×3, 警告 ×1) · '
            f"Score = weighted share of passed checks (error ×3, warning ×1)"
            + (
                f" · 最近检查 last check {last_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
                if last_at
                else ""
            )
            + "</div></div>"
        )
        table_cards = (
            '<div class="cards">'
            + "".join(
                _card(name, s, detail(table_counts[name])) for name, s in score["tables"].items()
            )
            + "</div>"
        )
        source_cards = (
            (
                '<div class="cards">'
                + "".join(
                    _card(name, s, detail(source_counts[name]))
                    for name, s in score["sources"].items()
                )
                + "</div>"
            )
            if score["sources"]
            else _no_data("检查结果未标注来源", "no check names a source")
        )
    else:
        summary = (
            '<div class="summary">'
            + _no_data("当天没有质量检查结果", "no quality results for this day")
            + "</div>"
        )
        table_cards = source_cards = ""

    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        (
            f'<header><h1>数据质量体检报告 <span class="en">Data quality check-up</span></h1>'
            f'<div class="meta">{day.isoformat()} · 生成于 generated {generated}</div></header>'
            "<main>"
        ),
        "<section>"
        + _h2("总体评分", "Overall score")
        + f'<div class="overview">{_gauge(score["overall"])}{summary}</div>'
        + (
            (
                '<h3>按表 <span class="en">By table</span></h3>'
                + table_cards
                + '<h3>按来源 <span class="en">By source</span></h3>'
                + source_cards
            )
            if total
            else ""
        )
        + "</section>",
        "<section>"
        + _h2("失败的检查", "Failed checks")
        + _failed_section(today_rows)
        + "</section>",
        "<section>"
        + _h2(
            f"{len(window)} 天趋势 · 每表每日评分",
            f"{len(window)}-day trend · daily score per table",
        )
        + _trend_svg(window, dict(series))
        + "</section>",
        "<section>"
        + _h2("指标质量 · 完整度最低", "Metric quality · lowest completeness")
        + _metrics_section(_metric_quality(lake, day))
        + "</section>",
        "<section>"
        + _h2("数据源新鲜度", "Source freshness (landing)")
        + _freshness_section(_freshness(lake, day), day)
        + "</section>",
        (
            "</main><footer>OpsLake · gold/quality_results · gold/metric_quality · "
            "landing/_manifest</footer>"
        ),
    ]
    return (
        '<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>数据质量体检报告 / Data quality check-up · {day.isoformat()}</title>"
        f"<style>{CSS}</style></head><body>" + "".join(body) + "</body></html>\n"
    )


def report_path(lake: Lake, day: date) -> str:
    """Where the day's report lives in the lake."""
    return lake.path("gold", REPORT, f"dt={day.isoformat()}", "report.html")


def write_report(lake: Lake, day: date) -> str:
    """Render the day's report and write it atomically into the lake; returns its path."""
    path = report_path(lake, day)
    lake.put_atomic(path, [render_report(lake, day).encode("utf-8")])
    return path


SCORES_SCHEMA = pa.schema(
    [
        ("day", pa.date32()),
        ("subject_kind", pa.string()),  # overall | table | source | metric
        ("subject", pa.string()),
        ("score", pa.float64()),
    ]
)


def score_table(lake: Lake, day: date) -> pa.Table:
    """The day's quality scores (0–100): overall, per table, per source, and per catalog
    metric (its completeness, or 100 when it is fresh and has no expected population)."""
    results = _rows_of_day(
        read_results(lake, [day.isoformat()])
        if lake.partitions("gold", "quality_results")
        else QUALITY_RESULTS.empty_table(),
        day,
    )
    got = scores(results)
    rows = [{"day": day, "subject_kind": "overall", "subject": "all", "score": got["overall"]}]
    rows += [
        {"day": day, "subject_kind": "table", "subject": k, "score": v}
        for k, v in sorted(got["tables"].items())
    ]
    rows += [
        {"day": day, "subject_kind": "source", "subject": k, "score": v}
        for k, v in sorted(got["sources"].items())
    ]
    for m in _metric_quality(lake, day) or []:
        completeness = m.get("completeness")
        score = (
            100 * completeness if completeness is not None else (100.0 if m.get("rows") else 0.0)
        )
        rows.append(
            {
                "day": day,
                "subject_kind": "metric",
                "subject": m["metric_id"],
                "score": min(score, 100.0),
            }
        )
    return pa.Table.from_pylist(rows, schema=SCORES_SCHEMA)
