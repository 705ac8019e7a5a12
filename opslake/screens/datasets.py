"""The screens' datasets: virtual SQL over the serving warehouse's gold views.

Times are shown in local time (the ``timezone`` setting, filled in at import): each dataset
converts the warehouse's UTC ``TIMESTAMPTZ`` columns with ``timezone(tz, ts)``. Codes get a
Chinese label column beside them (``kind`` → ``kind_zh``) so charts group by what staff read.
Catalog metrics become saved metrics of the ``metric_values`` dataset, named by metric id,
labelled with their Chinese name and described in English, straight from ``metrics/``.
"""

from __future__ import annotations

from collections.abc import Mapping

from opslake.metrics_catalog.definition import MetricDefinition
from opslake.screens.model import TIMEZONE_TOKEN, Column, Dataset, Metric

TZ = TIMEZONE_TOKEN

KIND_ZH = {
    "facility": "机房设施",
    "cloud": "云资源",
    "application": "应用系统",
    "platform": "平台服务",
    "security": "安全设备",
}
CATEGORY_ZH = KIND_ZH | {"service": "服务管理", "data": "数据平台"}
STATUS_ZH = {"healthy": "健康", "degraded": "降级", "critical": "严重"}
SEVERITY_ZH = {
    "critical": "严重",
    "major": "重要",
    "warning": "警告",
    "minor": "次要",
    "info": "提示",
}
INCIDENT_STATUS_ZH = {"firing": "处理中", "resolved": "已恢复"}
#: How far people have handled an incident (S5.5d): assigned outranks open and acknowledged.
HANDLING_ZH = {
    "open": "未确认",
    "acknowledged": "已确认",
    "assigned": "已分派",
    "resolved": "已解决",
}
LIFECYCLE_ZH = {
    "planned": "规划中",
    "in_service": "在用",
    "maintenance": "维护中",
    "retired": "已退役",
}
PRINCIPAL_ZH = {
    "job": "调度作业",
    "api_key": "数据服务",
    "dashboard": "大屏",
    "cli": "命令行",
    "notebook": "分析笔记本",
}
PERCENT = ".1%"
SECURITY_TYPE_ZH = {
    "firewall": "防火墙",
    "waf": "Web应用防火墙",
    "ids": "入侵检测",
    "bastion": "堡垒机",
}
#: The tiers of a business's call chain and the object types a chart shows by name.
OBJECT_TYPE_ZH = {
    "app": "前端应用",
    "svc": "后端服务",
    "db": "数据库",
    "middleware": "中间件",
    "queue": "消息队列",
    "identity": "统一身份认证",
    "switch": "交换机",
} | SECURITY_TYPE_ZH
LAYER_ZH = {"landing": "落地层", "bronze": "原始层", "silver": "标准层", "gold": "汇总层"}
#: The platform-effect screen's baseline: the lake's first days of service levels.
BASELINE_DAYS = 7


def _label(column: str, labels: Mapping[str, str]) -> str:
    """SQL mapping codes to Chinese labels; unknown codes show as they are."""
    whens = " ".join(f"WHEN '{code}' THEN '{zh}'" for code, zh in labels.items())
    return f"CASE {column} {whens} ELSE {column} END"


def _local(column: str) -> str:
    return f"timezone('{TZ}', {column})"


def _m(
    name: str,
    expression: str,
    label: str,
    d3format: str | None = None,
    description: str | None = None,
) -> Metric:
    return Metric(name, expression, label, description, d3format)


def _c(name: str, type_: str, label: str) -> Column:
    return Column(name, type_, label)


ENTITY_HEALTH = Dataset(
    key="entity_health",
    name="对象健康（逐小时）",
    description="Health score of every managed object per hour (gold.entity_health), local "
    "time; is_latest marks the newest hour.",
    sql=f"""SELECT {_local("h.hour")} AS hour, h.entity_id, h.kind,
       {_label("h.kind", KIND_ZH)} AS kind_zh, h.business, h.department, h.health_score,
       h.status, {_label("h.status", STATUS_ZH)} AS status_zh, h.firing_alerts,
       h.worst_severity, h.reason, h.hour = (SELECT max(hour) FROM entity_health) AS is_latest
FROM entity_health AS h""",
    columns=(
        _c("hour", "TIMESTAMP", "时间"),
        _c("entity_id", "VARCHAR", "对象"),
        _c("kind", "VARCHAR", "对象大类代码"),
        _c("kind_zh", "VARCHAR", "对象大类"),
        _c("business", "VARCHAR", "业务系统"),
        _c("department", "VARCHAR", "部门"),
        _c("health_score", "DOUBLE", "健康分"),
        _c("status", "VARCHAR", "状态代码"),
        _c("status_zh", "VARCHAR", "健康状态"),
        _c("firing_alerts", "BIGINT", "活动告警数"),
        _c("worst_severity", "VARCHAR", "最高告警级别"),
        _c("reason", "VARCHAR", "扣分原因"),
        _c("is_latest", "BOOLEAN", "最新一小时"),
    ),
    metrics=(
        _m("entities", "COUNT(DISTINCT entity_id)", "对象数"),
        _m("avg_health", "AVG(health_score)", "平均健康分", ".1f"),
        _m("min_health", "MIN(health_score)", "最低健康分", ".1f"),
        _m(
            "unhealthy_entities",
            "COUNT(DISTINCT entity_id) FILTER (WHERE status <> 'healthy')",
            "异常对象数",
        ),
        _m("firing_alerts", "SUM(firing_alerts)", "活动告警数"),
    ),
    main_dttm="hour",
    by_department=True,
)

