"""The large screens: fifteen dashboards for the ops-centre wall, leadership and departments.

Written in zh-CN; :mod:`opslake.screens.i18n` adds each screen's zh-TW and en copies.

Each screen is laid out for a 1920×1080 wall: a row of headline numbers, then two rows of
charts. A chart may appear on several screens (same UUID, one Superset chart).
"""

from __future__ import annotations

from dataclasses import replace

from opslake.metrics_catalog.definition import MetricDefinition
from opslake.screens import datasets as ds
from opslake.screens.i18n import LANGUAGES, localize
from opslake.screens.model import Chart, Dataset, NativeFilter, Row, Screen

LATEST = "is_latest"
HEADLINE = 22
TALL = 48


def _big(
    key: str, title: str, dataset: Dataset, metric: str, *where: str, description: str | None = None
) -> Chart:
    return Chart(
        key,
        title,
        "big_number_total",
        dataset,
        metrics=(metric,),
        where=where,
        description=description,
        options={"y_axis_format": dataset_format(dataset, metric)},
    )


def dataset_format(dataset: Dataset, metric: str) -> str:
    """The number format of a saved metric (SMART_NUMBER when it has none)."""
    return dataset.metric(metric).d3format or "SMART_NUMBER"


def _catalog_line(
    key: str, title: str, values: Dataset, metric: str, scope: str, by: str | None = None
) -> Chart:
    """A catalog metric hour by hour at one scope (``all`` or one dimension)."""
    where = ("grain = '1h'", f"scope = '{scope}'", _only(metric))
    return Chart(
        key,
        title,
        "echarts_timeseries_line",
        values,
        metrics=(metric,),
        groupby=(by,) if by else (),
        x_axis="bucket_start",
        time_grain="PT1H",
        where=where,
        description=values.metric(metric).description,
        options={"y_axis_format": dataset_format(values, metric)},
    )


def _only(*metrics: str) -> str:
    """The rows of these catalog metrics only (no empty series of other metrics' keys)."""
    return "metric_id IN (" + ", ".join(f"'{m}'" for m in metrics) + ")"


def _catalog_big(key: str, title: str, values: Dataset, metric: str) -> Chart:
    """A catalog metric for the whole estate over the chosen time range, from hourly rows."""
    return _big(
        key,
        title,
        values,
        metric,
        "grain = '1h'",
        "scope = 'all'",
        _only(metric),
        description=values.metric(metric).description,
    )


def _time_filter() -> NativeFilter:
    """The time range of a screen: every chart with a time column follows it."""
    return NativeFilter("time", "时间范围")


def _value_filter(column: str, name: str, dataset: Dataset, *charts: Chart) -> NativeFilter:
    """A multi-select of ``column``'s values, applied to ``charts`` only."""
    return NativeFilter(column, name, dataset, column, charts)


def _filtered(screen: Screen, *values: tuple[str, str, Dataset, tuple[str, ...]]) -> Screen:
    """``screen`` with a time range and value filters: (column, name, dataset, chart keys)."""
    charts = {c.key: c for c in screen.charts}
    return replace(
        screen,
        filters=(
            _time_filter(),
            *(
                _value_filter(column, name, dataset, *(charts[k] for k in keys))
                for column, name, dataset, keys in values
            ),
        ),
    )


