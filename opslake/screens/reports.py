"""Periodic service reports (S5.3j, S5.4b): screens rendered to PDF and PNG, kept, e-mailed.

A report is a handful of the large screens (see :data:`KINDS`) for one period: a day
(``2026-11-25``), an ISO week (``2026-W48``) or a month (``2026-11``); by default the period
that holds the newest data. Headless Chromium (Debian's, driven by Playwright) logs in to
Superset, opens each screen, waits until every chart has drawn, and saves a full-page PNG and a
one-page PDF of it; the PDFs are merged behind a cover page (title, period, data coverage,
generated at, what the numbers cover) into one PDF.

The dashboards have no native time filters, so the period is applied where the data is
fetched: every ``/api/v1/chart/data`` request the page makes is given a ``TEMPORAL_RANGE``
filter on the period column of its dataset (:data:`PERIOD_COLUMNS`). Datasets without one (the
asset ledger, forecasts, the metrics catalog) show their newest snapshot, and the cover says so.

Reports are kept in the lake under ``reports/<kind>/<period>/`` (``report.pdf``, one PNG per
screen, ``manifest.json`` written last, so a listed report is complete) and sent as an
e-mail attachment to the receivers named in the ``reports`` section of
``config/alerting/notify.yaml`` (SMTP settings from the environment, as the alert e-mails).
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from opslake.errors import ConfigError, NotFoundError, ReportError
from opslake.lake.storage import Lake
from opslake.screens.server import SupersetConfig
from opslake.settings import Settings

#: Where reports live in the lake: ``reports/<kind>/<period>/``.
LAKE_DIR = "reports"
MANIFEST = "manifest.json"
PDF_NAME = "report.pdf"
REPORT_ROLE = "OpsLake 报表用户"
#: A chart-data request is rewritten only for these datasets: their column that dates a row.
#: Local time for timestamps (the datasets convert), the UTC day partition for ``day``.
PERIOD_COLUMNS = {
    "service_levels": "day",
    "convergence": "day",
    "quality_scores": "day",
    "quality_checks": "day",
    "metric_quality": "day",
    "incidents": "started_at",
    "alerts": "starts_at",
    "metric_values": "bucket_start",
    "entity_health": "hour",
    "business_health": "hour",
    "anomalies": "ts",
}
#: Tables whose newest day is "the newest data" (the daily pipeline's UTC day partitions).
NEWEST_DAY_SQL = (
    "SELECT max(day) FROM service_levels",
    "SELECT max(day) FROM quality_scores",
    "SELECT max(CAST(dt AS DATE)) FROM incident_stats",
)


@dataclass(frozen=True)
class ReportKind:
    """One kind of periodic report: its title and the screens (dashboard slugs) it shows."""

    name: str
    title: str
    screens: tuple[str, ...]


#: SLA attainment, changes (服务质量); incidents and causes (事件与告警); assets and contracts
#: expiring (资源台账); data quality (数据质量). Longer periods add the overview screens.
KINDS: dict[str, ReportKind] = {
    k.name: k
    for k in (
        ReportKind("daily", "运维服务日报", ("service", "events", "quality")),
        ReportKind(
            "weekly", "运维服务周报", ("leadership", "service", "events", "assets", "quality")
        ),
        ReportKind(
            "monthly",
            "运维服务月报",
            ("leadership", "service", "events", "applications", "assets", "quality", "insights"),
        ),
    )
}


def report_kind(name: str) -> ReportKind:
    """The report kind called ``name``."""
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"no report kind {name!r}; use one of {', '.join(KINDS)}") from None


@dataclass(frozen=True)
class Period:
    """The days a report covers: ``start`` inclusive, ``end`` exclusive."""

    kind: str
    label: str
    start: date
    end: date

    @classmethod
    def containing(cls, kind: str, day: date) -> Period:
        """The day, ISO week or month that holds ``day``."""
        report_kind(kind)
        if kind == "daily":
            return cls(kind, day.isoformat(), day, day + timedelta(days=1))
        if kind == "weekly":
            year, week, weekday = day.isocalendar()
            start = day - timedelta(days=weekday - 1)
            return cls(kind, f"{year}-W{week:02d}", start, start + timedelta(days=7))
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
        return cls(kind, f"{start:%Y-%m}", start, end)

    @classmethod
    def parse(cls, kind: str, text: str) -> Period:
        """``2026-11-25`` (daily), ``2026-W48`` (weekly) or ``2026-11`` (monthly)."""
        report_kind(kind)
        forms = {
            "daily": (r"\d{4}-\d{2}-\d{2}", "YYYY-MM-DD"),
            "weekly": (r"(\d{4})-W(\d{2})", "YYYY-Www, e.g. 2026-W10"),
            "monthly": (r"\d{4}-\d{2}", "YYYY-MM"),
        }
        pattern, example = forms[kind]
        match = re.fullmatch(pattern, text.strip())
        try:
            if not match:
                raise ValueError(text)
            if kind == "daily":
                day = date.fromisoformat(text.strip())
            elif kind == "weekly":
                day = date.fromisocalendar(int(match[1]), int(match[2]), 1)
            else:
                day = date.fromisoformat(text.strip() + "-01")
        except ValueError:
            raise ConfigError(f"period {text!r} is not a {kind} period; write {example}") from None
        return cls.containing(kind, day)

    @property
    def last_day(self) -> date:
        """The period's last day."""
        return self.end - timedelta(days=1)

    def time_range(self) -> str:
        """The period as Superset's ``TEMPORAL_RANGE`` value (end exclusive)."""
        return f"{self.start.isoformat()}T00:00:00 : {self.end.isoformat()}T00:00:00"

    def zh(self) -> str:
        """How the cover names the period."""
        days = f"{self.start:%Y年%m月%d日}至{self.last_day:%Y年%m月%d日}"
        if self.kind == "daily":
            return f"{self.start:%Y年%m月%d日}"
        if self.kind == "weekly":
            year, week, _ = self.start.isocalendar()
            return f"{year}年第{week}周（{days}）"
        return f"{self.start:%Y年%m月}（{days}）"