BUSINESS_HEALTH = Dataset(
    key="business_health",
    name="业务健康（逐小时）",
    description="Health of each business system per hour (gold.business_health), local time.",
    sql=f"""SELECT {_local("b.hour")} AS hour, b.business, b.entities, b.avg_health_score,
       b.min_health_score, b.healthy_entities, b.degraded_entities, b.critical_entities,
       b.hour = (SELECT max(hour) FROM business_health) AS is_latest
FROM business_health AS b""",
    columns=(
        _c("hour", "TIMESTAMP", "时间"),
        _c("business", "VARCHAR", "业务系统"),
        _c("entities", "BIGINT", "对象数"),
        _c("avg_health_score", "DOUBLE", "平均健康分"),
        _c("min_health_score", "DOUBLE", "最低健康分"),
        _c("healthy_entities", "BIGINT", "健康对象数"),
        _c("degraded_entities", "BIGINT", "降级对象数"),
        _c("critical_entities", "BIGINT", "严重对象数"),
        _c("is_latest", "BOOLEAN", "最新一小时"),
    ),
    metrics=(
        _m("avg_health", "AVG(avg_health_score)", "平均健康分", ".1f"),
        _m("min_health", "MIN(min_health_score)", "最低健康分", ".1f"),
        _m("degraded", "SUM(degraded_entities)", "降级对象数"),
        _m("critical", "SUM(critical_entities)", "严重对象数"),
    ),
    main_dttm="hour",
)

INCIDENTS = Dataset(
    key="incidents",
    name="事件（告警收敛后）",
    description="Incidents converged from alerts, newest state of each (gold.incidents_current).",
    sql=f"""SELECT i.incident_id, i.title, i.status, {_label("i.status", INCIDENT_STATUS_ZH)}
       AS status_zh, i.severity, {_label("i.severity", SEVERITY_ZH)} AS severity_zh,
       CASE WHEN i.correlation = 'topology' THEN '拓扑关联'
            WHEN i.correlation LIKE 'rule:%' THEN '规则收敛' ELSE i.correlation END
       AS correlation_zh, i.correlation, {_local("i.started_at")} AS started_at,
       {_local("i.ended_at")} AS ended_at, i.alert_count, i.entity_count,
       coalesce(i.root_cause, '（未定位）') AS root_cause, i.root_cause_score,
       array_to_string(i.businesses, '、') AS businesses,
       array_to_string(i.departments, '、') AS departments,
       date_diff('minute', i.started_at, coalesce(i.ended_at, i.updated_at)) AS duration_minutes
FROM incidents_current AS i""",
    columns=(
        _c("incident_id", "VARCHAR", "事件编号"),
        _c("title", "VARCHAR", "事件"),
        _c("status", "VARCHAR", "状态代码"),
        _c("status_zh", "VARCHAR", "状态"),
        _c("severity", "VARCHAR", "级别代码"),
        _c("severity_zh", "VARCHAR", "级别"),
        _c("correlation_zh", "VARCHAR", "收敛方式"),
        _c("correlation", "VARCHAR", "收敛规则"),
        _c("started_at", "TIMESTAMP", "开始时间"),
        _c("ended_at", "TIMESTAMP", "恢复时间"),
        _c("alert_count", "INTEGER", "告警数"),
        _c("entity_count", "INTEGER", "影响对象数"),
        _c("root_cause", "VARCHAR", "根因对象"),
        _c("root_cause_score", "DOUBLE", "根因置信度"),
        _c("businesses", "VARCHAR", "影响业务"),
        _c("departments", "VARCHAR", "涉及部门"),
        _c("duration_minutes", "BIGINT", "持续时长（分钟）"),
    ),
    metrics=(
        _m("incidents", "COUNT(*)", "事件数"),
        _m("firing", "COUNT(*) FILTER (WHERE status = 'firing')", "处理中事件数"),
        _m("alerts", "SUM(alert_count)", "告警数"),
        _m("impacted", "SUM(entity_count)", "影响对象数"),
    ),
    main_dttm="started_at",
)

INCIDENT_HANDLING = Dataset(
    key="incident_handling",
    name="事件处理（确认、分派、解决）",
    description="Each incident with how people handled it (gold.incidents_current joined to "
    "incident_state_current): open, acknowledged, assigned or resolved, minutes to the "
    "first acknowledgement and to the resolution; an incident nobody acted on is open.",
    sql=f"""WITH h AS (
  SELECT i.incident_id, i.title, i.status, i.severity, i.started_at, s.assignee,
         s.acknowledged_at, s.resolved_at, s.comments,
         CASE WHEN s.handling_status = 'resolved' THEN 'resolved'
              WHEN s.assignee IS NOT NULL THEN 'assigned'
              ELSE coalesce(s.handling_status, 'open') END AS handling
  FROM incidents_current AS i
  LEFT JOIN incident_state_current AS s USING (incident_id))
SELECT h.incident_id, h.title, {_label("h.status", INCIDENT_STATUS_ZH)} AS status_zh,
       {_label("h.severity", SEVERITY_ZH)} AS severity_zh, {_local("h.started_at")} AS started_at,
       h.handling, {_label("h.handling", HANDLING_ZH)} AS handling_zh, h.assignee,
       {_local("h.acknowledged_at")} AS acknowledged_at, {_local("h.resolved_at")} AS resolved_at,
       date_diff('second', h.started_at, h.acknowledged_at) / 60.0 AS ack_minutes,
       date_diff('second', h.started_at, h.resolved_at) / 60.0 AS resolve_minutes,
       coalesce(h.comments, 0) AS comments
FROM h""",
    columns=(
        _c("incident_id", "VARCHAR", "事件编号"),
        _c("title", "VARCHAR", "事件"),
        _c("status_zh", "VARCHAR", "告警状态"),
        _c("severity_zh", "VARCHAR", "级别"),
        _c("started_at", "TIMESTAMP", "开始时间"),
        _c("handling", "VARCHAR", "处理状态代码"),
        _c("handling_zh", "VARCHAR", "处理状态"),
        _c("assignee", "VARCHAR", "处理人"),
        _c("acknowledged_at", "TIMESTAMP", "确认时间"),
        _c("resolved_at", "TIMESTAMP", "解决时间"),
        _c("ack_minutes", "DOUBLE", "确认用时（分钟）"),
        _c("resolve_minutes", "DOUBLE", "解决用时（分钟）"),
        _c("comments", "INTEGER", "评论数"),
    ),
    metrics=(
        _m("incidents", "COUNT(*)", "事件数"),
        _m("unresolved", "COUNT(*) FILTER (WHERE handling <> 'resolved')", "未解决事件数"),
        _m("mtta", "AVG(ack_minutes)", "平均确认用时（分钟）", ".1f"),
        _m("mttr", "AVG(resolve_minutes)", "平均解决用时（分钟）", ".1f"),
    ),
    main_dttm="started_at",
)