def build_screens(definitions: list[MetricDefinition]) -> tuple[list[Dataset], list[Screen]]:
    """Every dataset and screen; catalog metrics come from ``definitions``."""
    values = ds.metric_values(definitions)
    eh, bh, inc, al = ds.ENTITY_HEALTH, ds.BUSINESS_HEALTH, ds.INCIDENTS, ds.ALERTS
    sl, asset, qs, qc = ds.SERVICE_LEVELS, ds.ASSETS, ds.QUALITY_SCORES, ds.QUALITY_CHECKS

    # -- shared charts ---------------------------------------------------------------------
    avg_health = _big("avg-health", "平均健康分（最新一小时）", eh, "avg_health", LATEST)
    unhealthy = _big("unhealthy-now", "异常对象数（最新一小时）", eh, "unhealthy_entities", LATEST)
    sla = _big("sla-attainment", "SLA达成率", sl, "sla_attainment", "is_total")
    incidents_total = _big("incidents-total", "事件数", inc, "incidents")
    quality_now = _big(
        "quality-overall",
        "数据质量总分（最新）",
        qs,
        "avg_score",
        LATEST,
        "subject_kind = 'overall'",
    )
    business_health_bar = Chart(
        "business-health-now",
        "各业务系统健康分（最新一小时）",
        "echarts_timeseries_bar",
        bh,
        metrics=("avg_health",),
        x_axis="business",
        where=(LATEST,),
        options={"y_axis_format": ".1f", "y_axis_bounds": [0, 100]},
    )
    alerts_by_hour = Chart(
        "alerts-by-hour",
        "告警量（每小时，按级别）",
        "echarts_timeseries_bar",
        al,
        metrics=("alerts",),
        groupby=("severity_zh",),
        x_axis="starts_at",
        time_grain="PT1H",
        options={"stack": "Stack"},
    )
    incident_list = Chart(
        "incident-list",
        "最近事件",
        "table",
        inc,
        columns=(
            "started_at",
            "severity_zh",
            "status_zh",
            "title",
            "root_cause",
            "alert_count",
            "duration_minutes",
        ),
        order_by=(("started_at", False),),
        row_limit=20,
    )
    worst_entities = Chart(
        "worst-entities",
        "健康分最低的对象（最新一小时）",
        "table",
        eh,
        columns=("entity_id", "kind_zh", "business", "health_score", "status_zh", "reason"),
        where=(LATEST,),
        order_by=(("health_score", True),),
        row_limit=15,
    )
    recent_anomalies = Chart(
        "recent-anomalies",
        "最新异常事件",
        "table",
        ds.ANOMALIES,
        columns=("ts", "entity_id", "metric", "value", "expected", "score"),
        where=("is_event",),
        order_by=(("ts", False),),
        row_limit=15,
    )
    service_by_business = Chart(
        "service-by-business",
        "各业务服务水平",
        "table",
        sl,
        groupby=("business",),
        metrics=("sla_attainment", "mtta", "mttr", "incidents_opened", "change_failure_rate"),
        where=("NOT is_total",),
        order_by=(("incidents_opened", False),),
        row_limit=30,
    )

    leadership = Screen(
        "leadership",
        "领导驾驶舱",
        "Leadership overview: estate health, SLA attainment, incidents and data quality at a "
        "glance, with the health of every business system.",
        (
            Row(((avg_health, 3), (sla, 3), (incidents_total, 3), (quality_now, 3)), HEADLINE),
            Row(
                (
                    (business_health_bar, 7),
                    (
                        Chart(
                            "health-trend",
                            "全省平均健康分趋势",
                            "echarts_timeseries_line",
                            bh,
                            metrics=("avg_health",),
                            x_axis="hour",
                            time_grain="PT1H",
                            options={"y_axis_format": ".1f"},
                        ),
                        5,
                    ),
                ),
                TALL,
            ),
            Row(
                (
                    (service_by_business, 7),
                    (
                        Chart(
                            "incidents-by-severity-lead",
                            "事件级别分布",
                            "pie",
                            inc,
                            metrics=("incidents",),
                            groupby=("severity_zh",),
                        ),
                        5,
                    ),
                ),
                TALL,
            ),
        ),
    )

    ops = Screen(
        "ops",
        "运维值班视图",
        "The duty view (S5.1c): what is unhealthy now, the latest incidents, alerts per hour "
        "and anomalies to look at.",
        (
            Row(
                (
                    (unhealthy, 3),
                    (_big("firing-incidents", "处理中事件", inc, "firing"), 3),
                    (_big("alerts-total-ops", "告警总数", al, "alerts"), 3),
                    (_big("anomaly-events-ops", "异常事件数", ds.ANOMALIES, "events"), 3),
                ),
                HEADLINE,
            ),
            Row(((incident_list, 7), (worst_entities, 5)), TALL),
            Row(((alerts_by_hour, 6), (recent_anomalies, 6)), TALL),
        ),
    )

    resources = Screen(
        "resources",
        "资源运行态势",
        "Resource posture across the five object kinds: how many objects, how healthy per "
        "kind now and over time, and key catalog metrics.",
        (
            Row(
                (
                    (_big("entities-now", "纳管对象数", eh, "entities", LATEST), 3),
                    (avg_health, 3),
                    (unhealthy, 3),
                    (
                        _big(
                            "firing-alerts-now",
                            "活动告警数（最新一小时）",
                            eh,
                            "firing_alerts",
                            LATEST,
                        ),
                        3,
                    ),
                ),
                HEADLINE,
            ),
            Row(
                (
                    (
                        Chart(
                            "kinds-pie",
                            "对象大类分布",
                            "pie",
                            eh,
                            metrics=("entities",),
                            groupby=("kind_zh",),
                            where=(LATEST,),
                        ),
                        4,
                    ),
                    (
                        Chart(
                            "kind-status-now",
                            "各大类健康状态（最新一小时）",
                            "echarts_timeseries_bar",
                            eh,
                            metrics=("entities",),
                            groupby=("status_zh",),
                            x_axis="kind_zh",
                            where=(LATEST,),
                            options={"stack": "Stack"},
                        ),
                        4,
                    ),
                    (
                        Chart(
                            "kind-health-trend",
                            "各大类平均健康分",
                            "echarts_timeseries_line",
                            eh,
                            metrics=("avg_health",),
                            groupby=("kind_zh",),
                            x_axis="hour",
                            time_grain="PT1H",
                            options={"y_axis_format": ".1f"},
                        ),
                        4,
                    ),
                ),
                TALL,
            ),
            Row(
                (
                    (
                        _catalog_line(
                            "host-cpu",
                            "主机CPU使用率（按地市）",
                            values,
                            "cloud.host.cpu_utilisation",
                            "region",
                            "region",
                        ),
                        4,
                    ),
                    (
                        _catalog_line(
                            "rack-temp",
                            "机柜进风温度（全省）",
                            values,
                            "facility.rack.inlet_temperature",
                            "all",
                        ),
                        4,
                    ),
                    (
                        _catalog_line(
                            "storage-used",
                            "存储池使用率（全省）",
                            values,
                            "cloud.storage.pool_used",
                            "all",
                        ),
                        4,
                    ),
                ),
                TALL,
            ),
        ),
    )

    applications = Screen(
        "applications",
        "应用健康",
        "Application health and topology impact: health per business system, error ratio and "
        "latency from the catalog, incidents with their root cause and reach.",
        (
            Row(
                (
                    (
                        _big(
                            "app-health",
                            "应用平均健康分（最新一小时）",
                            eh,
                            "avg_health",
                            LATEST,
                            "kind = 'application'",
                        ),
                        4,
                    ),
                    (
                        _big(
                            "app-unhealthy",
                            "异常应用数（最新一小时）",
                            eh,
                            "unhealthy_entities",
                            LATEST,
                            "kind = 'application'",
                        ),
                        4,
                    ),
                    (_big("impacted-total", "事件影响对象数", inc, "impacted"), 4),
                ),
                HEADLINE,
            ),
            Row(
                (
                    (
                        Chart(
                            "business-impact",
                            "各业务受影响对象（最新一小时）",
                            "echarts_timeseries_bar",
                            bh,
                            metrics=("degraded", "critical"),
                            x_axis="business",
                            where=(LATEST,),
                            options={"stack": "Stack"},
                        ),
                        6,
                    ),
                    (
                        _catalog_line(
                            "app-error-ratio",
                            "应用错误率（按业务）",
                            values,
                            "application.http.error_ratio",
                            "business",
                            "business",
                        ),
                        6,
                    ),
                ),
                TALL,
            ),
            Row(
                (
                    (
                        Chart(
                            "topology-impact",
                            "事件影响面与根因",
                            "table",
                            inc,
                            columns=(
                                "started_at",
                                "title",
                                "correlation_zh",
                                "root_cause",
                                "entity_count",
                                "businesses",
                            ),
                            order_by=(("entity_count", False),),
                            row_limit=20,
                        ),
                        7,
                    ),
                    (
                        _catalog_line(
                            "app-latency",
                            "应用响应时间P95（全省）",
                            values,
                            "application.http.request_duration_p95",
                            "all",
                        ),
                        5,
                    ),
                ),
                TALL,
            ),
        ),
    )

    events = Screen(
        "events",
        "事件与告警",
        "Events, incidents and convergence: alert and incident counts, the compression ratio, "
        "alerts per hour, severities and the incident list.",
        (
            Row(
                (
                    (_big("alerts-day", "告警数", ds.CONVERGENCE, "alerts"), 3),
                    (incidents_total, 3),
                    (_big("compression", "告警压缩比", ds.CONVERGENCE, "compression"), 3),
                    (_big("firing-incidents-ev", "处理中事件", inc, "firing"), 3),
                ),
                HEADLINE,
            ),
            Row(
                (
                    (alerts_by_hour, 6),
                    (
                        Chart(
                            "incidents-by-severity",
                            "事件级别分布",
                            "pie",
                            inc,
                            metrics=("incidents",),
                            groupby=("severity_zh",),
                        ),
                        3,
                    ),
                    (
                        Chart(
                            "incidents-by-correlation",
                            "收敛方式",
                            "pie",
                            inc,
                            metrics=("incidents",),
                            groupby=("correlation_zh",),
                        ),
                        3,
                    ),
                ),
                TALL,
            ),
            Row(
                (
                    (incident_list, 7),
                    (
                        Chart(
                            "top-alertnames",
                            "告警名称 Top 10",
                            "echarts_timeseries_bar",
                            al,
                            metrics=("alerts",),
                            x_axis="alertname",
                            row_limit=10,
                        ),
                        5,
                    ),
                ),
                TALL,
            ),
            _handling_row(ds.INCIDENT_HANDLING, sl),
        ),
    )

    service = Screen(
        "service",
        "服务质量",
        "Service quality: SLA attainment, MTTA, MTTR and change failure rate, per business and "
        "per day.",
        (
            Row(
                (
                    (sla, 3),
                    (_big("mtta", "平均响应时长（分钟）", sl, "mtta", "is_total"), 3),
                    (_big("mttr", "平均修复时长（分钟）", sl, "mttr", "is_total"), 3),
                    (
                        _big("change-failure", "变更失败率", sl, "change_failure_rate", "is_total"),
                        3,
                    ),
                ),
                HEADLINE,
            ),
            Row(
                (
                    (
                        Chart(
                            "sla-by-business",
                            "各业务SLA达成率",
                            "echarts_timeseries_bar",
                            sl,
                            metrics=("sla_attainment",),
                            x_axis="business",
                            where=("NOT is_total",),
                            options={"y_axis_format": ds.PERCENT},
                        ),
                        6,
                    ),
                    (
                        Chart(
                            "changes-by-day",
                            "每日变更与失败变更",
                            "echarts_timeseries_bar",
                            sl,
                            metrics=("changes", "failed_changes"),
                            x_axis="day",
                            time_grain="P1D",
                            where=("is_total",),
                        ),
                        6,
                    ),
                ),
                TALL,
            ),
            Row(
                (
                    (service_by_business, 7),
                    (
                        Chart(
                            "sla-catalog",
                            "SLA达成率（目录指标，按业务）",
                            "echarts_timeseries_bar",
                            values,
                            metrics=("service.sla.attainment",),
                            x_axis="business",
                            where=("grain = '1d'", "scope = 'business'"),
                            description=values.metric("service.sla.attainment").description,
                            options={"y_axis_format": ds.PERCENT},
                        ),
                        5,
                    ),
                ),
                TALL,
            ),
        ),
    )

    assets = Screen(
        "assets",
        "资源台账",
        "The asset ledger: configuration items per department and kind, lifecycle, and "
        "warranties, support contracts and licences expiring.",
        (
            Row(
                (
                    (_big("cis", "配置项总数", asset, "cis"), 3),
                    (_big("warranty-expiring", "90天内保修到期", asset, "warranty_expiring"), 3),
                    (_big("warranty-expired", "已过保", asset, "warranty_expired"), 3),
                    (_big("contract-expiring", "90天内维保到期", asset, "contract_expiring"), 3),
                ),
                HEADLINE,
            ),
            Row(
                (
                    (
                        Chart(
                            "cis-by-department",
                            "各部门配置项（按大类）",
                            "echarts_timeseries_bar",
                            asset,
                            metrics=("cis",),
                            groupby=("kind_zh",),
                            x_axis="department",
                            options={"stack": "Stack"},
                        ),
                        8,
                    ),
                    (
                        Chart(
                            "lifecycle",
                            "生命周期状态",
                            "pie",
                            asset,
                            metrics=("cis",),
                            groupby=("lifecycle_zh",),
                        ),
                        4,
                    ),
                ),
                TALL,
            ),
            Row(
                (
                    (
                        Chart(
                            "expiring-list",
                            "即将到期（保修、维保、许可证 90 天内）",
                            "table",
                            asset,
                            columns=(
                                "entity_id",
                                "name",
                                "kind_zh",
                                "department",
                                "vendor",
                                "warranty_end",
                                "contract_end",
                                "licence_end",
                                "days_to_next_expiry",
                            ),
                            where=("days_to_next_expiry <= 90", "lifecycle_state <> 'retired'"),
                            order_by=(("days_to_next_expiry", True),),
                            row_limit=50,
                        ),
                        12,
                    ),
                ),
                TALL,
            ),
        ),
    )

    quality = Screen(
        "quality",
        "数据质量",
        "Data quality: the overall score and its trend, scores per source and table, check "
        "outcomes and metric completeness.",
        (
            Row(
                (
                    (quality_now, 4),
                    (
                        _big("checks-pass-rate", "检查通过率（最新一天）", qc, "pass_rate", LATEST),
                        4,
                    ),
                    (_big("checks-failed", "未通过检查数（最新一天）", qc, "failed", LATEST), 4),
                ),
                HEADLINE,
            ),
            Row(
                (
                    (
                        Chart(
                            "quality-by-source",
                            "各数据源质量分（最新）",
                            "echarts_timeseries_bar",
                            qs,
                            metrics=("avg_score",),
                            x_axis="subject",
                            where=(LATEST, "subject_kind = 'source'"),
                            options={"y_axis_format": ".1f"},
                        ),
                        6,
                    ),
                    (
                        Chart(
                            "quality-trend",
                            "质量分趋势（按类别）",
                            "echarts_timeseries_line",
                            qs,
                            metrics=("avg_score",),
                            groupby=("subject_kind_zh",),
                            x_axis="day",
                            time_grain="P1D",
                            options={"y_axis_format": ".1f"},
                        ),
                        6,
                    ),
                ),
                TALL,
            ),
            Row(
                (
                    (
                        Chart(
                            "check-results",
                            "检查结果（最新一天，未通过在前）",
                            "table",
                            qc,
                            columns=(
                                "layer",
                                "table_name",
                                "check_name",
                                "severity",
                                "outcome",
                                "observed",
                                "threshold",
                            ),
                            where=(LATEST,),
                            order_by=(("passed", True), ("table_name", True)),
                            row_limit=50,
                        ),
                        7,
                    ),
                    (
                        Chart(
                            "completeness-by-family",
                            "指标完整率（按指标族）",
                            "echarts_timeseries_bar",
                            ds.METRIC_QUALITY,
                            metrics=("completeness",),
                            x_axis="family",
                            options={"y_axis_format": ds.PERCENT},
                        ),
                        5,
                    ),
                ),
                TALL,
            ),
        ),
    )

    insights = Screen(
        "insights",
        "智能分析",
        "Anomalies and forecasts: anomaly events and scores, the objects with most anomalies, "
        "forecast bands and capacity headroom.",
        (
            Row(
                (
                    (_big("anomaly-events", "异常事件数", ds.ANOMALIES, "events"), 4),
                    (_big("anomaly-entities", "异常对象数", ds.ANOMALIES, "entities"), 4),
                    (_big("capacity-max", "最高容量使用率", ds.CAPACITY, "max_used"), 4),
                ),
                HEADLINE,
            ),
            Row(
                (
                    (
                        Chart(
                            "anomaly-score-trend",
                            "异常分（每小时最高，按检测器）",
                            "echarts_timeseries_line",
                            ds.ANOMALIES,
                            metrics=("max_score",),
                            groupby=("detector",),
                            x_axis="ts",
                            time_grain="PT1H",
                            options={"y_axis_format": ".2f"},
                        ),
                        6,
                    ),
                    (
                        Chart(
                            "cpu-forecast",
                            "主机CPU使用率预测（均值与95%区间）",
                            "echarts_timeseries_line",
                            ds.FORECASTS,
                            metrics=("point", "lower_95", "upper_95"),
                            x_axis="ts",
                            time_grain="PT1H",
                            where=("metric = 'node_cpu_utilisation_ratio'",),
                            options={"y_axis_format": ds.PERCENT},
                        ),
                        6,
                    ),
                ),
                TALL,
            ),
            Row(
                (
                    (
                        Chart(
                            "anomaly-top-entities",
                            "异常最多的对象 Top 10",
                            "echarts_timeseries_bar",
                            ds.ANOMALIES,
                            metrics=("events",),
                            x_axis="entity_id",
                            where=("is_event",),
                            row_limit=10,
                        ),
                        4,
                    ),
                    (
                        Chart(
                            "capacity-list",
                            "容量使用率最高的序列",
                            "table",
                            ds.CAPACITY,
                            columns=(
                                "entity_id",
                                "metric",
                                "used_ratio",
                                "slope_per_day",
                                "days_left",
                            ),
                            order_by=(("used_ratio", False),),
                            row_limit=20,
                        ),
                        4,
                    ),
                    (recent_anomalies, 4),
                ),
                TALL,
            ),
        ),
    )

    metric_map = Screen(
        "metric-map",
        "指标地图",
        "The metrics catalog: what exists per category, owners, lineage depth and usage.",
        (
            Row(
                (
                    (_big("catalog-size", "指标总数", ds.CATALOG, "metrics"), 4),
                    (_big("catalog-published", "已发布指标", ds.CATALOG, "published"), 4),
                    (_big("catalog-uses", "指标使用次数", ds.USAGE, "uses"), 4),
                ),
                HEADLINE,
            ),
            Row(
                (
                    (
                        Chart(
                            "catalog-by-category",
                            "指标按类别",
                            "pie",
                            ds.CATALOG,
                            metrics=("metrics",),
                            groupby=("category_zh",),
                        ),
                        4,
                    ),
                    (
                        Chart(
                            "catalog-by-owner",
                            "指标按负责人",
                            "echarts_timeseries_bar",
                            ds.CATALOG,
                            metrics=("metrics",),
                            x_axis="owner",
                        ),
                        4,
                    ),
                    (
                        Chart(
                            "lineage-depth",
                            "血缘最深的指标 Top 15（上游节点数）",
                            "echarts_timeseries_bar",
                            ds.LINEAGE,
                            metrics=("upstreams",),
                            x_axis="metric_name",
                            row_limit=15,
                        ),
                        4,
                    ),
                ),
                TALL,
            ),
            Row(
                (
                    (
                        Chart(
                            "catalog-list",
                            "指标目录",
                            "table",
                            ds.CATALOG,
                            columns=(
                                "metric_id",
                                "name_zh_cn",
                                "name_en",
                                "category_zh",
                                "type",
                                "unit",
                                "owner",
                                "status",
                                "current_version",
                            ),
                            order_by=(("metric_id", True),),
                            row_limit=200,
                        ),
                        8,
                    ),
                    (
                        Chart(
                            "usage-by-principal",
                            "指标使用（按使用方）",
                            "pie",
                            ds.USAGE,
                            metrics=("uses",),
                            groupby=("principal_kind_zh",),
                        ),
                        4,
                    ),
                ),
                TALL,
            ),
        ),
    )

    business, department = ("business", "业务系统"), ("department", "部门")
    health = ("entities-now", "avg-health", "unhealthy-now", "firing-alerts-now", "kinds-pie")
    health += ("kind-status-now", "kind-health-trend")
    apps = ("app-health", "app-unhealthy")
    ledger = ("cis", "warranty-expiring", "warranty-expired", "contract-expiring")
    ledger += ("cis-by-department", "lifecycle", "expiring-list")
    screens = [
        _filtered(
            leadership,
            (
                *business,
                bh,
                ("avg-health", "business-health-now", "health-trend", "service-by-business"),
            ),
            (*department, eh, ("avg-health",)),
        ),
        _filtered(
            ops,
            (*business, eh, ("unhealthy-now", "worst-entities")),
            (*department, eh, ("unhealthy-now", "worst-entities")),
        ),
        _filtered(resources, (*business, eh, health), (*department, eh, health)),
        _filtered(
            applications,
            (*business, bh, (*apps, "business-impact", "app-error-ratio")),
            (*department, eh, apps),
        ),
        _filtered(events),
        _filtered(
            service, (*business, sl, ("sla-by-business", "service-by-business", "sla-catalog"))
        ),
        _filtered(assets, (*business, asset, ledger), (*department, asset, ledger)),
        _filtered(quality),
        _filtered(insights),
        _filtered(metric_map),
        *_new_themes(values),
    ]
    names = {m.id: dict(m.names) for m in definitions}
    screens += [s for language in LANGUAGES[1:] for s in localize(screens, language, names)]
    used = {
        d.key: d
        for s in screens
        for d in (*(c.dataset for c in s.charts), *(f.dataset for f in s.filters if f.dataset))
    }
    return list(used.values()), screens


