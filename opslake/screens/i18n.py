"""The screens in zh-CN, zh-TW and en (S6.9e): one translation table, keyed by the zh-CN text.

The screens are written in zh-CN (:mod:`opslake.screens.screens`); :func:`localize` turns
them into another language's copies: dashboard, chart, filter and dataset titles, column and
metric labels, and the Chinese labels the datasets' SQL gives codes (``kind_zh``, …). Each
language is its own dashboard, ``<slug>`` for zh-CN and ``<slug>-en`` / ``<slug>-zh-tw`` for
the others (the portal links to the user's language by this convention); each has its own
datasets, because a dataset's column and metric labels are what charts show. Catalog metrics
carry their three names in ``metrics/`` and are labelled from there.

A text without a translation is an error when the bundle is generated (and a unit test),
never a silently Chinese label on an English screen.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import replace

from opslake.errors import ConfigError
from opslake.screens.model import Chart, Dataset, Metric, NativeFilter, Row, Screen

LANGUAGES = ("zh-CN", "zh-TW", "en")
DEFAULT_LANGUAGE = "zh-CN"
#: What a language's copy adds to a screen's slug (and to chart and dataset keys).
SUFFIX = {"zh-CN": "", "zh-TW": "-zh-tw", "en": "-en"}
#: Superset's own UI language for each (its locale names).
SUPERSET_LOCALE = {"zh-CN": "zh", "zh-TW": "zh_TW", "en": "en"}

_CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")
#: A single-quoted SQL literal holding Chinese text (a code's label).
_SQL_TEXT = re.compile(r"'([^']*[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef][^']*)'")


def slug_for(slug: str, language: str) -> str:
    """The slug of a screen's copy in ``language`` (``ops`` → ``ops-en``)."""
    return slug + SUFFIX[_known(language)]


def _known(language: str) -> str:
    if language not in SUFFIX:
        raise ConfigError(f"language {language!r} is not one of {', '.join(LANGUAGES)}")
    return language


def is_chinese(text: str) -> bool:
    """Whether ``text`` holds Chinese characters (and so needs a translation)."""
    return bool(_CJK.search(text))


def translate(text: str, language: str) -> str:
    """``text`` (zh-CN) in ``language``; a missing translation says where to add it."""
    if _known(language) == DEFAULT_LANGUAGE or not is_chinese(text):
        return text
    try:
        return TEXTS[text][LANGUAGES.index(language) - 1]
    except KeyError:
        raise ConfigError(
            f"no {language} text for {text!r}: add it to TEXTS in opslake/screens/i18n.py"
        ) from None


def _sql(sql: str, language: str) -> str:
    """SQL with its Chinese literals (labels of codes) in ``language``."""
    return _SQL_TEXT.sub(
        lambda m: "'" + translate(m.group(1), language).replace("'", "''") + "'", sql
    )


def sql_texts(sql: str) -> list[str]:
    """The Chinese literals of a dataset's SQL."""
    return _SQL_TEXT.findall(sql)


class _Localizer:
    """Copies of datasets, charts, filters and screens in one language (each made once)."""

    def __init__(self, language: str, metric_names: Mapping[str, Mapping[str, str]]) -> None:
        self.language = _known(language)
        self.metric_names = metric_names
        self.datasets: dict[str, Dataset] = {}
        self.charts: dict[str, Chart] = {}

    def text(self, text: str) -> str:
        return translate(text, self.language)

    def metric(self, m: Metric) -> Metric:
        names = self.metric_names.get(m.name)
        if names is not None:  # a catalog metric: its names are in metrics/
            label = names.get(self.language)
            if not label:
                raise ConfigError(
                    f"catalog metric {m.name} has no {self.language} name; add it to its "
                    "names in metrics/"
                )
            return replace(m, label=label)
        return replace(m, label=self.text(m.label))

    def dataset(self, d: Dataset) -> Dataset:
        if d.key not in self.datasets:
            self.datasets[d.key] = replace(
                d,
                key=d.key + SUFFIX[self.language],
                name=self.text(d.name),
                sql=_sql(d.sql, self.language),
                columns=tuple(
                    replace(c, label=self.text(c.label)) if c.label else c for c in d.columns
                ),
                metrics=tuple(self.metric(m) for m in d.metrics),
            )
        return self.datasets[d.key]

    def chart(self, c: Chart) -> Chart:
        if c.key not in self.charts:
            self.charts[c.key] = replace(
                c,
                key=c.key + SUFFIX[self.language],
                title=self.text(c.title),
                dataset=self.dataset(c.dataset),
                where=tuple(_sql(w, self.language) for w in c.where),
            )
        return self.charts[c.key]

    def native_filter(self, f: NativeFilter) -> NativeFilter:
        return replace(
            f,
            name=self.text(f.name),
            dataset=self.dataset(f.dataset) if f.dataset else None,
            charts=tuple(self.chart(c) for c in f.charts),
        )

    def screen(self, s: Screen) -> Screen:
        return replace(
            s,
            slug=slug_for(s.slug, self.language),
            title=self.text(s.title),
            rows=tuple(
                Row(tuple((self.chart(c), w) for c, w in row.cells), row.height) for row in s.rows
            ),
            filters=tuple(self.native_filter(f) for f in s.filters),
        )