#: The columns every alert dataset begins with.
_ALERT_COLUMNS = (
    _c("alert_id", "VARCHAR", "告警编号"),
    _c("incident_id", "VARCHAR", "事件编号"),
    _c("alertname", "VARCHAR", "告警名称"),
    _c("title", "VARCHAR", "告警"),
    _c("severity", "VARCHAR", "级别代码"),
    _c("severity_zh", "VARCHAR", "级别"),
    _c("entity_id", "VARCHAR", "对象"),
)

ALERTS = Dataset(
    key="alerts",
    name="告警（归入事件）",
    description="Alerts and the incident each was converged into (gold.incident_alerts_current).",
    sql=f"""SELECT a.alert_id, a.incident_id, a.alertname, a.title, a.severity,
       {_label("a.severity", SEVERITY_ZH)} AS severity_zh, a.entity_id, a.source,
       {_local("a.starts_at")} AS starts_at, a.is_root_cause, a.muted_by IS NOT NULL AS muted
FROM incident_alerts_current AS a""",
    columns=(
        *_ALERT_COLUMNS,
        _c("source", "VARCHAR", "来源"),
        _c("starts_at", "TIMESTAMP", "开始时间"),
        _c("is_root_cause", "BOOLEAN", "根因告警"),
        _c("muted", "BOOLEAN", "已静默"),
    ),
    metrics=(
        _m("alerts", "COUNT(*)", "告警数"),
        _m("entities", "COUNT(DISTINCT entity_id)", "告警对象数"),
    ),
    main_dttm="starts_at",
)

SELF_ALERTS = Dataset(
    key="self_alerts",
    name="平台自身告警（含今日实时）",
    description="The platform's own alerts (source opslake-platform: failed pipeline runs, API "
    "error bursts, Superset and collection down) and their incidents "
    "(gold.incident_alerts_now: the daily incident_alerts_current and the live "
    "incident_alerts_live of the days the daily pipeline has not built yet, a view over the "
    "lake), so an alert shows within the collection interval, without a rebuild.",
    sql=f"""SELECT a.alert_id, a.incident_id, a.alertname, a.title, a.severity,
       {_label("a.severity", SEVERITY_ZH)} AS severity_zh, a.entity_id,
       {_local("a.starts_at")} AS starts_at, a.live
FROM incident_alerts_now AS a
WHERE a.source = 'opslake-platform'""",
    columns=(
        *_ALERT_COLUMNS,
        _c("starts_at", "TIMESTAMP", "开始时间"),
        _c("live", "BOOLEAN", "实时告警"),
    ),
    metrics=(_m("alerts", "COUNT(*)", "告警数"),),
    main_dttm="starts_at",
)

CONVERGENCE = Dataset(
    key="convergence",
    name="告警收敛（逐日）",
    description="Alerts, incidents and the compression ratio per day (gold.incident_stats).",
    sql="""SELECT CAST(s.dt AS DATE) AS day, s.alerts, s.incidents, s.muted_alerts
FROM incident_stats AS s""",
    columns=(
        _c("day", "DATE", "日期"),
        _c("alerts", "BIGINT", "告警数"),
        _c("incidents", "BIGINT", "事件数"),
        _c("muted_alerts", "BIGINT", "静默告警数"),
    ),
    metrics=(
        _m("alerts", "SUM(alerts)", "告警数"),
        _m("incidents", "SUM(incidents)", "事件数"),
        _m("compression", "SUM(alerts) / NULLIF(SUM(incidents), 0)", "告警压缩比", ".1f"),
    ),
    main_dttm="day",
)

SERVICE_LEVELS = Dataset(
    key="service_levels",
    name="服务水平（逐日）",
    description="SLA attainment, MTTA, MTTR and changes per business and day "
    "(gold.service_levels); business '(all)' is the total.",
    sql="""SELECT s.day, s.business, s.incidents_opened, s.incidents_resolved, s.mtta_minutes,
       s.mttr_minutes, s.sla_met, s.sla_breached, s.sla_attainment, s.requests_opened,
       s.problems_opened, s.changes, s.failed_changes, s.open_incidents_end_of_day,
       s.business = '(all)' AS is_total
FROM service_levels AS s""",
    columns=(
        _c("day", "DATE", "日期"),
        _c("business", "VARCHAR", "业务系统"),
        _c("incidents_opened", "BIGINT", "新增事件"),
        _c("incidents_resolved", "BIGINT", "已解决事件"),
        _c("mtta_minutes", "DOUBLE", "平均响应时长（分钟）"),
        _c("mttr_minutes", "DOUBLE", "平均修复时长（分钟）"),
        _c("sla_met", "BIGINT", "SLA达标"),
        _c("sla_breached", "BIGINT", "SLA超时"),
        _c("sla_attainment", "DOUBLE", "SLA达成率"),
        _c("requests_opened", "BIGINT", "服务请求"),
        _c("problems_opened", "BIGINT", "问题单"),
        _c("changes", "BIGINT", "变更数"),
        _c("failed_changes", "BIGINT", "失败变更"),
        _c("open_incidents_end_of_day", "BIGINT", "日终未关闭事件"),
        _c("is_total", "BOOLEAN", "全省合计"),
    ),
    metrics=(
        _m(
            "sla_attainment",
            "SUM(sla_met) / NULLIF(SUM(sla_met) + SUM(sla_breached), 0)",
            "SLA达成率",
            PERCENT,
        ),
        _m(
            "mtta",
            "SUM(mtta_minutes * incidents_opened) / NULLIF(SUM(incidents_opened) "
            "FILTER (WHERE mtta_minutes IS NOT NULL), 0)",
            "平均响应时长（分钟）",
            ".1f",
        ),
        _m(
            "mttr",
            "SUM(mttr_minutes * incidents_resolved) / NULLIF(SUM(incidents_resolved) "
            "FILTER (WHERE mttr_minutes IS NOT NULL), 0)",
            "平均修复时长（分钟）",
            ".1f",
        ),
        _m("incidents_opened", "SUM(incidents_opened)", "新增事件"),
        _m("changes", "SUM(changes)", "变更数"),
        _m("failed_changes", "SUM(failed_changes)", "失败变更"),
        _m(
            "change_failure_rate",
            "SUM(failed_changes) / NULLIF(SUM(changes), 0)",
            "变更失败率",
            PERCENT,
        ),
    ),
    main_dttm="day",
)