def _handling_row(handling: Dataset, levels: Dataset) -> Row:
    """How incidents are handled (S5.5d): the unresolved by handling state, MTTA and MTTR per
    day (gold.service_levels, which reads the handling events), and the latest incidents'
    handling."""
    return Row(
        (
            (
                Chart(
                    "incidents-by-handling",
                    "未解决事件（按处理状态、级别）",
                    "echarts_timeseries_bar",
                    handling,
                    metrics=("unresolved",),
                    groupby=("severity_zh",),
                    x_axis="handling_zh",
                    where=("handling <> 'resolved'",),
                    options={"stack": "Stack"},
                ),
                4,
            ),
            (
                Chart(
                    "mtta-mttr-trend",
                    "平均响应与修复时长趋势（分钟）",
                    "echarts_timeseries_line",
                    levels,
                    metrics=("mtta", "mttr"),
                    x_axis="day",
                    time_grain="P1D",
                    where=("is_total",),
                    options={"y_axis_format": ".1f"},
                ),
                4,
            ),
            (
                Chart(
                    "incident-handling-list",
                    "事件处理进展",
                    "table",
                    handling,
                    columns=(
                        "started_at",
                        "severity_zh",
                        "title",
                        "handling_zh",
                        "assignee",
                        "ack_minutes",
                        "resolve_minutes",
                    ),
                    order_by=(("started_at", False),),
                    row_limit=20,
                ),
                4,
            ),
        ),
        TALL,
    )


