"""What a notification says about an incident, and who handles it (the ITSM assignee group)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from zoneinfo import ZoneInfo

import pyarrow as pa

from opslake.alerting.channels import Message
from opslake.alerting.dispatch import Shift

SEVERITY_ZH = {
    "critical": "紧急",
    "major": "重要",
    "minor": "次要",
    "warning": "警告",
    "info": "提示",
}
STATUS_ZH = {"firing": "告警", "resolved": "已恢复"}


def assignee_groups(
    incidents: Sequence[Mapping[str, object]], tickets: pa.Table
) -> dict[str, str | None]:
    """Per incident, the ITSM group on most tickets of its probable cause (else of its CIs)."""
    by_ci: dict[str, Counter] = {}
    for ci, group in zip(
        tickets.column("entity_id").to_pylist(),
        tickets.column("assignee_group").to_pylist(),
        strict=True,
    ):
        if ci and group:
            by_ci.setdefault(ci, Counter())[group] += 1
    out: dict[str, str | None] = {}
    for inc in incidents:
        cis = [inc.get("root_cause"), *(inc.get("entities") or [])]  # type: ignore[misc]
        counts = next((by_ci[c] for c in cis if c in by_ci), None)
        out[str(inc["incident_id"])] = counts.most_common(1)[0][0] if counts else None
    return out


def render(
    inc: Mapping[str, object],
    transition: str,
    shifts: Sequence[Shift],
    timezone: str = "Asia/Shanghai",
) -> Message:
    """The message for one incident transition (Chinese, local time)."""
    tz = ZoneInfo(timezone)
    sev = str(inc["severity"])
    state = transition.split("#")[0]  # firing#1: fired again after resolving
    enrichment = json.loads(str(inc.get("enrichment") or "{}"))
    causes = json.loads(str(inc.get("root_causes") or "[]"))
    started = inc["started_at"].astimezone(tz)  # type: ignore[union-attr]
    lines = [f"级别：{SEVERITY_ZH.get(sev, sev)}（{sev}）", f"开始：{started:%Y-%m-%d %H:%M:%S}"]
    if state == "resolved" and inc.get("ended_at"):
        lines.append(f"恢复：{inc['ended_at'].astimezone(tz):%Y-%m-%d %H:%M:%S}")  # type: ignore[union-attr]
    lines.append(f"告警：{inc['alert_count']} 条，涉及 {inc['entity_count']} 个配置项")
    if causes:
        top = causes[0]
        lines.append(f"疑似根因：{top['entity_id']}（得分 {top['score']:.2f}）")
    for key, label in (("businesses", "影响业务"), ("departments", "责任部门")):
        if inc.get(key):
            lines.append(f"{label}：{'、'.join(inc[key])}")  # type: ignore[arg-type]
    for change in enrichment.get("recent_changes", [])[:3]:
        lines.append(f"近期变更：{change['ticket_id']} {change['title'] or ''}".rstrip())
    for name, url in list(enrichment.get("runbooks", {}).items())[:3]:
        lines.append(f"处置手册：[{name}]({url})")
    if shifts:
        lines.append("值班：" + "、".join(s.name for s in shifts))
    subject = f"[{STATUS_ZH.get(state, state)}][{SEVERITY_ZH.get(sev, sev)}] {inc['title']}"
    document = {
        "incident_id": inc["incident_id"],
        "transition": transition,
        "severity": sev,
        "title": inc["title"],
        "status": inc["status"],
        "started_at": started.isoformat(),
        "root_cause": inc.get("root_cause"),
        "businesses": list(inc.get("businesses") or []),  # type: ignore[call-overload]
        "entities": list(inc.get("entities") or [])[:50],  # type: ignore[call-overload]
        "alert_count": inc["alert_count"],
    }
    return Message(
        subject,
        tuple(lines),
        document,
        tuple(s.mobile for s in shifts if s.mobile),
        tuple(s.email for s in shifts if s.email),
    )