ASSETS = Dataset(
    key="asset_ledger",
    name="资源台账（最新）",
    description="The CMDB ledger on its newest day (gold.asset_ledger): lifecycle, warranty, "
    "support contract and licence expiry.",
    sql=f"""SELECT a.entity_id, a.name, a.kind, {_label("a.kind", KIND_ZH)} AS kind_zh, a.type,
       a.department, a.business, a.region, a.location, a.vendor, a.model, a.lifecycle_state,
       {_label("a.lifecycle_state", LIFECYCLE_ZH)} AS lifecycle_zh, a.purchase_date,
       a.warranty_end, a.contract_end, a.licence_end, a.days_to_warranty_end,
       a.days_to_contract_end, a.days_to_licence_end,
       least(CASE WHEN a.days_to_warranty_end >= 0 THEN a.days_to_warranty_end END,
             CASE WHEN a.days_to_contract_end >= 0 THEN a.days_to_contract_end END,
             CASE WHEN a.days_to_licence_end >= 0 THEN a.days_to_licence_end END)
       AS days_to_next_expiry, a.owner
FROM asset_ledger AS a
WHERE a.dt = (SELECT max(dt) FROM asset_ledger)""",
    columns=(
        _c("entity_id", "VARCHAR", "配置项"),
        _c("name", "VARCHAR", "名称"),
        _c("kind", "VARCHAR", "对象大类代码"),
        _c("kind_zh", "VARCHAR", "对象大类"),
        _c("type", "VARCHAR", "类型"),
        _c("department", "VARCHAR", "部门"),
        _c("business", "VARCHAR", "业务系统"),
        _c("region", "VARCHAR", "地市"),
        _c("location", "VARCHAR", "位置"),
        _c("vendor", "VARCHAR", "厂商"),
        _c("model", "VARCHAR", "型号"),
        _c("lifecycle_state", "VARCHAR", "生命周期代码"),
        _c("lifecycle_zh", "VARCHAR", "生命周期"),
        _c("purchase_date", "DATE", "采购日期"),
        _c("warranty_end", "DATE", "保修截止"),
        _c("contract_end", "DATE", "维保合同截止"),
        _c("licence_end", "DATE", "许可证截止"),
        _c("days_to_warranty_end", "INTEGER", "距保修截止（天）"),
        _c("days_to_contract_end", "INTEGER", "距维保截止（天）"),
        _c("days_to_licence_end", "INTEGER", "距许可证截止（天）"),
        _c("days_to_next_expiry", "INTEGER", "距最近到期（天）"),
        _c("owner", "VARCHAR", "负责人"),
    ),
    metrics=(
        _m("cis", "COUNT(*)", "配置项数"),
        _m(
            "warranty_expiring",
            "COUNT(*) FILTER (WHERE days_to_warranty_end BETWEEN 0 AND "
            "90 AND lifecycle_state <> 'retired')",
            "90天内保修到期",
        ),
        _m(
            "warranty_expired",
            "COUNT(*) FILTER (WHERE days_to_warranty_end < 0 AND lifecycle_state <> 'retired')",
            "已过保",
        ),
        _m(
            "contract_expiring",
            "COUNT(*) FILTER (WHERE days_to_contract_end BETWEEN 0 AND "
            "90 AND lifecycle_state <> 'retired')",
            "90天内维保到期",
        ),
        _m(
            "licence_expiring",
            "COUNT(*) FILTER (WHERE days_to_licence_end BETWEEN 0 AND "
            "90 AND lifecycle_state <> 'retired')",
            "90天内许可证到期",
        ),
    ),
    by_department=True,
)

QUALITY_SCORES = Dataset(
    key="quality_scores",
    name="数据质量评分（逐日）",
    description="Data quality scores per day: overall, per source, table and metric "
    "(gold.quality_scores).",
    sql="""SELECT q.day, q.subject_kind, CASE q.subject_kind WHEN 'overall' THEN '总体'
       WHEN 'source' THEN '数据源' WHEN 'table' THEN '数据表' WHEN 'metric' THEN '指标'
       ELSE q.subject_kind END AS subject_kind_zh, q.subject, q.score,
       q.day = (SELECT max(day) FROM quality_scores) AS is_latest
FROM quality_scores AS q""",
    columns=(
        _c("day", "DATE", "日期"),
        _c("subject_kind", "VARCHAR", "对象类别代码"),
        _c("subject_kind_zh", "VARCHAR", "对象类别"),
        _c("subject", "VARCHAR", "评分对象"),
        _c("score", "DOUBLE", "质量分"),
        _c("is_latest", "BOOLEAN", "最新一天"),
    ),
    metrics=(
        _m("avg_score", "AVG(score)", "平均质量分", ".1f"),
        _m("min_score", "MIN(score)", "最低质量分", ".1f"),
    ),
    main_dttm="day",
)

QUALITY_CHECKS = Dataset(
    key="quality_checks",
    name="数据质量检查结果",
    description="Every data quality check run: layer, table, outcome and what was observed "
    "(gold.quality_results).",
    sql="""SELECT r.day, r.layer, r."table" AS table_name, r."check" AS check_name, r.kind,
       r.severity, r.passed, CASE WHEN r.passed THEN '通过' ELSE '未通过' END AS outcome,
       r.observed, r.threshold, r.rows, r.unexpected_rows,
       r.day = (SELECT max(day) FROM quality_results) AS is_latest
FROM quality_results AS r""",
    columns=(
        _c("day", "DATE", "日期"),
        _c("layer", "VARCHAR", "层"),
        _c("table_name", "VARCHAR", "数据表"),
        _c("check_name", "VARCHAR", "检查项"),
        _c("kind", "VARCHAR", "检查类型"),
        _c("severity", "VARCHAR", "严重性"),
        _c("passed", "BOOLEAN", "通过"),
        _c("outcome", "VARCHAR", "结果"),
        _c("observed", "VARCHAR", "观测值"),
        _c("threshold", "VARCHAR", "阈值"),
        _c("rows", "BIGINT", "行数"),
        _c("unexpected_rows", "BIGINT", "异常行数"),
        _c("is_latest", "BOOLEAN", "最新一天"),
    ),
    metrics=(
        _m("checks", "COUNT(*)", "检查数"),
        _m("pass_rate", "AVG(CASE WHEN passed THEN 1.0 ELSE 0.0 END)", "通过率", PERCENT),
        _m("failed", "COUNT(*) FILTER (WHERE NOT passed)", "未通过数"),
    ),
    main_dttm="day",
)