def _new_themes(values: Dataset) -> list[Screen]:
    """Network quality, security posture, the platform itself, the platform's effect and the
    business call chain as users meet it."""
    switch_metrics = ("cloud.switch.interface_utilisation", "cloud.switch.interface_errors")
    by_switch = ("grain = '1h'", "scope = 'entity'", _only(*switch_metrics))
    switch_util = Chart(
        "switch-util-trend",
        "各交换机端口利用率",
        "echarts_timeseries_line",
        values,
        metrics=("cloud.switch.interface_utilisation",),
        groupby=("entity_id",),
        x_axis="bucket_start",
        time_grain="PT1H",
        where=by_switch,
        options={"y_axis_format": ds.PERCENT},
    )
    switch_errors = Chart(
        "switch-errors-trend",
        "各交换机端口错包率（每秒）",
        "echarts_timeseries_line",
        values,
        metrics=("cloud.switch.interface_errors",),
        groupby=("entity_id",),
        x_axis="bucket_start",
        time_grain="PT1H",
        where=by_switch,
    )
    switch_rank = Chart(
        "switch-rank",
        "交换机端口排行（错包率高在前）",
        "table",
        values,
        groupby=("entity_id", "department"),
        metrics=switch_metrics[::-1],
        where=by_switch,
        order_by=(("cloud.switch.interface_errors", False),),
        row_limit=20,
    )
    probe_by_business = Chart(
        "probe-availability-by-business",
        "各业务拨测可用率",
        "echarts_timeseries_bar",
        values,
        metrics=("application.probe.availability",),
        x_axis="business",
        where=("grain = '1h'", "scope = 'business'", _only("application.probe.availability")),
        options={"y_axis_format": ds.PERCENT, "y_axis_bounds": [0, 1]},
    )
    probe_latency = _catalog_line(
        "probe-latency-by-business",
        "应用拨测时延P95（毫秒，按业务）",
        values,
        "application.probe.latency_p95",
        "business",
        "business",
    )
    probe_availability = _catalog_big(
        "probe-availability", "应用拨测可用率", values, "application.probe.availability"
    )
    network = Screen(
        "network",
        "网络质量",
        "Network quality: switch interface utilisation and errors, synthetic probe "
        "availability and latency per business, TCP connect latency to platform services.",
        (
            Row(
                (
                    (
                        _catalog_big(
                            "switch-util-avg",
                            "交换机端口平均利用率",
                            values,
                            "cloud.switch.interface_utilisation",
                        ),
                        3,
                    ),
                    (
                        _catalog_big(
                            "switch-errors-avg",
                            "交换机端口平均错包率（每秒）",
                            values,
                            "cloud.switch.interface_errors",
                        ),
                        3,
                    ),
                    (probe_availability, 3),
                    (
                        _catalog_big(
                            "tcp-probe-latency",
                            "平台TCP拨测时延P95（毫秒，最高）",
                            values,
                            "platform.probe.tcp_latency_p95",
                        ),
                        3,
                    ),
                ),
                HEADLINE,
            ),
            Row(((switch_util, 6), (switch_errors, 6)), TALL),
            Row(((probe_by_business, 4), (probe_latency, 4), (switch_rank, 4)), TALL),
        ),
        filters=(
            _time_filter(),
            _value_filter("department", "部门", values, switch_util, switch_errors, switch_rank),
            _value_filter("business", "业务系统", values, probe_by_business, probe_latency),
        ),
    )

    sa = ds.SECURITY_ALERTS
    by_device = ("grain = '1h'", "scope = 'entity'")
    security_charts = (
        _big("security-alerts", "安全告警数", sa, "alerts"),
        _big("security-devices", "安全设备数", sa, "devices"),
        Chart(
            "security-device-types",
            "安全设备构成",
            "pie",
            sa,
            metrics=("devices",),
            groupby=("type_zh",),
        ),
        Chart(
            "security-device-list",
            "安全设备告警排行",
            "table",
            sa,
            groupby=("entity_id", "type_zh", "department", "vendor"),
            metrics=("alerts", "incidents"),
            order_by=(("alerts", False),),
            row_limit=30,
        ),
    )
    waf = Chart(
        "waf-blocked-trend",
        "WAF拦截速率（每秒，按设备）",
        "echarts_timeseries_line",
        values,
        metrics=("security.waf.blocked_requests",),
        groupby=("entity_id",),
        x_axis="bucket_start",
        time_grain="PT1H",
        where=(*by_device, _only("security.waf.blocked_requests")),
    )
    ids = Chart(
        "ids-alert-trend",
        "入侵检测告警速率（每分钟，按设备）",
        "echarts_timeseries_line",
        values,
        metrics=("security.ids.alert_rate",),
        groupby=("entity_id",),
        x_axis="bucket_start",
        time_grain="PT1H",
        where=(*by_device, _only("security.ids.alert_rate")),
    )
    device_cpu = Chart(
        "security-device-cpu",
        "安全设备CPU使用率（按设备）",
        "echarts_timeseries_bar",
        values,
        metrics=("security.device.cpu_utilisation",),
        x_axis="entity_id",
        where=(*by_device, _only("security.device.cpu_utilisation")),
        options={"y_axis_format": ds.PERCENT},
    )
    security = Screen(
        "security",
        "安全态势",
        "Security posture: WAF blocks and IDS hits per device, security device load, and the "
        "alerts raised on security devices.",
        (
            Row(
                (
                    (
                        _catalog_big(
                            "waf-blocked-avg",
                            "WAF平均拦截速率（每秒）",
                            values,
                            "security.waf.blocked_requests",
                        ),
                        3,
                    ),
                    (
                        _catalog_big(
                            "ids-alert-avg",
                            "入侵检测平均告警速率（每分钟）",
                            values,
                            "security.ids.alert_rate",
                        ),
                        3,
                    ),
                    (security_charts[0], 3),
                    (security_charts[1], 3),
                ),
                HEADLINE,
            ),
            Row(((waf, 6), (ids, 6)), TALL),
            Row(((device_cpu, 4), (security_charts[2], 3), (security_charts[3], 5)), TALL),
        ),
        filters=(
            _time_filter(),
            _value_filter("department", "部门", sa, *security_charts, waf, ids, device_cpu),
        ),
    )

    lake, runs, me = ds.LAKE_INVENTORY, ds.PIPELINE_RUNS, ds.SELF_METRICS
    platform = Screen(
        "platform",
        "平台自身运行",
        "The platform watching itself: pipeline runs and their failed checks, failed-run "
        "alerts, the data service's requests, errors and latency, the platform's own alerts, "
        "lake size and growth per layer, collection lag and data quality.",
        (
            Row(
                (
                    (_big("lake-size", "数据湖容量（MB）", lake, "size_mb"), 3),
                    (_big("pipeline-runs", "管道运行次数", runs, "runs"), 3),
                    (_big("pipeline-failed-checks", "未通过检查数", runs, "failed"), 3),
                    (
                        _big(
                            "pipeline-failure-alerts",
                            "管道运行失败告警",
                            ds.SELF_ALERTS,
                            "alerts",
                            "alertname = 'PipelineRunFailed'",
                        ),
                        3,
                    ),
                ),
                HEADLINE,
            ),
            Row(
                (
                    (
                        Chart(
                            "api-traffic",
                            "数据服务请求与错误（每小时）",
                            "echarts_timeseries_line",
                            me,
                            metrics=("api_requests", "api_5xx", "api_4xx"),
                            x_axis="bucket_start",
                            time_grain="PT1H",
                        ),
                        4,
                    ),
                    (
                        Chart(
                            "api-latency",
                            "数据服务时延P95（秒）",
                            "echarts_timeseries_line",
                            me,
                            metrics=("api_latency_p95",),
                            x_axis="bucket_start",
                            time_grain="PT1H",
                        ),
                        4,
                    ),
                    (
                        Chart(
                            "pipeline-failures",
                            "管道失败运行与步骤重试（每小时）",
                            "echarts_timeseries_bar",
                            me,
                            metrics=("failed_runs", "step_retries"),
                            x_axis="bucket_start",
                            time_grain="PT1H",
                        ),
                        4,
                    ),
                ),
                TALL,
            ),
            Row(
                (
                    (
                        Chart(
                            "self-alerts",
                            "平台自身告警（管道失败、数据服务错误、大屏与采集）",
                            "table",
                            ds.SELF_ALERTS,
                            columns=(
                                "starts_at",
                                "alertname",
                                "title",
                                "severity_zh",
                                "entity_id",
                                "incident_id",
                                "live",
                            ),
                            order_by=(("starts_at", False),),
                            row_limit=50,
                        ),
                        12,
                    ),
                ),
                TALL,
            ),
            Row(
                (
                    (
                        Chart(
                            "lake-growth",
                            "数据湖每日新增容量（MB，按层）",
                            "echarts_timeseries_bar",
                            lake,
                            metrics=("size_mb",),
                            groupby=("layer_zh",),
                            x_axis="day",
                            time_grain="P1D",
                            options={"stack": "Stack"},
                        ),
                        6,
                    ),
                    (
                        Chart(
                            "collection-lag",
                            "采集延迟（分钟）",
                            "echarts_timeseries_line",
                            values,
                            metrics=(
                                "data.metric_points.staleness_minutes",
                                "data.logs.staleness_minutes",
                            ),
                            x_axis="bucket_start",
                            time_grain="PT1H",
                            where=(
                                "grain = '1h'",
                                "scope = 'all'",
                                _only(
                                    "data.metric_points.staleness_minutes",
                                    "data.logs.staleness_minutes",
                                ),
                            ),
                        ),
                        6,
                    ),
                ),
                TALL,
            ),
            Row(
                (
                    (
                        Chart(
                            "pipeline-checks",
                            "管道质量检查（每天，检查数与未通过）",
                            "echarts_timeseries_bar",
                            runs,
                            metrics=("checks", "failed"),
                            x_axis="checked_at",
                            time_grain="P1D",
                        ),
                        6,
                    ),
                    (
                        _catalog_line(
                            "samples-received",
                            "指标采样接收数（每小时）",
                            values,
                            "data.metric_points.samples_received",
                            "all",
                        ),
                        6,
                    ),
                ),
                TALL,
            ),
        ),
        filters=(_time_filter(),),
    )

    ef = ds.EFFECT
    trends = [
        Chart(
            f"effect-{name.replace('_', '-')}-trend",
            title,
            "echarts_timeseries_line",
            ef,
            metrics=(name, f"base_{name}"),
            x_axis="day",
            time_grain="P1D",
            options={"y_axis_format": dataset_format(ef, name)}
            # Shares on a 0-100 % axis, not one stretched past 100 %.
            | ({"y_axis_bounds": [0, 1]} if dataset_format(ef, name) == ds.PERCENT else {}),
        )
        for name, title in (
            ("mtta", "平均响应时长与基线（分钟）"),
            ("mttr", "平均修复时长与基线（分钟）"),
            ("sla_attainment", "SLA达成率与基线"),
            ("compression", "告警压缩比与基线"),
            ("automation", "自动定位根因占比与基线"),
        )
    ]
    effect = Screen(
        "effect",
        "运维成效",
        f"The platform's effect: MTTA, MTTR, SLA attainment, alert compression and the share "
        f"of incidents whose root cause was located automatically, per day and against the "
        f"baseline (the first {ds.BASELINE_DAYS} days of service levels in the lake).",
        (
            Row(
                (
                    (_big("effect-mtta-change", "平均响应时长较基线", ef, "mtta_vs_base"), 3),
                    (_big("effect-mttr-change", "平均修复时长较基线", ef, "mttr_vs_base"), 3),
                    (
                        _big(
                            "effect-sla-change",
                            "SLA达成率较基线（百分点）",
                            ef,
                            "sla_attainment_vs_base",
                        ),
                        3,
                    ),
                    (_big("effect-automation", "自动定位根因占比", ef, "automation"), 3),
                ),
                HEADLINE,
            ),
            Row(((trends[0], 6), (trends[1], 6)), TALL),
            Row(((trends[2], 4), (trends[3], 4), (trends[4], 4)), TALL),
        ),
        filters=(_time_filter(),),
    )

    chain = ("grain = '1h'", "scope = 'entity'", "object_type IN ('app', 'svc')")
    http = (
        "application.http.request_rate",
        "application.http.error_ratio",
        "application.http.request_duration_p95",
    )
    chain_latency, chain_errors = (
        Chart(
            f"chain-{key}",
            title,
            "echarts_timeseries_bar",
            values,
            metrics=(metric,),
            groupby=("object_type_zh",),
            x_axis="business",
            where=(*chain, _only(metric)),
            options={"y_axis_format": dataset_format(values, metric)},
        )
        for key, title, metric in (
            ("latency", "各业务链路响应时间P95（秒，前端应用→后端服务）", http[2]),
            ("errors", "各业务链路错误率（前端应用→后端服务）", http[1]),
        )
    )
    chain_table = Chart(
        "chain-detail",
        "业务链路各环节（请求、错误率、P95）",
        "table",
        values,
        groupby=("business", "object_type_zh"),
        metrics=http,
        where=(*chain, _only(*http)),
        order_by=(("application.http.error_ratio", False),),
        row_limit=40,
    )
    trace = Screen(
        "trace",
        "业务链路与用户体验",
        "Each business as its users meet it: probe availability and latency, then request "
        "rate, errors and p95 latency at each tier of its call chain (front-end application, "
        "back-end services).",
        (
            Row(
                (
                    (probe_availability, 3),
                    (
                        _catalog_big(
                            "probe-latency-max",
                            "拨测时延P95（毫秒，最高）",
                            values,
                            "application.probe.latency_p95",
                        ),
                        3,
                    ),
                    (_catalog_big("app-error-ratio-avg", "应用平均错误率", values, http[1]), 3),
                    (
                        _catalog_big(
                            "app-latency-max", "应用响应时间P95（秒，最高）", values, http[2]
                        ),
                        3,
                    ),
                ),
                HEADLINE,
            ),
            Row(((chain_latency, 6), (chain_errors, 6)), TALL),
            Row(((probe_by_business, 3), (probe_latency, 4), (chain_table, 5)), TALL),
        ),
        filters=(
            _time_filter(),
            _value_filter(
                "business",
                "业务系统",
                values,
                chain_latency,
                chain_errors,
                chain_table,
                probe_by_business,
                probe_latency,
            ),
        ),
    )
    return [network, security, platform, effect, trace]