def localize(
    screens: list[Screen], language: str, metric_names: Mapping[str, Mapping[str, str]]
) -> list[Screen]:
    """The zh-CN ``screens`` in ``language`` (their datasets in that language too).

    ``metric_names``: catalog metric id → {language: name}, the labels of catalog metrics.
    """
    if _known(language) == DEFAULT_LANGUAGE:
        return list(screens)
    localizer = _Localizer(language, metric_names)
    return [localizer.screen(s) for s in screens]


def texts(screens: list[Screen], catalog_metrics: set[str]) -> Iterator[tuple[str, str]]:
    """(where, zh-CN text) of every Chinese text the screens show, catalog metrics aside."""
    seen: set[str] = set()

    def dataset(d: Dataset) -> Iterator[tuple[str, str]]:
        if d.key in seen:
            return
        seen.add(d.key)
        yield f"dataset {d.key}", d.name
        yield from ((f"dataset {d.key} column {c.name}", c.label) for c in d.columns if c.label)
        yield from (
            (f"dataset {d.key} metric {m.name}", m.label)
            for m in d.metrics
            if m.name not in catalog_metrics
        )
        yield from ((f"dataset {d.key} SQL", t) for t in sql_texts(d.sql))

    for s in screens:
        yield f"screen {s.slug}", s.title
        for f in s.filters:
            yield f"screen {s.slug} filter {f.key}", f.name
        for c in s.charts:
            yield f"chart {c.key}", c.title
            yield from ((f"chart {c.key} where", t) for w in c.where for t in sql_texts(w))
            yield from dataset(c.dataset)


def check(screens: list[Screen], catalog_metrics: set[str]) -> list[str]:
    """What lacks a translation (empty when every text has all three languages)."""
    missing = []
    for where, text in texts(screens, catalog_metrics):
        if not is_chinese(text):
            continue
        entry = TEXTS.get(text)
        if entry is None or not all(entry) or len(entry) != len(LANGUAGES) - 1:
            missing.append(f"{where}: {text!r}")
    return missing