METRIC_QUALITY = Dataset(
    key="metric_quality",
    name="指标完整性（逐日）",
    description="Completeness and freshness of every catalog metric per day (gold.metric_quality).",
    sql="""SELECT q.day, q.metric_id, c.name_zh_cn AS metric_name, q.family, q.completeness,
       q.freshness_minutes, q.rows
FROM metric_quality AS q LEFT JOIN catalog_metrics AS c USING (metric_id)""",
    columns=(
        _c("day", "DATE", "日期"),
        _c("metric_id", "VARCHAR", "指标编号"),
        _c("metric_name", "VARCHAR", "指标"),
        _c("family", "VARCHAR", "指标族"),
        _c("completeness", "DOUBLE", "完整率"),
        _c("freshness_minutes", "DOUBLE", "延迟（分钟）"),
        _c("rows", "BIGINT", "行数"),
    ),
    metrics=(
        _m("completeness", "AVG(completeness)", "平均完整率", PERCENT),
        _m("freshness", "MAX(freshness_minutes)", "最大延迟（分钟）", ".0f"),
    ),
    main_dttm="day",
)

ANOMALIES = Dataset(
    key="anomalies",
    name="异常检测结果",
    description="Anomaly scores per series and time (gold.anomalies); is_event marks the points "
    "judged anomalous.",
    sql=f"""SELECT {_local("a.ts")} AS ts, a.entity_id, a.metric, a.value, a.expected, a.score,
       a.detector, coalesce(a.is_event, false) AS is_event, a.explanation
FROM anomalies AS a""",
    columns=(
        _c("ts", "TIMESTAMP", "时间"),
        _c("entity_id", "VARCHAR", "对象"),
        _c("metric", "VARCHAR", "指标"),
        _c("value", "DOUBLE", "实际值"),
        _c("expected", "DOUBLE", "期望值"),
        _c("score", "DOUBLE", "异常分"),
        _c("detector", "VARCHAR", "检测器"),
        _c("is_event", "BOOLEAN", "异常事件"),
        _c("explanation", "VARCHAR", "说明"),
    ),
    metrics=(
        _m("events", "COUNT(*) FILTER (WHERE is_event)", "异常事件数"),
        _m("max_score", "MAX(score)", "最高异常分", ".2f"),
        _m("avg_score", "AVG(score)", "平均异常分", ".2f"),
        _m("entities", "COUNT(DISTINCT entity_id) FILTER (WHERE is_event)", "异常对象数"),
    ),
    main_dttm="ts",
)

FORECASTS = Dataset(
    key="forecasts",
    name="指标预测",
    description="Forecasts per series with 80 % and 95 % intervals (gold.forecasts), newest "
    "forecast day only.",
    sql=f"""SELECT {_local("f.ts")} AS ts, f.entity_id, f.metric, f.method, f.point, f.lower_95,
       f.upper_95, f.made_on
FROM forecasts AS f
WHERE f.made_on = (SELECT max(made_on) FROM forecasts)""",
    columns=(
        _c("ts", "TIMESTAMP", "时间"),
        _c("entity_id", "VARCHAR", "对象"),
        _c("metric", "VARCHAR", "指标"),
        _c("method", "VARCHAR", "方法"),
        _c("point", "DOUBLE", "预测值"),
        _c("lower_95", "DOUBLE", "95%下界"),
        _c("upper_95", "DOUBLE", "95%上界"),
        _c("made_on", "DATE", "预测日期"),
    ),
    metrics=(
        _m("point", "AVG(point)", "预测值（均值）", ".3~g"),
        _m("upper_95", "AVG(upper_95)", "95%上界（均值）", ".3~g"),
        _m("lower_95", "AVG(lower_95)", "95%下界（均值）", ".3~g"),
    ),
    main_dttm="ts",
)

CAPACITY = Dataset(
    key="capacity",
    name="容量预测",
    description="Capacity use, growth per day and projected exhaustion per series "
    "(gold.capacity), newest day only.",
    sql="""SELECT c.entity_id, c.metric, c.current_value / NULLIF(c.capacity, 0) AS used_ratio,
       c.slope_per_day, c.exhaustion_date, c.days_left, c.made_on
FROM capacity AS c
WHERE c.made_on = (SELECT max(made_on) FROM capacity)""",
    columns=(
        _c("entity_id", "VARCHAR", "对象"),
        _c("metric", "VARCHAR", "指标"),
        _c("used_ratio", "DOUBLE", "当前使用率"),
        _c("slope_per_day", "DOUBLE", "日增长"),
        _c("exhaustion_date", "DATE", "预计耗尽日期"),
        _c("days_left", "DOUBLE", "剩余天数"),
        _c("made_on", "DATE", "计算日期"),
    ),
    metrics=(
        _m("series", "COUNT(*)", "序列数"),
        _m("max_used", "MAX(used_ratio)", "最高使用率", PERCENT),
    ),
)

CATALOG = Dataset(
    key="catalog_metrics",
    name="指标目录",
    description="The metrics catalog: every metric with names (zh-CN, en), category, type, "
    "unit, owner, status and version (catalog_metrics).",
    sql=f"""SELECT c.metric_id, c.name_zh_cn, c.name_en, c.category,
       {_label("c.category", CATEGORY_ZH)} AS category_zh, c.family, c.type, c.unit,
       c.status, c.owner, c.current_version, c.description
FROM catalog_metrics AS c""",
    columns=(
        _c("metric_id", "VARCHAR", "指标编号"),
        _c("name_zh_cn", "VARCHAR", "指标名称"),
        _c("name_en", "VARCHAR", "英文名称"),
        _c("category", "VARCHAR", "类别代码"),
        _c("category_zh", "VARCHAR", "类别"),
        _c("family", "VARCHAR", "指标族"),
        _c("type", "VARCHAR", "类型"),
        _c("unit", "VARCHAR", "单位"),
        _c("status", "VARCHAR", "状态"),
        _c("owner", "VARCHAR", "负责人"),
        _c("current_version", "VARCHAR", "版本"),
        _c("description", "VARCHAR", "说明"),
    ),
    metrics=(
        _m("metrics", "COUNT(*)", "指标数"),
        _m("published", "COUNT(*) FILTER (WHERE status = 'published')", "已发布指标数"),
    ),
)