@dataclass
class Rendered:
    """A rendered report on local disk, before it is kept in the lake."""

    kind: str
    period: Period
    pdf: Path
    pngs: dict[str, Path]
    titles: dict[str, str]
    pages: int
    generated_at: datetime
    data_through: date | None
    #: Per screen, the charts that drew "no data" or an error for the period.
    empty_charts: dict[str, list[str]] = field(default_factory=dict)


def newest_day(warehouse: Path) -> date:
    """The newest day with data in the serving warehouse."""
    import duckdb

    from opslake.lake.warehouse import open_read_only

    con = open_read_only(warehouse)
    days = []
    try:
        for sql in NEWEST_DAY_SQL:
            try:
                value = con.execute(sql).fetchone()[0]
            except duckdb.CatalogException:  # that table is not built yet
                value = None
            if value is not None:
                days.append(value)
    finally:
        con.close()
    if not days:
        raise NotFoundError(
            f"the warehouse {warehouse} has no service levels, quality scores "
            "or incident statistics yet; run `opslake materialize` and "
            "`opslake warehouse build`"
        )
    return max(days)


def data_days(warehouse: Path, period: Period) -> tuple[date | None, date | None]:
    """First and last day of the period with service-level data (None: none)."""
    import duckdb

    from opslake.lake.warehouse import open_read_only

    con = open_read_only(warehouse)
    try:
        first, last = con.execute(
            "SELECT min(day), max(day) FROM service_levels WHERE day >= ? AND day < ?",
            [period.start, period.end],
        ).fetchone()
    except duckdb.CatalogException:  # no service levels yet
        return None, None
    finally:
        con.close()
    return first, last


def period_filter(body: bytes, period: Period, columns: Mapping[int, str]) -> bytes | None:
    """A chart-data request body with the period applied; None when it needs no change.

    ``columns`` maps Superset dataset ids to their period column. Any ``TEMPORAL_RANGE``
    filter on that column is replaced, and the query's ``time_range`` set to the period.
    """
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    column = columns.get((doc.get("datasource") or {}).get("id"))
    if column is None or not isinstance(doc.get("queries"), list):
        return None
    for query in doc["queries"]:
        filters = [
            f
            for f in query.get("filters") or []
            if not (f.get("op") == "TEMPORAL_RANGE" and f.get("col") == column)
        ]
        filters.append({"col": column, "op": "TEMPORAL_RANGE", "val": period.time_range()})
        query["filters"] = filters
        # Superset overwrites every TEMPORAL_RANGE filter's value with the query's time_range.
        query["time_range"] = period.time_range()
    return json.dumps(doc).encode()