#: Every zh-CN text of the screens → (zh-TW, en), in the order the screens first show them.
TEXTS: dict[str, tuple[str, str]] = {
    "领导驾驶舱": ("領導駕駛艙", "Leadership cockpit"),
    "时间范围": ("時間範圍", "Time range"),
    "业务系统": ("業務系統", "Business system"),
    "部门": ("部門", "Department"),
    "平均健康分（最新一小时）": ("平均健康分（最新一小時）", "Average health score (latest hour)"),
    "对象健康（逐小时）": ("物件健康（逐小時）", "Object health (hourly)"),
    "时间": ("時間", "Time"),
    "对象": ("物件", "Object"),
    "对象大类代码": ("物件大類代碼", "Object kind code"),
    "对象大类": ("物件大類", "Object kind"),
    "健康分": ("健康分", "Health score"),
    "状态代码": ("狀態代碼", "Status code"),
    "健康状态": ("健康狀態", "Health status"),
    "活动告警数": ("活動告警數", "Firing alerts"),
    "最高告警级别": ("最高告警級別", "Worst alert severity"),
    "扣分原因": ("扣分原因", "Reason for deductions"),
    "最新一小时": ("最新一小時", "Latest hour"),
    "对象数": ("物件數", "Objects"),
    "平均健康分": ("平均健康分", "Average health score"),
    "最低健康分": ("最低健康分", "Lowest health score"),
    "异常对象数": ("異常物件數", "Unhealthy objects"),
    "机房设施": ("機房設施", "Facilities"),
    "云资源": ("雲資源", "Cloud resources"),
    "应用系统": ("應用系統", "Applications"),
    "平台服务": ("平臺服務", "Platform services"),
    "安全设备": ("安全裝置", "Security devices"),
    "健康": ("健康", "Healthy"),
    "降级": ("降級", "Degraded"),
    "严重": ("嚴重", "Critical"),
    "SLA达成率": ("SLA達成率", "SLA attainment"),
    "服务水平（逐日）": ("服務水平（逐日）", "Service levels (daily)"),
    "日期": ("日期", "Date"),
    "新增事件": ("新增事件", "Incidents opened"),
    "已解决事件": ("已解決事件", "Incidents resolved"),
    "平均响应时长（分钟）": ("平均響應時長（分鐘）", "MTTA (minutes)"),
    "平均修复时长（分钟）": ("平均修復時長（分鐘）", "MTTR (minutes)"),
    "SLA达标": ("SLA達標", "SLA met"),
    "SLA超时": ("SLA超時", "SLA breached"),
    "服务请求": ("服務請求", "Service requests"),
    "问题单": ("問題單", "Problems"),
    "变更数": ("變更數", "Changes"),
    "失败变更": ("失敗變更", "Failed changes"),
    "日终未关闭事件": ("日終未關閉事件", "Incidents open at end of day"),
    "全省合计": ("全省合計", "Province total"),
    "变更失败率": ("變更失敗率", "Change failure rate"),
    "事件数": ("事件數", "Incidents"),
    "事件（告警收敛后）": ("事件（告警收斂後）", "Incidents (converged from alerts)"),
    "事件编号": ("事件編號", "Incident ID"),
    "事件": ("事件", "Incident"),
    "状态": ("狀態", "Status"),
    "级别代码": ("級別代碼", "Severity code"),
    "级别": ("級別", "Severity"),
    "收敛方式": ("收斂方式", "Correlation"),
    "收敛规则": ("收斂規則", "Correlation rule"),
    "开始时间": ("開始時間", "Started at"),
    "恢复时间": ("恢復時間", "Recovered at"),
    "告警数": ("告警數", "Alerts"),
    "影响对象数": ("影響物件數", "Impacted objects"),
    "根因对象": ("根因物件", "Root cause object"),
    "根因置信度": ("根因置信度", "Root cause confidence"),
    "影响业务": ("影響業務", "Impacted businesses"),
    "涉及部门": ("涉及部門", "Departments involved"),
    "持续时长（分钟）": ("持續時長（分鐘）", "Duration (minutes)"),
    "处理中事件数": ("處理中事件數", "Firing incidents"),
    "处理中": ("處理中", "Firing"),
    "已恢复": ("已恢復", "Recovered"),
    "重要": ("重要", "Major"),
    "警告": ("警告", "Warning"),
    "次要": ("次要", "Minor"),
    "提示": ("提示", "Info"),
    "拓扑关联": ("拓撲關聯", "Topology"),
    "规则收敛": ("規則收斂", "Rule"),
    "（未定位）": ("（未定位）", "(not located)"),
    "、": ("、", ", "),
    "数据质量总分（最新）": ("資料質量總分（最新）", "Data quality score (latest)"),
    "数据质量评分（逐日）": ("資料質量評分（逐日）", "Data quality scores (daily)"),
    "对象类别代码": ("物件類別代碼", "Subject kind code"),
    "对象类别": ("物件類別", "Subject kind"),
    "评分对象": ("評分物件", "Subject"),
    "质量分": ("質量分", "Quality score"),
    "最新一天": ("最新一天", "Latest day"),
    "平均质量分": ("平均質量分", "Average quality score"),
    "最低质量分": ("最低質量分", "Lowest quality score"),
    "总体": ("總體", "Overall"),
    "数据源": ("資料來源", "Source"),
    "数据表": ("資料表", "Table"),
    "指标": ("指標", "Metric"),
    "各业务系统健康分（最新一小时）": (
        "各業務系統健康分（最新一小時）",
        "Health per business system (latest hour)",
    ),
    "业务健康（逐小时）": ("業務健康（逐小時）", "Business health (hourly)"),
    "健康对象数": ("健康物件數", "Healthy objects"),
    "降级对象数": ("降級物件數", "Degraded objects"),
    "严重对象数": ("嚴重物件數", "Critical objects"),
    "全省平均健康分趋势": ("全省平均健康分趨勢", "Province average health trend"),
    "各业务服务水平": ("各業務服務水平", "Service levels per business"),
    "事件级别分布": ("事件級別分佈", "Incidents by severity"),
    "运维值班视图": ("運維值班檢視", "On-duty operations"),
    "异常对象数（最新一小时）": ("異常物件數（最新一小時）", "Unhealthy objects (latest hour)"),
    "处理中事件": ("處理中事件", "Firing incidents"),
    "告警总数": ("告警總數", "Total alerts"),
    "告警（归入事件）": ("告警（歸入事件）", "Alerts (grouped into incidents)"),
    "平台自身告警（含今日实时）": (
        "平台自身告警（含今日即時）",
        "Platform alerts (today's live included)",
    ),
    "实时告警": ("即時告警", "Live alert"),
    "告警编号": ("告警編號", "Alert ID"),
    "告警名称": ("告警名稱", "Alert name"),
    "告警": ("告警", "Alert"),
    "来源": ("來源", "Source"),
    "根因告警": ("根因告警", "Root cause alert"),
    "已静默": ("已靜默", "Muted"),
    "告警对象数": ("告警物件數", "Alerted objects"),
    "异常事件数": ("異常事件數", "Anomaly events"),
    "异常检测结果": ("異常檢測結果", "Anomaly detection results"),
    "实际值": ("實際值", "Actual value"),
    "期望值": ("期望值", "Expected value"),
    "异常分": ("異常分", "Anomaly score"),
    "检测器": ("檢測器", "Detector"),
    "异常事件": ("異常事件", "Anomaly event"),
    "说明": ("說明", "Explanation"),
    "最高异常分": ("最高異常分", "Highest anomaly score"),
    "平均异常分": ("平均異常分", "Average anomaly score"),
    "最近事件": ("最近事件", "Latest incidents"),
    "健康分最低的对象（最新一小时）": (
        "健康分最低的物件（最新一小時）",
        "Lowest-health objects (latest hour)",
    ),
    "告警量（每小时，按级别）": ("告警量（每小時，按級別）", "Alerts per hour by severity"),
    "最新异常事件": ("最新異常事件", "Latest anomaly events"),
    "资源运行态势": ("資源運行態勢", "Resource posture"),
    "纳管对象数": ("納管物件數", "Managed objects"),
    "活动告警数（最新一小时）": ("活動告警數（最新一小時）", "Firing alerts (latest hour)"),
    "对象大类分布": ("物件大類分佈", "Objects by kind"),
    "各大类健康状态（最新一小时）": (
        "各大類健康狀態（最新一小時）",
        "Health status per kind (latest hour)",
    ),
    "各大类平均健康分": ("各大類平均健康分", "Average health per kind"),
    "主机CPU使用率（按地市）": ("主機CPU使用率（按地市）", "Host CPU utilisation (by region)"),
    "目录指标值": ("目錄指標值", "Catalog metric values"),
    "指标编号": ("指標編號", "Metric ID"),
    "指标（英文）": ("指標（英文）", "Metric (English)"),
    "类别代码": ("類別代碼", "Category code"),
    "类别": ("類別", "Category"),
    "单位": ("單位", "Unit"),
    "粒度": ("粒度", "Grain"),
    "统计范围": ("統計範圍", "Scope"),
    "地市": ("地市", "Region"),
    "对象类型代码": ("物件類型代碼", "Object type code"),
    "对象类型": ("物件類型", "Object type"),
    "值": ("值", "Value"),
    "分子": ("分子", "Numerator"),
    "分母": ("分母", "Denominator"),
    "服务管理": ("服務管理", "Service management"),
    "数据平台": ("資料平臺", "Data platform"),
    "前端应用": ("前端應用", "Front-end application"),
    "后端服务": ("後端服務", "Back-end service"),
    "数据库": ("資料庫", "Database"),
    "中间件": ("中介軟體", "Middleware"),
    "消息队列": ("訊息佇列", "Message queue"),
    "统一身份认证": ("統一身份認證", "Single sign-on"),
    "交换机": ("交換機", "Switch"),
    "防火墙": ("防火牆", "Firewall"),
    "Web应用防火墙": ("Web應用防火牆", "Web application firewall"),
    "入侵检测": ("入侵檢測", "Intrusion detection"),
    "堡垒机": ("堡壘機", "Bastion host"),
    "机柜进风温度（全省）": ("機櫃進風溫度（全省）", "Rack inlet temperature (province)"),
    "存储池使用率（全省）": ("儲存池使用率（全省）", "Storage pool utilisation (province)"),
    "应用健康": ("應用健康", "Application health"),
    "应用平均健康分（最新一小时）": (
        "應用平均健康分（最新一小時）",
        "Average application health (latest hour)",
    ),
    "异常应用数（最新一小时）": (
        "異常應用數（最新一小時）",
        "Unhealthy applications (latest hour)",
    ),
    "事件影响对象数": ("事件影響物件數", "Objects impacted by incidents"),
    "各业务受影响对象（最新一小时）": (
        "各業務受影響物件（最新一小時）",
        "Impacted objects per business (latest hour)",
    ),
    "应用错误率（按业务）": ("應用錯誤率（按業務）", "Application error ratio (by business)"),
    "事件影响面与根因": ("事件影響面與根因", "Incident reach and root cause"),
    "应用响应时间P95（全省）": (
        "應用響應時間P95（全省）",
        "Application response time P95 (province)",
    ),
    "事件与告警": ("事件與告警", "Events and alerts"),
    "告警收敛（逐日）": ("告警收斂（逐日）", "Alert convergence (daily)"),
    "静默告警数": ("靜默告警數", "Muted alerts"),
    "告警压缩比": ("告警壓縮比", "Alert compression ratio"),
    "告警名称 Top 10": ("告警名稱 Top 10", "Top 10 alert names"),
    "未解决事件（按处理状态、级别）": (
        "未解決事件（按處理狀態、級別）",
        "Unresolved incidents (by handling state and severity)",
    ),
    "事件处理（确认、分派、解决）": (
        "事件處理（確認、分派、解決）",
        "Incident handling (acknowledge, assign, resolve)",
    ),
    "告警状态": ("告警狀態", "Alert status"),
    "处理状态代码": ("處理狀態代碼", "Handling state code"),
    "处理状态": ("處理狀態", "Handling state"),
    "处理人": ("處理人", "Assignee"),
    "确认时间": ("確認時間", "Acknowledged at"),
    "解决时间": ("解決時間", "Resolved at"),
    "确认用时（分钟）": ("確認用時（分鐘）", "Time to acknowledge (minutes)"),
    "解决用时（分钟）": ("解決用時（分鐘）", "Time to resolve (minutes)"),
    "评论数": ("評論數", "Comments"),
    "未解决事件数": ("未解決事件數", "Unresolved incidents"),
    "平均确认用时（分钟）": ("平均確認用時（分鐘）", "Mean time to acknowledge (minutes)"),
    "平均解决用时（分钟）": ("平均解決用時（分鐘）", "Mean time to resolve (minutes)"),
    "未确认": ("未確認", "Not acknowledged"),
    "已确认": ("已確認", "Acknowledged"),
    "已分派": ("已分派", "Assigned"),
    "已解决": ("已解決", "Resolved"),
    "平均响应与修复时长趋势（分钟）": (
        "平均響應與修復時長趨勢（分鐘）",
        "MTTA and MTTR trend (minutes)",
    ),
    "事件处理进展": ("事件處理進展", "Incident handling progress"),
    "服务质量": ("服務質量", "Service quality"),
    "各业务SLA达成率": ("各業務SLA達成率", "SLA attainment per business"),
    "每日变更与失败变更": ("每日變更與失敗變更", "Changes and failed changes per day"),
    "SLA达成率（目录指标，按业务）": (
        "SLA達成率（目錄指標，按業務）",
        "SLA attainment (catalog metric, by business)",
    ),
    "资源台账": ("資源臺賬", "Asset ledger"),
    "配置项总数": ("配置項總數", "Configuration items"),
    "资源台账（最新）": ("資源臺賬（最新）", "Asset ledger (latest)"),
    "配置项": ("配置項", "Configuration item"),
    "名称": ("名稱", "Name"),
    "类型": ("類型", "Type"),
    "位置": ("位置", "Location"),
    "厂商": ("廠商", "Vendor"),
    "型号": ("型號", "Model"),
    "生命周期代码": ("生命週期代碼", "Lifecycle code"),
    "生命周期": ("生命週期", "Lifecycle"),
    "采购日期": ("採購日期", "Purchase date"),
    "保修截止": ("保修截止", "Warranty end"),
    "维保合同截止": ("維保合同截止", "Support contract end"),
    "许可证截止": ("許可證截止", "Licence end"),
    "距保修截止（天）": ("距保修截止（天）", "Days to warranty end"),
    "距维保截止（天）": ("距維保截止（天）", "Days to contract end"),
    "距许可证截止（天）": ("距許可證截止（天）", "Days to licence end"),
    "距最近到期（天）": ("距最近到期（天）", "Days to next expiry"),
    "负责人": ("負責人", "Owner"),
    "配置项数": ("配置項數", "Configuration items"),
    "90天内保修到期": ("90天內保修到期", "Warranties expiring within 90 days"),
    "已过保": ("已過保", "Out of warranty"),
    "90天内维保到期": ("90天內維保到期", "Support contracts expiring within 90 days"),
    "90天内许可证到期": ("90天內許可證到期", "Licences expiring within 90 days"),
    "规划中": ("規劃中", "Planned"),
    "在用": ("在用", "In service"),
    "维护中": ("維護中", "Under maintenance"),
    "已退役": ("已退役", "Retired"),
    "各部门配置项（按大类）": (
        "各部門配置項（按大類）",
        "Configuration items per department (by kind)",
    ),
    "生命周期状态": ("生命週期狀態", "Lifecycle state"),
    "即将到期（保修、维保、许可证 90 天内）": (
        "即將到期（保修、維保、許可證 90 天內）",
        "Expiring soon (warranty, support, licence within 90 days)",
    ),
    "数据质量": ("資料質量", "Data quality"),
    "检查通过率（最新一天）": ("檢查通過率（最新一天）", "Check pass rate (latest day)"),
    "数据质量检查结果": ("資料質量檢查結果", "Data quality check results"),
    "层": ("層", "Layer"),
    "检查项": ("檢查項", "Check"),
    "检查类型": ("檢查類型", "Check type"),
    "严重性": ("嚴重性", "Severity"),
    "通过": ("通過", "Passed"),
    "结果": ("結果", "Outcome"),
    "观测值": ("觀測值", "Observed"),
    "阈值": ("閾值", "Threshold"),
    "行数": ("行數", "Rows"),
    "异常行数": ("異常行數", "Failing rows"),
    "检查数": ("檢查數", "Checks"),
    "通过率": ("通過率", "Pass rate"),
    "未通过数": ("未通過數", "Failed"),
    "未通过": ("未通過", "Failed"),
    "未通过检查数（最新一天）": ("未通過檢查數（最新一天）", "Failed checks (latest day)"),
    "各数据源质量分（最新）": ("各資料來源質量分（最新）", "Quality score per source (latest)"),
    "质量分趋势（按类别）": ("質量分趨勢（按類別）", "Quality score trend (by subject kind)"),
    "检查结果（最新一天，未通过在前）": (
        "檢查結果（最新一天，未通過在前）",
        "Check results (latest day, failed first)",
    ),
    "指标完整率（按指标族）": ("指標完整率（按指標族）", "Metric completeness (by family)"),
    "指标完整性（逐日）": ("指標完整性（逐日）", "Metric completeness (daily)"),
    "指标族": ("指標族", "Metric family"),
    "完整率": ("完整率", "Completeness"),
    "延迟（分钟）": ("延遲（分鐘）", "Delay (minutes)"),
    "平均完整率": ("平均完整率", "Average completeness"),
    "最大延迟（分钟）": ("最大延遲（分鐘）", "Maximum delay (minutes)"),
    "智能分析": ("智慧分析", "Analytics"),
    "最高容量使用率": ("最高容量使用率", "Highest capacity utilisation"),
    "容量预测": ("容量預測", "Capacity forecast"),
    "当前使用率": ("當前使用率", "Current utilisation"),
    "日增长": ("日增長", "Daily growth"),
    "预计耗尽日期": ("預計耗盡日期", "Expected exhaustion date"),
    "剩余天数": ("剩餘天數", "Days left"),
    "计算日期": ("計算日期", "Computed on"),
    "序列数": ("序列數", "Series"),
    "最高使用率": ("最高使用率", "Highest utilisation"),
    "异常分（每小时最高，按检测器）": (
        "異常分（每小時最高，按檢測器）",
        "Anomaly score (hourly maximum, by detector)",
    ),
    "主机CPU使用率预测（均值与95%区间）": (
        "主機CPU使用率預測（均值與95%區間）",
        "Host CPU utilisation forecast (mean and 95% interval)",
    ),
    "指标预测": ("指標預測", "Metric forecasts"),
    "方法": ("方法", "Method"),
    "预测值": ("預測值", "Forecast"),
    "95%下界": ("95%下界", "95% lower bound"),
    "95%上界": ("95%上界", "95% upper bound"),
    "预测日期": ("預測日期", "Forecast date"),
    "预测值（均值）": ("預測值（均值）", "Forecast (mean)"),
    "95%上界（均值）": ("95%上界（均值）", "95% upper bound (mean)"),
    "95%下界（均值）": ("95%下界（均值）", "95% lower bound (mean)"),
    "异常最多的对象 Top 10": ("異常最多的物件 Top 10", "Top 10 objects by anomalies"),
    "容量使用率最高的序列": (
        "容量使用率最高的序列",
        "Series with the highest capacity utilisation",
    ),
    "指标地图": ("指標地圖", "Metric map"),
    "指标总数": ("指標總數", "Total metrics"),
    "指标目录": ("指標目錄", "Metrics catalog"),
    "指标名称": ("指標名稱", "Metric name"),
    "英文名称": ("英文名稱", "English name"),
    "版本": ("版本", "Version"),
    "指标数": ("指標數", "Metrics"),
    "已发布指标数": ("已釋出指標數", "Published metrics"),
    "已发布指标": ("已釋出指標", "Published metrics"),
    "指标使用次数": ("指標使用次數", "Metric uses"),
    "指标使用记录": ("指標使用記錄", "Metric usage log"),
    "使用方类型代码": ("使用方類型代碼", "User kind code"),
    "使用方类型": ("使用方類型", "User kind"),
    "使用方": ("使用方", "User"),
    "动作": ("動作", "Action"),
    "使用次数": ("使用次數", "Uses"),
    "涉及指标数": ("涉及指標數", "Metrics used"),
    "调度作业": ("排程作業", "Scheduled job"),
    "数据服务": ("資料服務", "Data service"),
    "大屏": ("大屏", "Wall screen"),
    "命令行": ("命令列", "Command line"),
    "分析笔记本": ("分析筆記本", "Analysis notebook"),
    "指标按类别": ("指標按類別", "Metrics by category"),
    "指标按负责人": ("指標按負責人", "Metrics by owner"),
    "血缘最深的指标 Top 15（上游节点数）": (
        "血緣最深的指標 Top 15（上游節點數）",
        "Top 15 metrics by lineage depth (upstream nodes)",
    ),
    "指标血缘": ("指標血緣", "Metric lineage"),
    "层级": ("層級", "Depth"),
    "节点": ("節點", "Node"),
    "上游": ("上游", "Upstream"),
    "关系": ("關係", "Relation"),
    "上游节点数": ("上游節點數", "Upstream nodes"),
    "血缘边数": ("血緣邊數", "Lineage edges"),
    "指标使用（按使用方）": ("指標使用（按使用方）", "Metric use (by user kind)"),
    "网络质量": ("網路質量", "Network quality"),
    "交换机端口平均利用率": ("交換機埠平均利用率", "Average switch port utilisation"),
    "交换机端口平均错包率（每秒）": (
        "交換機埠平均錯包率（每秒）",
        "Average switch port error rate (per second)",
    ),
    "应用拨测可用率": ("應用撥測可用率", "Application probe availability"),
    "平台TCP拨测时延P95（毫秒，最高）": (
        "平臺TCP撥測時延P95（毫秒，最高）",
        "Platform TCP probe latency P95 (ms, highest)",
    ),
    "各交换机端口利用率": ("各交換機埠利用率", "Port utilisation per switch"),
    "各交换机端口错包率（每秒）": (
        "各交換機埠錯包率（每秒）",
        "Port error rate per switch (per second)",
    ),
    "各业务拨测可用率": ("各業務撥測可用率", "Probe availability per business"),
    "应用拨测时延P95（毫秒，按业务）": (
        "應用撥測時延P95（毫秒，按業務）",
        "Application probe latency P95 (ms, by business)",
    ),
    "交换机端口排行（错包率高在前）": (
        "交換機埠排行（錯包率高在前）",
        "Switch port ranking (highest error rate first)",
    ),
    "安全态势": ("安全態勢", "Security posture"),
    "WAF平均拦截速率（每秒）": ("WAF平均攔截速率（每秒）", "Average WAF block rate (per second)"),
    "入侵检测平均告警速率（每分钟）": (
        "入侵檢測平均告警速率（每分鐘）",
        "Average IDS alert rate (per minute)",
    ),
    "安全告警数": ("安全告警數", "Security alerts"),
    "安全设备告警": ("安全裝置告警", "Security device alerts"),
    "设备": ("裝置", "Device"),
    "设备名称": ("裝置名稱", "Device name"),
    "设备类型代码": ("裝置類型代碼", "Device type code"),
    "设备类型": ("裝置類型", "Device type"),
    "安全设备数": ("安全裝置數", "Security devices"),
    "告警设备数": ("告警裝置數", "Alerted devices"),
    "涉及事件数": ("涉及事件數", "Incidents involved"),
    "WAF拦截速率（每秒，按设备）": (
        "WAF攔截速率（每秒，按裝置）",
        "WAF block rate (per second, by device)",
    ),
    "入侵检测告警速率（每分钟，按设备）": (
        "入侵檢測告警速率（每分鐘，按裝置）",
        "IDS alert rate (per minute, by device)",
    ),
    "安全设备CPU使用率（按设备）": (
        "安全裝置CPU使用率（按裝置）",
        "Security device CPU utilisation (by device)",
    ),
    "安全设备构成": ("安全裝置構成", "Security devices by type"),
    "安全设备告警排行": ("安全裝置告警排行", "Security devices by alerts"),
    "平台自身运行": ("平臺自身運行", "Platform self-monitoring"),
    "数据湖容量（MB）": ("資料湖容量（MB）", "Data lake size (MB)"),
    "数据湖容量（逐日分区）": ("資料湖容量（逐日分區）", "Data lake size (daily partitions)"),
    "层代码": ("層代碼", "Layer code"),
    "文件数": ("檔案數", "Files"),
    "字节数": ("位元組數", "Bytes"),
    "容量（MB）": ("容量（MB）", "Size (MB)"),
    "数据表数": ("資料表數", "Tables"),
    "落地层": ("落地層", "Landing"),
    "原始层": ("原始層", "Bronze"),
    "标准层": ("標準層", "Silver"),
    "汇总层": ("彙總層", "Gold"),
    "管道运行次数": ("管道執行次數", "Pipeline runs"),
    "管道运行与质量检查": ("管道執行與質量檢查", "Pipeline runs and quality checks"),
    "检查时间": ("檢查時間", "Checked at"),
    "数据日期": ("資料日期", "Data date"),
    "运行编号": ("執行編號", "Run ID"),
    "有未通过检查的运行": ("有未通過檢查的執行", "Runs with failed checks"),
    "未通过检查数": ("未通過檢查數", "Failed checks"),
    "管道运行失败告警": ("管道執行失敗告警", "Pipeline failure alerts"),
    "数据湖每日新增容量（MB，按层）": (
        "資料湖每日新增容量（MB，按層）",
        "Data lake daily growth (MB, by layer)",
    ),
    "采集延迟（分钟）": ("採集延遲（分鐘）", "Collection lag (minutes)"),
    "管道质量检查（每天，检查数与未通过）": (
        "管道質量檢查（每天，檢查數與未通過）",
        "Pipeline quality checks (daily: checks and failures)",
    ),
    "指标采样接收数（每小时）": ("指標取樣接收數（每小時）", "Metric samples received (hourly)"),
    "数据量最大的表 Top 10（行数）": ("資料量最大的表 Top 10（行數）", "Top 10 tables by rows"),
    "运维成效": ("運維成效", "Operations effectiveness"),
    "平均响应时长较基线": ("平均響應時長較基線", "MTTA vs baseline"),
    "运维成效（逐日，对比基线）": (
        "運維成效（逐日，對比基線）",
        "Operations effectiveness (daily, vs baseline)",
    ),
    "收敛事件数": ("收斂事件數", "Converged incidents"),
    "自动定位根因事件数": ("自動定位根因事件數", "Incidents with root cause located automatically"),
    "基线期": ("基線期", "Baseline period"),
    "基线平均响应时长（分钟）": ("基線平均響應時長（分鐘）", "Baseline MTTA (minutes)"),
    "基线平均修复时长（分钟）": ("基線平均修復時長（分鐘）", "Baseline MTTR (minutes)"),
    "基线SLA达成率": ("基線SLA達成率", "Baseline SLA attainment"),
    "基线告警压缩比": ("基線告警壓縮比", "Baseline alert compression ratio"),
    "基线自动定位占比": ("基線自動定位佔比", "Baseline automatic location share"),
    "平均响应时长（分钟）较基线": ("平均響應時長（分鐘）較基線", "MTTA (minutes) vs baseline"),
    "平均修复时长（分钟）较基线": ("平均修復時長（分鐘）較基線", "MTTR (minutes) vs baseline"),
    "SLA达成率较基线": ("SLA達成率較基線", "SLA attainment vs baseline"),
    "告警压缩比较基线": ("告警壓縮比較基線", "Alert compression ratio vs baseline"),
    "自动定位根因占比": ("自動定位根因佔比", "Share of root causes located automatically"),
    "基线自动定位根因占比": (
        "基線自動定位根因佔比",
        "Baseline share of root causes located automatically",
    ),
    "自动定位根因占比较基线": (
        "自動定位根因佔比較基線",
        "Share of root causes located automatically vs baseline",
    ),
    "平均修复时长较基线": ("平均修復時長較基線", "MTTR vs baseline"),
    "SLA达成率较基线（百分点）": (
        "SLA達成率較基線（百分點）",
        "SLA attainment vs baseline (percentage points)",
    ),
    "平均响应时长与基线（分钟）": ("平均響應時長與基線（分鐘）", "MTTA and baseline (minutes)"),
    "平均修复时长与基线（分钟）": ("平均修復時長與基線（分鐘）", "MTTR and baseline (minutes)"),
    "SLA达成率与基线": ("SLA達成率與基線", "SLA attainment and baseline"),
    "告警压缩比与基线": ("告警壓縮比與基線", "Alert compression ratio and baseline"),
    "自动定位根因占比与基线": (
        "自動定位根因佔比與基線",
        "Share of root causes located automatically and baseline",
    ),
    "业务链路与用户体验": ("業務鏈路與使用者體驗", "Business call chain and user experience"),
    "拨测时延P95（毫秒，最高）": ("撥測時延P95（毫秒，最高）", "Probe latency P95 (ms, highest)"),
    "应用平均错误率": ("應用平均錯誤率", "Average application error ratio"),
    "应用响应时间P95（秒，最高）": (
        "應用響應時間P95（秒，最高）",
        "Application response time P95 (s, highest)",
    ),
    "各业务链路响应时间P95（秒，前端应用→后端服务）": (
        "各業務鏈路響應時間P95（秒，前端應用→後端服務）",
        "Response time P95 per business call chain (s, front-end app → back-end services)",
    ),
    "各业务链路错误率（前端应用→后端服务）": (
        "各業務鏈路錯誤率（前端應用→後端服務）",
        "Error ratio per business call chain (front-end app → back-end services)",
    ),
    "业务链路各环节（请求、错误率、P95）": (
        "業務鏈路各環節（請求、錯誤率、P95）",
        "Each tier of the business call chain (requests, error ratio, P95)",
    ),
    # 平台自身运行: the platform's own metrics and alerts.
    "数据服务请求与错误（每小时）": (
        "資料服務請求與錯誤（每小時）",
        "Data service requests and errors (hourly)",
    ),
    "平台自身指标（每小时）": ("平臺自身指標（每小時）", "Platform self-metrics (hourly)"),
    "时段": ("時段", "Period"),
    "组件": ("元件", "Component"),
    "采样数": ("取樣數", "Samples"),
    "合计": ("合計", "Total"),
    "最大值": ("最大值", "Maximum"),
    "最新值": ("最新值", "Latest value"),
    "请求数": ("請求數", "Requests"),
    "5xx错误数": ("5xx錯誤數", "5xx errors"),
    "4xx错误数": ("4xx錯誤數", "4xx errors"),
    "时延P95（秒）": ("時延P95（秒）", "Latency P95 (s)"),
    "失败运行数": ("失敗運行數", "Failed runs"),
    "步骤重试数": ("步驟重試數", "Step retries"),
    "数据服务时延P95（秒）": ("資料服務時延P95（秒）", "Data service latency P95 (s)"),
    "管道失败运行与步骤重试（每小时）": (
        "管道失敗運行與步驟重試（每小時）",
        "Pipeline failed runs and step retries (hourly)",
    ),
    "平台自身告警（管道失败、数据服务错误、大屏与采集）": (
        "平臺自身告警（管道失敗、資料服務錯誤、大屏與採集）",
        "Platform alerts (pipeline failures, data service errors, screens and collection)",
    ),
}