LINEAGE = Dataset(
    key="catalog_lineage",
    name="指标血缘",
    description="Lineage edges of every catalog metric down to landing (catalog_lineage).",
    sql="""SELECT l.metric_id, c.name_zh_cn AS metric_name, l.depth, l.node, l.upstream,
       l.relation
FROM catalog_lineage AS l LEFT JOIN catalog_metrics AS c USING (metric_id)""",
    columns=(
        _c("metric_id", "VARCHAR", "指标编号"),
        _c("metric_name", "VARCHAR", "指标"),
        _c("depth", "INTEGER", "层级"),
        _c("node", "VARCHAR", "节点"),
        _c("upstream", "VARCHAR", "上游"),
        _c("relation", "VARCHAR", "关系"),
    ),
    metrics=(
        _m("upstreams", "COUNT(DISTINCT upstream)", "上游节点数"),
        _m("edges", "COUNT(*)", "血缘边数"),
    ),
)

USAGE = Dataset(
    key="metric_usage",
    name="指标使用记录",
    description="Who computed or read which catalog metric (gold.metric_usage).",
    sql=f"""SELECT {_local("u.at")} AS at, u.principal_kind,
       {_label("u.principal_kind", PRINCIPAL_ZH)} AS principal_kind_zh, u.principal, u.action,
       u.metric_id, c.name_zh_cn AS metric_name, u.rows
FROM metric_usage AS u LEFT JOIN catalog_metrics AS c USING (metric_id)""",
    columns=(
        _c("at", "TIMESTAMP", "时间"),
        _c("principal_kind", "VARCHAR", "使用方类型代码"),
        _c("principal_kind_zh", "VARCHAR", "使用方类型"),
        _c("principal", "VARCHAR", "使用方"),
        _c("action", "VARCHAR", "动作"),
        _c("metric_id", "VARCHAR", "指标编号"),
        _c("metric_name", "VARCHAR", "指标"),
        _c("rows", "BIGINT", "行数"),
    ),
    metrics=(
        _m("uses", "COUNT(*)", "使用次数"),
        _m("metrics", "COUNT(DISTINCT metric_id)", "涉及指标数"),
    ),
    main_dttm="at",
)


def catalog_metric(m: MetricDefinition) -> Metric:
    """A catalog metric as a saved metric over ``metric_values`` (its rows, re-aggregated).

    Averages and ratios are re-aggregated from numerator and denominator, counts summed,
    extremes and percentiles take the extreme; ``grain`` and ``scope`` are chosen by the chart.
    """
    only = f"FILTER (WHERE metric_id = '{m.id}')"
    agg = m.measure.agg if m.measure else None
    if m.type == "ratio" or agg == "avg":
        expression = (
            f"coalesce(SUM(numerator) {only} / NULLIF(SUM(denominator) {only}, 0), "
            f"AVG(value) {only})"
        )
    elif agg == "count":
        expression = f"SUM(value) {only}"
    elif agg == "min":
        expression = f"MIN(value) {only}"
    elif agg in ("max", "p95", "count_distinct") or m.type == "cumulative":
        expression = f"MAX(value) {only}"
    else:
        expression = f"AVG(value) {only}"
    return Metric(
        name=m.id,
        expression=expression,
        label=m.name("zh-CN"),
        description=f"{m.name('en')}: {m.description}",
        d3format=PERCENT if m.unit == "ratio" else None,
    )


def metric_values(definitions: list[MetricDefinition]) -> Dataset:
    """The catalog's values with every published catalog metric as a saved metric."""
    return Dataset(
        key="metric_values",
        name="目录指标值",
        description="Values of every catalog metric (gold.metric_values) per grain (1h, 1d), "
        "scope (all, business, department, region, object kind/type, entity) and "
        "bucket, local time; metrics are named by catalog id.",
        sql=f"""SELECT v.metric_id, c.name_zh_cn AS metric_name, c.name_en AS metric_name_en,
       c.category, {_label("c.category", CATEGORY_ZH)} AS category_zh, c.unit, v.grain,
       {_local("v.bucket_start")} AS bucket_start, v.scope, v.entity_id, v.business,
       v.department, v.region, v.object_kind, {_label("v.object_kind", KIND_ZH)}
       AS object_kind_zh, v.object_type, {_label("v.object_type", OBJECT_TYPE_ZH)}
       AS object_type_zh, v.value, v.numerator, v.denominator
FROM metric_values AS v LEFT JOIN catalog_metrics AS c USING (metric_id)""",
        columns=(
            _c("metric_id", "VARCHAR", "指标编号"),
            _c("metric_name", "VARCHAR", "指标"),
            _c("metric_name_en", "VARCHAR", "指标（英文）"),
            _c("category", "VARCHAR", "类别代码"),
            _c("category_zh", "VARCHAR", "类别"),
            _c("unit", "VARCHAR", "单位"),
            _c("grain", "VARCHAR", "粒度"),
            _c("bucket_start", "TIMESTAMP", "时间"),
            _c("scope", "VARCHAR", "统计范围"),
            _c("entity_id", "VARCHAR", "对象"),
            _c("business", "VARCHAR", "业务系统"),
            _c("department", "VARCHAR", "部门"),
            _c("region", "VARCHAR", "地市"),
            _c("object_kind", "VARCHAR", "对象大类代码"),
            _c("object_kind_zh", "VARCHAR", "对象大类"),
            _c("object_type", "VARCHAR", "对象类型代码"),
            _c("object_type_zh", "VARCHAR", "对象类型"),
            _c("value", "DOUBLE", "值"),
            _c("numerator", "DOUBLE", "分子"),
            _c("denominator", "DOUBLE", "分母"),
        ),
        metrics=tuple(catalog_metric(m) for m in definitions if m.status == "published"),
        main_dttm="bucket_start",
        by_department=True,
    )