def _cover_html(
    kind: ReportKind,
    period: Period,
    titles: list[str],
    generated: datetime,
    coverage: tuple[date | None, date | None],
    newest: date | None,
    timezone: str,
) -> str:
    first, last = coverage
    if first is None:
        data = "本周期没有服务水平数据；下列页面中按周期过滤的图表为空。"
    else:
        whole = first == period.start and last == period.last_day
        data = f"{first:%Y-%m-%d} 至 {last:%Y-%m-%d}" + (
            "（整个周期）" if whole else "（周期内只有这些天的数据：周期未结束或数据不全）"
        )
    rows = "".join(
        f"<li><span>{html.escape(t)}</span><b>第 {i + 2} 页</b></li>" for i, t in enumerate(titles)
    )
    scoped = "服务水平、事件、告警、告警收敛、数据质量、目录指标值、健康分、异常"
    return f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><style>
body {{ margin: 0; font-family: "WenQuanYi Zen Hei", "Noto Sans CJK SC", sans-serif;
       background: #0b1f3a; color: #f3f6fb; }}
main {{ padding: 90px 120px; }}
h1 {{ font-size: 72px; margin: 0 0 16px; letter-spacing: 4px; }}
h2 {{ font-size: 36px; font-weight: normal; margin: 0 0 48px; color: #9cc3ff; }}
dl {{ display: grid; grid-template-columns: 200px 1fr; gap: 14px 24px; font-size: 26px; }}
dt {{ color: #9cc3ff; }} dd {{ margin: 0; }}
ol {{ font-size: 26px; columns: 2; margin-top: 36px; }}
li span {{ display: inline-block; min-width: 320px; }}
p {{ font-size: 20px; color: #c6d3e6; max-width: 1600px; line-height: 1.6; }}
</style></head><body><main>
<h1>OpsLake {html.escape(kind.title)}</h1>
<h2>报告周期：{html.escape(period.zh())} · {html.escape(period.label)}</h2>
<dl>
<dt>周期内数据</dt><dd>{html.escape(data)}</dd>
<dt>数据截至</dt><dd>{newest.isoformat() if newest else "—"}（日分区）</dd>
<dt>生成时间</dt><dd>{generated:%Y-%m-%d %H:%M}（{html.escape(timezone)}）</dd>
</dl>
<ol>{rows}</ol>
<p>数据口径：{scoped}按报告周期过滤（时间按本地时区，日数据按日分区）。
资源台账（配置项、保修与维保到期）、容量与预测、指标目录不随周期变化，显示生成时的最新快照；
标题带“最新”的图表显示数据中最新的一小时或一天（较早周期的报告中为空）。</p>
</main></body></html>"""


def _dashboards(client: Any) -> dict[str, dict[str, Any]]:
    return {d["slug"]: d for d in client.list_all("dashboard", ["id", "slug", "dashboard_title"])}


def _period_columns(client: Any) -> dict[int, str]:
    """Superset dataset id → period column, for the datasets in :data:`PERIOD_COLUMNS` and
    their copies in each language."""
    from opslake.screens.i18n import SUFFIX
    from opslake.screens.model import object_uuid

    by_uuid = {
        object_uuid("dataset", key + suffix): column
        for key, column in PERIOD_COLUMNS.items()
        for suffix in SUFFIX.values()
    }
    return {
        d["id"]: by_uuid[str(d["uuid"])]
        for d in client.list_all("dataset", ["id", "uuid"])
        if str(d["uuid"]) in by_uuid
    }


def render(
    config: SupersetConfig,
    kind: str,
    period: Period,
    out: Path,
    *,
    username: str | None = None,
    password: str | None = None,
    say: Callable[[str], None] = print,
) -> Rendered:
    """Render one report from a running Superset into ``out`` (PDF, PNG per screen)."""
    from playwright.sync_api import sync_playwright
    from pypdf import PdfReader, PdfWriter

    from opslake.screens import browser, service

    spec = report_kind(kind)
    out.mkdir(parents=True, exist_ok=True)
    with service.admin_client(config) as client:
        dashboards = _dashboards(client)
        columns = _period_columns(client)
    missing = [s for s in spec.screens if s not in dashboards]
    if missing:
        raise ReportError(
            f"Superset has no screen {', '.join(missing)}; import the screens "
            "with `opslake screens start`"
        )
    titles = {s: dashboards[s]["dashboard_title"] for s in spec.screens}
    tz = ZoneInfo(config.timezone)
    generated = datetime.now(UTC).astimezone(tz).replace(microsecond=0)
    newest = newest_day(config.warehouse)
    coverage = data_days(config.warehouse, period)
    rewritten = [0]

    def scope(route: Any) -> None:
        body = period_filter(route.request.post_data_buffer or b"", period, columns)
        if body is None:
            route.continue_()
            return
        rewritten[0] += 1
        route.continue_(post_data=body)

    pngs: dict[str, Path] = {}
    empty: dict[str, list[str]] = {}
    writer = PdfWriter()
    with sync_playwright() as pw:
        chromium = browser.launch(pw, config.browser)
        try:
            context = chromium.new_context(
                viewport=browser.VIEWPORT, locale="zh-CN", timezone_id=config.timezone
            )
            page = context.new_page()
            page.set_content(
                _cover_html(
                    spec,
                    period,
                    list(titles.values()),
                    generated,
                    coverage,
                    newest,
                    config.timezone,
                )
            )
            writer.append(PdfReader(io.BytesIO(_pdf(page))))
            browser.log_in(
                page, config, username or config.admin_username, password or config.password()
            )
            context.route(re.compile(r".*/api/v1/chart/data(\?.*)?$"), scope)
            at_once = min(browser.AT_ONCE, len(spec.screens))
            pages = [page, *(context.new_page() for _ in range(at_once - 1))]
            started = time.perf_counter()
            for slug, shown, failed in browser.open_dashboards(
                pages, config, spec.screens, filter_bar=False
            ):
                if failed:
                    empty[slug] = list(failed)
                pngs[slug] = out / f"{slug}.png"
                shown.screenshot(path=str(pngs[slug]), full_page=True)
                writer.append(PdfReader(io.BytesIO(_pdf(shown))), outline_item=titles[slug])
                say(
                    f"{spec.title} {period.label}: {titles[slug]} drawn "
                    f"{time.perf_counter() - started:.1f}s after the first was opened"
                    + (f" (no data: {', '.join(failed)})" if failed else "")
                )
        finally:
            chromium.close()
    if rewritten[0] == 0:
        raise ReportError(
            "no chart data request could be limited to the period; the "
            "screens' datasets changed: update PERIOD_COLUMNS in "
            "opslake/screens/reports.py"
        )
    pdf = out / PDF_NAME
    writer.add_metadata(
        {
            "/Title": f"OpsLake {spec.title} {period.label}",
            "/Author": "OpsLake",
            "/Subject": period.zh(),
        }
    )
    with open(pdf, "wb") as handle:
        writer.write(handle)
    return Rendered(kind, period, pdf, pngs, titles, len(writer.pages), generated, newest, empty)


def _pdf(page: Any) -> bytes:
    """The page as one PDF page of its own size (the wall layout, not paper)."""
    size = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
    )
    width, height = max(size[0], 1920), max(size[1], 1080)
    # Screen, not print, styles: the page prints exactly as the wall shows it.
    page.emulate_media(media="screen")
    return page.pdf(
        width=f"{width}px",
        height=f"{height + 2}px",
        print_background=True,
        page_ranges="1",
        margin={"top": "0", "right": "0", "bottom": "0", "left": "0"},
    )


def report_dir(lake: Lake, kind: str, period: str) -> str:
    """Where one report lives in the lake."""
    return lake.path(LAKE_DIR, kind, period)


def keep(lake: Lake, rendered: Rendered, emailed: Iterable[str] = ()) -> dict[str, Any]:
    """Write the PDF, the PNGs and then the manifest into the lake; the manifest row."""
    where = report_dir(lake, rendered.kind, rendered.period.label)
    data = rendered.pdf.read_bytes()
    pdf_path = f"{where}/{PDF_NAME}"
    lake.put_atomic(pdf_path, [data])
    for slug, png in rendered.pngs.items():
        lake.put_atomic(f"{where}/{slug}.png", [png.read_bytes()])
    row = {
        "kind": rendered.kind,
        "period": rendered.period.label,
        "start": rendered.period.start.isoformat(),
        "end": rendered.period.last_day.isoformat(),
        "pages": rendered.pages,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "generated_at": rendered.generated_at.isoformat(),
        "data_through": rendered.data_through.isoformat() if rendered.data_through else None,
        "path": pdf_path,
        "screens": rendered.titles,
        "images": {slug: f"{where}/{slug}.png" for slug in rendered.pngs},
        "empty_charts": rendered.empty_charts,
        "emailed_to": sorted(emailed),
    }
    write_manifest(lake, row)
    return row


def write_manifest(lake: Lake, row: Mapping[str, Any]) -> None:
    """Write (or replace) a report's manifest, which makes it listed."""
    where = report_dir(lake, row["kind"], row["period"])
    lake.put_atomic(
        f"{where}/{MANIFEST}", [json.dumps(dict(row), ensure_ascii=False, indent=1).encode()]
    )


def list_reports(lake: Lake, kind: str | None = None) -> list[dict[str, Any]]:
    """Manifest rows of every kept report (newest period first within a kind)."""
    rows = []
    for k in [kind] if kind else lake.list_dirs(lake.path(LAKE_DIR)):
        for period in sorted(lake.list_dirs(lake.path(LAKE_DIR, k)), reverse=True):
            manifest = lake.path(LAKE_DIR, k, period, MANIFEST)
            if lake.exists(manifest):
                rows.append(json.loads(lake.read_bytes(manifest)))
    return rows


# -- e-mail ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    """An e-mail receiver of ``notify.yaml`` with the addresses a report goes to."""

    receiver: str
    settings: dict[str, str]
    to: tuple[str, ...]


def recipients(
    settings: Settings, kind: str, environ: Mapping[str, str] | None = None
) -> tuple[list[Recipient], list[str]]:
    """Who gets ``kind`` reports (``reports`` in notify.yaml); and skipped receivers, why."""
    from opslake.alerting.dispatch import NOTIFY_FILE, NotifyConfig
    from opslake.alerting.rules import read_yaml

    path = settings.alerting_dir / NOTIFY_FILE
    routes = read_yaml(path).get("reports") or {}
    if not isinstance(routes, Mapping):
        raise ConfigError(f"{path}: reports must map a report kind to its receivers")
    unknown = sorted(set(routes) - set(KINDS))
    if unknown:
        raise ConfigError(f"{path}: reports: unknown kinds {unknown}; use {', '.join(KINDS)}")
    route = routes.get(kind) or {}
    if not route:
        return [], []
    config = NotifyConfig.load(settings.alerting_dir, environ)
    found, skipped = [], []
    for name in route.get("receivers") or []:
        receiver = config.receivers.get(name)
        if receiver is None:
            raise ConfigError(
                f"{path}: reports.{kind}: receiver {name!r} is not defined under receivers"
            )
        if receiver.channel != "email":
            raise ConfigError(
                f"{path}: reports.{kind}: {name!r} is a {receiver.channel} "
                "receiver; only e-mail receivers can carry the PDF"
            )
        if receiver.missing or "host" not in receiver.settings:
            skipped.append(f"{name}: unconfigured (set {', '.join(receiver.missing)})")
            continue
        to = tuple(route.get("to") or [a for a in receiver.settings.get("to", "").split(",") if a])
        if not to:
            skipped.append(f"{name}: no recipients (to)")
            continue
        found.append(Recipient(name, receiver.settings, to))
    return found, skipped


def send(recipient: Recipient, row: Mapping[str, Any], pdf: bytes) -> str:
    """E-mail one kept report (manifest ``row``) with its PDF attached; the Message-ID.

    Sent through the delivery engine with the retries of an alert e-mail.
    """
    from opslake.alerting.dispatch import RETRY
    from opslake.delivery import Engine, send_mail
    from opslake.errors import DeliveryError

    spec = report_kind(row["kind"])
    period = Period.parse(row["kind"], row["period"])
    mail = EmailMessage()
    mail["Subject"] = f"OpsLake {spec.title} {row['period']}"
    mail["From"] = recipient.settings.get("from", "opslake@localhost")
    mail["To"] = ", ".join(recipient.to)
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = msgid = make_msgid(domain="opslake")
    screens = "、".join(row["screens"].values())
    mail.set_content(
        f"OpsLake {spec.title}\n\n报告周期：{period.zh()}（{row['period']}）\n"
        f"数据截至：{row.get('data_through') or '—'}\n生成时间：{row['generated_at']}\n"
        f"内容：{screens}（共 {row['pages']} 页，见附件 PDF）\n湖中位置：{row['path']}\n"
    )
    mail.add_attachment(
        pdf,
        maintype="application",
        subtype="pdf",
        filename=f"opslake-{row['kind']}-{row['period']}.pdf",
    )

    def attempt() -> str:
        send_mail(recipient.settings, mail, timeout=30)  # a PDF takes longer than an alert
        return msgid

    outcome = Engine(RETRY).deliver(recipient.receiver, attempt, now=datetime.now(UTC))
    if outcome.status != "sent":
        raise DeliveryError(
            f"e-mailing the {row['kind']} report {row['period']} through "
            f"{outcome.detail} ({recipient.receiver}) failed after "
            f"{outcome.attempts} attempts; check OPSLAKE_SMTP_* and that the "
            "server is up"
        )
    return msgid


# -- the whole run -----------------------------------------------------------------------


def produce(
    settings: Settings,
    kind: str,
    period: str | None = None,
    *,
    send_mail: bool = True,
    say: Callable[[str], None] = print,
    scratch: Path | None = None,
) -> dict[str, Any]:
    """Render a report (Superset started for it if not running), keep it, e-mail it.

    ``period`` None: the period that holds the newest data. Returns the manifest row.
    """
    import tempfile

    from opslake.screens import service

    report_kind(kind)
    config = service.config_for(settings)
    lake = Lake.from_settings(settings)
    chosen = (
        Period.parse(kind, period)
        if period
        else Period.containing(kind, newest_day(config.warehouse))
    )
    to, skipped = recipients(settings, kind) if send_mail else ([], [])
    for line in skipped:
        say(f"report e-mail skipped: {line}")
    with (
        service.running(config, say=say),
        tempfile.TemporaryDirectory(prefix="opslake-report-", dir=scratch) as tmp,
    ):
        with service.admin_client(config) as client:
            provision_report_role(client)
        rendered = render(config, kind, chosen, Path(tmp), say=say)
        row = keep(lake, rendered)
        data = rendered.pdf.read_bytes()
        sent = []
        for recipient in to:
            send(recipient, row, data)
            sent += recipient.to
            say(
                f"e-mailed {kind} {chosen.label} to {', '.join(recipient.to)} "
                f"({recipient.receiver})"
            )
        if sent:
            row = {**row, "emailed_to": sorted(sent)}
            write_manifest(lake, row)
    return row


# -- the report-user role ----------------------------------------------------------------

#: CSV and Excel export, wherever Superset offers it (chart menu, SQL Lab results).
EXPORT_PERMISSIONS = (
    ("can_csv", "Superset"),
    ("can_export_csv", "SQLLab"),
    ("can_export", "Chart"),
    ("can_export", "Dashboard"),
    ("can_export", "Dataset"),
)


def provision_report_role(client: Any) -> Any:
    """``OpsLake 报表用户``: every screen, SQL Lab on the warehouse, CSV and Excel export.

    Built like the ops role of :mod:`opslake.screens.access` (Gamma's read permissions,
    SQL Lab's, every screen dataset, the warehouse database) plus the export permissions this
    Superset has (Excel export is governed by the same ``can_csv`` permission). Idempotent.
    """
    from opslake.screens import service
    from opslake.screens.access import (
        READ_ONLY_BASE,
        SQL_LAB_BASE,
        Access,
        AccessReport,
    )
    from opslake.screens.bundle import DATABASE_NAME

    report = AccessReport()
    access = Access(client)
    by_uuid = {str(d["uuid"]): d for d in client.list_all("dataset", ["id", "uuid", "table_name"])}
    datasets = [d for d in service.screen_datasets() if d.uuid in by_uuid]
    databases = client.list_all("database", ["id", "database_name"])
    db_id = next((d["id"] for d in databases if d["database_name"] == DATABASE_NAME), None)
    if db_id is None or not datasets:
        raise ReportError(
            f"Superset has no database {DATABASE_NAME!r} or screen datasets; "
            "import the screens first (`opslake screens start`)"
        )
    dataset_perms = {
        access.permission(
            "datasource_access",
            f"[{DATABASE_NAME}].[{by_uuid[d.uuid]['table_name']}](id:{by_uuid[d.uuid]['id']})",
        )
        for d in datasets
    }
    exports = {access.pvms[p] for p in EXPORT_PERMISSIONS if p in access.pvms}
    if ("can_csv", "Superset") not in access.pvms:
        raise ReportError(
            "this Superset has no can_csv permission; run `superset init` (a "
            "fresh `opslake screens start` does)"
        )
    perms = (
        access.role_permissions(READ_ONLY_BASE)
        | access.role_permissions(SQL_LAB_BASE)
        | dataset_perms
        | exports
        | {access.permission("database_access", f"[{DATABASE_NAME}].(id:{db_id})")}
    )
    access.ensure_role(REPORT_ROLE, perms, report)
    return report
