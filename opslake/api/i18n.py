"""The portal's own words in its three languages (S6.9e): one table, key → zh-CN, zh-TW, en.

Pages call ``t(key, **values)`` (:func:`translator`); a value in braces is filled in with
:meth:`str.format`. Every key has all three languages (``tests/unit/test_portal_i18n.py``).
Messages from the API (errors and their fixes) stay as the API words them.
"""

from __future__ import annotations

from collections.abc import Callable

from opslake.api.workbench import LANGUAGES

#: Each language's name in itself, for the chooser.
LANGUAGE_NAMES = {"zh-CN": "简体中文", "zh-TW": "繁體中文", "en": "English"}

#: key → (zh-CN, zh-TW, en)
LABELS: dict[str, tuple[str, str, str]] = {
    "portal": ("门户", "入口網站", "Portal"),
    "sign_out": ("退出", "登出", "Sign out"),
    "language": ("语言", "語言", "Language"),
    "save": ("保存", "儲存", "Save"),
    "back": ("返回门户", "返回入口網站", "Back to the portal"),
    "workbench_of": ("{user} 的工作台", "{user} 的工作台", "{user}'s workbench"),
    "role_ops_engineer": ("运维工程师", "維運工程師", "Operations engineer"),
    "role_leadership": ("领导", "主管", "Leadership"),
    "role_data_engineer": ("数据工程师", "資料工程師", "Data engineer"),
    "role_dept_viewer": ("部门用户", "部門使用者", "Department viewer"),
    "role_admin": ("管理员", "管理員", "Administrator"),
    "my_incidents": ("我的事件", "我的事件", "My incidents"),
    "assigned_to_me": ("指派给我", "指派給我", "Assigned to me"),
    "open": ("未解决", "未解決", "Open"),
    "my_alerts": ("我的告警", "我的告警", "My alerts"),
    "my_alerts_hint": (
        "指派给我的事件的告警。",
        "指派給我的事件的告警。",
        "The alerts of the incidents assigned to you.",
    ),
    "none_assigned": (
        "没有指派给我的事件。",
        "沒有指派給我的事件。",
        "No incident is assigned to you.",
    ),
    "cockpit": ("领导驾驶舱", "主管駕駛艙", "Cockpit"),
    "open_incidents": ("未解决事件", "未解決事件", "Open incidents"),
    "latest_incidents": (
        "最近事件（新的在前）",
        "最近事件（新的在前）",
        "Latest incidents, newest first",
    ),
    "pipeline": ("管道状态", "管線狀態", "Pipeline state"),
    "job": ("作业", "作業", "Job"),
    "status": ("状态", "狀態", "Status"),
    "partition": ("分区", "分區", "Partition"),
    "started": ("开始", "開始", "Started"),
    "ended": ("结束", "結束", "Ended"),
    "no_runs": (
        "尚无运行记录；运行每日管道：",
        "尚無執行記錄；執行每日管線：",
        "No runs recorded yet; run the daily pipeline:",
    ),
    "quality": ("数据质量", "資料品質", "Data quality"),
    "layer": ("层", "層", "Layer"),
    "table": ("表", "資料表", "Table"),
    "passed": ("通过", "通過", "Passed"),
    "score": ("得分", "得分", "Score"),
    "failed_count": ("{n} 项失败", "{n} 項失敗", "{n} failed"),
    "failed_checks": ("失败的检查", "失敗的檢查", "failed checks"),
    "no_checks": ("尚无检查记录。", "尚無檢查記錄。", "No checks recorded yet."),
    "my_departments": ("本部门", "本部門", "My departments"),
    "services": ("服务", "服務", "Services"),
    "department": ("部门", "部門", "Department"),
    "departments": ("部门", "部門", "Departments"),
    "business": ("业务", "業務", "Business"),
    "cis": ("配置项", "組態項目", "CIs"),
    "incidents": ("事件", "事件", "Incidents"),
    "administration": ("管理", "管理", "Administration"),
    "admin_hint": (
        "用户和密钥在命令行管理（管理操作需要动态口令），或经 /v1/admin/keys。",
        "使用者和金鑰在命令列管理（管理操作需要動態密碼），或經 /v1/admin/keys。",
        "Users and keys are administered from the CLI (with a TOTP code) or /v1/admin/keys.",
    ),
    "my_workbench": ("我的工作台", "我的工作台", "My workbench"),
    "unpin": ("取消固定", "取消釘選", "Unpin"),
    "nothing_pinned": ("尚未固定任何内容。", "尚未釘選任何內容。", "Nothing pinned yet."),
    "pin_metric": ("固定指标", "釘選指標", "Pin a metric"),
    "pin_screen": ("固定大屏", "釘選大螢幕", "Pin a screen"),
    "pin": ("固定", "釘選", "Pin"),
    "quick_links": ("快捷入口", "快速連結", "Quick links"),
    "screens": ("大屏", "大螢幕", "Screens"),
    "topology": ("拓扑", "拓撲", "Topology"),
    "metrics_catalog": ("指标目录", "指標目錄", "Metrics catalog"),
    "none": ("无。", "無。", "None."),
    "more": ("还有 {n} 条", "還有 {n} 筆", "{n} more"),
    "all": ("全部", "全部", "all"),
    "incident": ("事件", "事件", "Incident"),
    "severity": ("级别", "級別", "Severity"),
    "alert_status": ("告警状态", "告警狀態", "Alerts"),
    "handling": ("处理", "處理", "Handling"),
    "assignee": ("处理人", "處理人", "Assignee"),
    "alert": ("告警", "告警", "Alert"),
    "alerts": ("告警", "告警", "Alerts"),
    "entity": ("对象", "對象", "Entity"),
    "acknowledged": ("确认", "確認", "Acknowledged"),
    "resolved": ("解决", "解決", "Resolved"),
    "group": ("值班组", "值班組", "on-call group"),
    "history": ("处理记录", "處理記錄", "History"),
    "no_actions": ("尚无处理。", "尚無處理。", "No actions yet."),
    "at": ("时间", "時間", "At"),
    "action": ("操作", "操作", "Action"),
    "actor": ("操作人", "操作人", "By"),
    "comment": ("评论", "評論", "Comment"),
    "note": ("备注", "備註", "Note"),
    "handle": ("处理事件", "處理事件", "Handle the incident"),
    "read_only": (
        "只读：你的角色不能处理事件。",
        "唯讀：你的角色不能處理事件。",
        "Read only: your role does not handle incidents.",
    ),
    "assign_to": ("指派给", "指派給", "Assign to"),
    "users": ("用户", "使用者", "Users"),
    "groups": ("值班组", "值班組", "On-call groups"),
    "done": ("已记录：{action}", "已記錄：{action}", "Recorded: {action}"),
    "not_done": ("未能执行“{action}”", "無法執行「{action}」", "Could not {action}"),
    "act_acknowledge": ("确认", "確認", "acknowledge"),
    "act_assign": ("指派", "指派", "assign"),
    "act_comment": ("评论", "評論", "comment"),
    "act_severity": ("修改级别", "修改級別", "change severity"),
    "act_resolve": ("解决", "解決", "resolve"),
    "act_reopen": ("重新打开", "重新開啟", "reopen"),
    "state_open": ("未处理", "未處理", "open"),
    "state_acknowledged": ("已确认", "已確認", "acknowledged"),
    "state_resolved": ("已解决", "已解決", "resolved"),
    # The topology and entity pages (opslake.api.topology).
    "topo_hint": (
        "业务 → 应用 → 服务 → 虚拟机 → 主机，按当前健康状况着色。",
        "業務 → 應用 → 服務 → 虛擬機 → 主機，依目前健康狀況著色。",
        "Business → app → service → VM → host, coloured by health now.",
    ),
    "topo_summary": (
        "{nodes} 个对象，{edges} 条关系：",
        "{nodes} 個物件，{edges} 條關係：",
        "{nodes} CIs, {edges} edges:",
    ),
    "topo_only_this": ("只看此业务", "只看此業務", "only this one"),
    "topo_no_cis": ("没有您可查看的对象。", "沒有您可檢視的物件。", "No CI you may see."),
    "topo_around": ("周边拓扑", "周邊拓撲", "Topology around it"),
    "topo_healthy": ("健康", "健康", "healthy"),
    "topo_degraded": ("降级", "降級", "degraded"),
    "topo_critical": ("严重", "嚴重", "critical"),
    "topo_unknown": ("未知", "未知", "unknown"),
    "topo_cmdb": ("配置信息", "組態資訊", "CMDB"),
    "topo_health": ("健康度", "健康度", "Health"),
    "topo_neighbours": ("上下游", "上下游", "Neighbours"),
    "topo_direction": ("方向", "方向", "Direction"),
    "topo_hops": ("跳数", "跳數", "Hops"),
    "topo_from": ("从", "從", "From"),
    "topo_relation": ("关系", "關係", "Relation"),
    "topo_to": ("到", "到", "To"),
    "topo_since": ("起始", "起始", "Since"),
    "topo_metrics": ("最新指标", "最新指標", "Latest metrics"),
    "topo_metric": ("指标", "指標", "Metric"),
    "topo_hour": ("小时", "小時", "Hour"),
    "topo_last": ("最新值", "最新值", "Last"),
    "topo_avg": ("平均值", "平均值", "Average"),
    "topo_open": ("未解决事件与告警", "未解決事件與告警", "Open incidents and alerts"),
    "topo_logs": ("日志模板（最近一天）", "日誌範本（最近一天）", "Log templates, last day"),
    "topo_level": ("日志级别", "日誌級別", "Level"),
    "topo_count": ("次数", "次數", "Count"),
    "topo_template": ("模板", "範本", "Template"),
    "topo_last_seen": ("最后出现", "最後出現", "Last seen"),
}


def translator(language: str) -> Callable[..., str]:
    """``t(key, **values)`` in ``language`` (the default language when it is not offered)."""
    index = LANGUAGES.index(language) if language in LANGUAGES else 0

    def t(key: str, **values: object) -> str:
        text = LABELS[key][index]
        return text.format(**values) if values else text

    return t