SECURITY_ALERTS = Dataset(
    key="security_alerts",
    name="安全设备告警",
    description="Every security device of the newest asset ledger with the alerts raised on "
    "it (gold.incident_alerts_current); a device without alerts is one row with "
    "no alert.",
    sql=f"""SELECT a.entity_id, a.name, a.type, {_label("a.type", SECURITY_TYPE_ZH)} AS type_zh,
       a.department, a.business, a.vendor, al.alert_id, al.alertname, al.title, al.severity,
       {_label("al.severity", SEVERITY_ZH)} AS severity_zh, al.source,
       {_local("al.starts_at")} AS starts_at, al.incident_id
FROM asset_ledger AS a
LEFT JOIN incident_alerts_current AS al ON al.entity_id = a.entity_id
WHERE a.dt = (SELECT max(dt) FROM asset_ledger) AND a.kind = 'security'""",
    columns=(
        _c("entity_id", "VARCHAR", "设备"),
        _c("name", "VARCHAR", "设备名称"),
        _c("type", "VARCHAR", "设备类型代码"),
        _c("type_zh", "VARCHAR", "设备类型"),
        _c("department", "VARCHAR", "部门"),
        _c("business", "VARCHAR", "业务系统"),
        _c("vendor", "VARCHAR", "厂商"),
        _c("alert_id", "VARCHAR", "告警编号"),
        _c("alertname", "VARCHAR", "告警名称"),
        _c("title", "VARCHAR", "告警"),
        _c("severity", "VARCHAR", "级别代码"),
        _c("severity_zh", "VARCHAR", "级别"),
        _c("source", "VARCHAR", "来源"),
        _c("starts_at", "TIMESTAMP", "开始时间"),
        _c("incident_id", "VARCHAR", "事件编号"),
    ),
    metrics=(
        _m("devices", "COUNT(DISTINCT entity_id)", "安全设备数"),
        _m("alerts", "COUNT(alert_id)", "安全告警数"),
        _m(
            "alerted_devices",
            "COUNT(DISTINCT entity_id) FILTER (WHERE alert_id IS NOT NULL)",
            "告警设备数",
        ),
        _m("incidents", "COUNT(DISTINCT incident_id)", "涉及事件数"),
    ),
    main_dttm="starts_at",
)

LAKE_INVENTORY = Dataset(
    key="lake_inventory",
    name="数据湖容量（逐日分区）",
    description="Files, rows and bytes of every table partition of the lake, landing included "
    "(lake_inventory, taken when the warehouse was built).",
    sql=f"""SELECT CAST(i.dt AS DATE) AS day, i.layer, {_label("i.layer", LAYER_ZH)} AS layer_zh,
       i."table" AS table_name, i.files, i.rows, i.bytes,
       i.dt = (SELECT max(dt) FROM lake_inventory) AS is_latest
FROM lake_inventory AS i""",
    columns=(
        _c("day", "DATE", "日期"),
        _c("layer", "VARCHAR", "层代码"),
        _c("layer_zh", "VARCHAR", "层"),
        _c("table_name", "VARCHAR", "数据表"),
        _c("files", "BIGINT", "文件数"),
        _c("rows", "BIGINT", "行数"),
        _c("bytes", "BIGINT", "字节数"),
        _c("is_latest", "BOOLEAN", "最新一天"),
    ),
    metrics=(
        _m("size_mb", "SUM(bytes) / 1048576.0", "容量（MB）", ".1f"),
        _m("rows", "SUM(rows)", "行数"),
        _m("files", "SUM(files)", "文件数"),
        _m("tables", "COUNT(DISTINCT layer || '/' || table_name)", "数据表数"),
    ),
    main_dttm="day",
)

PIPELINE_RUNS = Dataset(
    key="pipeline_runs",
    name="管道运行与质量检查",
    description="Every data quality check the pipeline ran, with the run that ran it "
    "(gold.quality_log): runs, checks and failures over time.",
    sql=f"""SELECT {_local('q."at"')} AS checked_at, q.day, q.run_id, q.layer, q."table" AS
       table_name, q."check" AS check_name, q.severity, q.passed
FROM quality_log AS q""",
    columns=(
        _c("checked_at", "TIMESTAMP", "检查时间"),
        _c("day", "DATE", "数据日期"),
        _c("run_id", "VARCHAR", "运行编号"),
        _c("layer", "VARCHAR", "层"),
        _c("table_name", "VARCHAR", "数据表"),
        _c("check_name", "VARCHAR", "检查项"),
        _c("severity", "VARCHAR", "严重性"),
        _c("passed", "BOOLEAN", "通过"),
    ),
    metrics=(
        _m("runs", "COUNT(DISTINCT run_id)", "管道运行次数"),
        _m("failed_runs", "COUNT(DISTINCT run_id) FILTER (WHERE NOT passed)", "有未通过检查的运行"),
        _m("checks", "COUNT(*)", "检查数"),
        _m("failed", "COUNT(*) FILTER (WHERE NOT passed)", "未通过检查数"),
    ),
    main_dttm="checked_at",
)

SELF_METRICS = Dataset(
    key="self_metrics",
    name="平台自身指标（每小时）",
    description="OpsLake's own metrics (the opslake-self collection task and the collectors' "
    "run costs: API requests, errors and latency, pipeline runs, lake size, Superset, "
    "collection lag), hourly per component (gold.metric_rollup_1h, metrics opslake_*).",
    sql=f"""SELECT {_local("r.bucket_start")} AS bucket_start, r.metric, r.entity_id, r.samples,
       r.avg * r.samples AS total, r.max, r.last
FROM metric_rollup_1h AS r
WHERE starts_with(r.metric, 'opslake_')""",
    columns=(
        _c("bucket_start", "TIMESTAMP", "时段"),
        _c("metric", "VARCHAR", "指标"),
        _c("entity_id", "VARCHAR", "组件"),
        _c("samples", "BIGINT", "采样数"),
        _c("total", "DOUBLE", "合计"),
        _c("max", "DOUBLE", "最大值"),
        _c("last", "DOUBLE", "最新值"),
    ),
    metrics=(
        _m("api_requests", "SUM(total) FILTER (WHERE metric = 'opslake_api_requests')", "请求数"),
        _m("api_5xx", "SUM(total) FILTER (WHERE metric = 'opslake_api_errors_5xx')", "5xx错误数"),
        _m("api_4xx", "SUM(total) FILTER (WHERE metric = 'opslake_api_errors_4xx')", "4xx错误数"),
        _m(
            "api_latency_p95",
            "MAX(max) FILTER (WHERE metric = 'opslake_api_latency_p95_seconds')",
            "时延P95（秒）",
            ".3f",
        ),
        _m(
            "failed_runs",
            "SUM(total) FILTER (WHERE metric = 'opslake_pipeline_failed_runs')",
            "失败运行数",
        ),
        _m(
            "step_retries",
            "SUM(total) FILTER (WHERE metric = 'opslake_pipeline_step_retries')",
            "步骤重试数",
        ),
    ),
    main_dttm="bucket_start",
)

#: Each effect KPI's baseline: (column, label, numerator, denominator) summed over the
#: baseline days; MTTA and MTTR weigh each day by the incidents it timed.
_BASELINES = (
    (
        "mtta",
        "基线平均响应时长（分钟）",
        "m.mtta_minutes * m.incidents_opened",
        "CASE WHEN m.mtta_minutes IS NOT NULL THEN m.incidents_opened END",
    ),
    (
        "mttr",
        "基线平均修复时长（分钟）",
        "m.mttr_minutes * m.incidents_resolved",
        "CASE WHEN m.mttr_minutes IS NOT NULL THEN m.incidents_resolved END",
    ),
    ("sla", "基线SLA达成率", "m.sla_met", "m.sla_met + m.sla_breached"),
    ("compression", "基线告警压缩比", "m.alerts", "m.incidents"),
    ("automation", "基线自动定位占比", "m.located", "m.converged"),
)
_BASELINE_SQL = ",\n  ".join(
    f"sum({numerator}) FILTER (WHERE m.is_baseline) OVER () / NULLIF(sum({denominator}) "
    f"FILTER (WHERE m.is_baseline) OVER (), 0) AS base_{name}"
    for name, _, numerator, denominator in _BASELINES
)


def _effect_metrics() -> tuple[Metric, ...]:
    """Each effect KPI, its baseline (a constant column) and its change against it."""
    kpis = (
        SERVICE_LEVELS.metric("mtta"),
        SERVICE_LEVELS.metric("mttr"),
        SERVICE_LEVELS.metric("sla_attainment"),
        CONVERGENCE.metric("compression"),
        _m("automation", "SUM(located) / NULLIF(SUM(converged), 0)", "自动定位根因占比", PERCENT),
    )
    out: list[Metric] = []
    for kpi, (column, *_) in zip(kpis, _BASELINES, strict=True):
        base = f"MAX(base_{column})"
        # Shares change by percentage points; durations and ratios by their relative size.
        change = (
            f"({kpi.expression}) - {base}"
            if kpi.d3format == PERCENT
            else f"({kpi.expression}) / NULLIF({base}, 0) - 1"
        )
        out += [
            kpi,
            _m(f"base_{kpi.name}", base, f"基线{kpi.label}", kpi.d3format),
            _m(f"{kpi.name}_vs_base", change, f"{kpi.label}较基线", "+.1%"),
        ]
    return tuple(out)


EFFECT = Dataset(
    key="platform_effect",
    name="运维成效（逐日，对比基线）",
    description=f"Province-wide MTTA, MTTR, SLA attainment, alert compression and the share "
    f"of incidents whose root cause was located automatically, per UTC day "
    f"(gold.service_levels, incident_stats, incidents_current); base_* hold the "
    f"baseline: the first {BASELINE_DAYS} days the lake has service levels for.",
    sql=f"""WITH days AS (
  SELECT s.day, s.incidents_opened, s.incidents_resolved, s.mtta_minutes, s.mttr_minutes,
         s.sla_met, s.sla_breached, coalesce(c.alerts, 0) AS alerts,
         coalesce(c.incidents, 0) AS incidents, coalesce(r.located, 0) AS located,
         coalesce(r.converged, 0) AS converged
  FROM service_levels AS s
  LEFT JOIN incident_stats AS c ON CAST(c.dt AS DATE) = s.day
  LEFT JOIN (SELECT CAST(timezone('UTC', i.started_at) AS DATE) AS day,
                    count(*) FILTER (WHERE i.root_cause IS NOT NULL) AS located,
                    count(*) AS converged
             FROM incidents_current AS i GROUP BY 1) AS r ON r.day = s.day
  WHERE s.business = '(all)'),
marked AS (
  SELECT *, day < (SELECT min(day) FROM days) + {BASELINE_DAYS} AS is_baseline FROM days)
SELECT m.*,
  {_BASELINE_SQL}
FROM marked AS m""",
    columns=(
        _c("day", "DATE", "日期"),
        _c("incidents_opened", "BIGINT", "新增事件"),
        _c("incidents_resolved", "BIGINT", "已解决事件"),
        _c("mtta_minutes", "DOUBLE", "平均响应时长（分钟）"),
        _c("mttr_minutes", "DOUBLE", "平均修复时长（分钟）"),
        _c("sla_met", "BIGINT", "SLA达标"),
        _c("sla_breached", "BIGINT", "SLA超时"),
        _c("alerts", "BIGINT", "告警数"),
        _c("incidents", "BIGINT", "收敛事件数"),
        _c("located", "BIGINT", "自动定位根因事件数"),
        _c("converged", "BIGINT", "事件数"),
        _c("is_baseline", "BOOLEAN", "基线期"),
        *(_c(f"base_{name}", "DOUBLE", label) for name, label, _, _ in _BASELINES),
    ),
    metrics=_effect_metrics(),
    main_dttm="day",
)

STATIC_DATASETS = (
    ENTITY_HEALTH,
    BUSINESS_HEALTH,
    INCIDENTS,
    INCIDENT_HANDLING,
    ALERTS,
    SELF_ALERTS,
    CONVERGENCE,
    SERVICE_LEVELS,
    ASSETS,
    QUALITY_SCORES,
    QUALITY_CHECKS,
    METRIC_QUALITY,
    ANOMALIES,
    FORECASTS,
    CAPACITY,
    CATALOG,
    LINEAGE,
    USAGE,
    SECURITY_ALERTS,
    LAKE_INVENTORY,
    PIPELINE_RUNS,
    SELF_METRICS,
    EFFECT,
)
