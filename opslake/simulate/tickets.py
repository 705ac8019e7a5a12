"""ITSM tickets: incidents, service requests, problems and changes, exported per day as CSV.

Incidents are raised for every fault (linked to its first alert when one fired), for some
other alerts, and by users; problems follow the worst faults; changes are requested in
office hours and implemented at night (22:00-02:00 local), and a few fail and cause a
fault. A ticket lands in the batch of the day it was opened; a lifecycle step that falls
after the end of the simulation is left empty and the ticket stays open.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from opslake.simulate.alerts import Alert
from opslake.simulate.catalog import ASSIGNEE_GROUP, SERVICE_DESK
from opslake.simulate.config import DAY_S, HOUR_S, SimulationConfig, iso, rng_for
from opslake.simulate.estate import Estate
from opslake.simulate.faults import FailedChange, Fault
from opslake.simulate.truth import Tally

HEADER = (
    "ticket_id",
    "type",
    "status",
    "priority",
    "business",
    "ci",
    "title",
    "opened_at",
    "acknowledged_at",
    "resolved_at",
    "closed_at",
    "assignee_group",
    "sla_target_minutes",
    "alert_fingerprint",
    "change_window_start",
    "change_window_end",
    "change_result",
)
#: Resolution targets by priority, in minutes.
SLA_MINUTES = {"P1": 240, "P2": 480, "P3": 1440, "P4": 4320}
#: Minutes to acknowledge and to resolve, by priority (some resolutions breach the SLA).
MTTA = {"P1": (2, 15), "P2": (5, 30), "P3": (10, 120), "P4": (30, 480)}
MTTR = {"P1": (30, 300), "P2": (60, 600), "P3": (240, 2_880), "P4": (480, 5_760)}
CHANGE_TYPES = ("版本升级", "配置调整", "补丁更新", "扩容", "证书更新")
CHANGE_TARGETS = ("svc", "app", "vm", "db", "middleware", "switch", "firewall", "host")
REQUESTS = (
    ("app", "申请开通{name}系统账号"),
    ("vm", "申请{id}扩容"),
    ("firewall", "申请开通防火墙访问策略"),
    ("db", "申请{id}只读账号"),
    ("bastion", "申请堡垒机运维权限"),
)
USER_REPORTS = ("用户反映{name}登录缓慢", "{name}页面无法打开", "{name}提交表单报错")


@dataclass
class Ticket:
    """One ticket with its lifecycle as epoch seconds (None: never reached)."""

    ticket_id: str
    type: str
    priority: str
    business: str
    ci: str
    title: str
    opened: int
    acknowledged: int | None
    resolved: int | None
    closed: int | None
    assignee_group: str
    sla: int | None
    fingerprint: str = ""
    window_start: int | None = None
    window_end: int | None = None
    failed: bool = False


def plan_changes(cfg: SimulationConfig, estate: Estate) -> list[Ticket]:
    """Every change of the run; day one always has a failed one so each run has that case."""
    changes: list[Ticket] = []
    for d in range(cfg.days):
        rng = rng_for(cfg.seed, "changes", d)
        day0 = cfg.day_start(d)
        n_failed = 1 if d == 0 or rng.random() < 0.5 else 0
        todays = []
        for k in range(max(2, cfg.entities // 60)):
            failed = k < n_failed
            pool = estate.ids("svc") if failed else estate.ids(*CHANGE_TARGETS)
            pool = [e for e in pool if estate.entities[e].monitored]
            ci = pool[int(rng.integers(len(pool)))]
            opened = day0 + int(rng.integers(1 * HOUR_S, 7 * HOUR_S))
            window_start = day0 + (14 + int(rng.integers(0, 3))) * HOUR_S  # 22:00-00:00 local
            window_end = window_start + int(rng.integers(1, 4)) * HOUR_S
            e = estate.entities[ci]
            todays.append(
                Ticket(
                    "",
                    "change",
                    "P3",
                    e.business or "",
                    ci,
                    f"变更：{ci} {CHANGE_TYPES[int(rng.integers(len(CHANGE_TYPES)))]}",
                    opened,
                    opened + int(rng.integers(15, 121)) * 60,
                    window_end - int(rng.integers(0, 31)) * 60,
                    window_end + int(rng.integers(2, 11)) * HOUR_S,
                    ASSIGNEE_GROUP[e.kind],
                    None,
                    window_start=window_start,
                    window_end=window_end,
                    failed=failed,
                )
            )
        todays.sort(key=lambda t: (t.opened, t.ci))
        for n, t in enumerate(todays, start=1):
            t.ticket_id = f"CHG-{cfg.day(d).replace('-', '')}-{n:04d}"
        changes += todays
    return changes


def failed_changes(changes: list[Ticket]) -> list[FailedChange]:
    """The changes that will fail, for the fault planner."""
    return [
        FailedChange(c.ticket_id, c.ci, c.window_start or c.opened) for c in changes if c.failed
    ]


class TicketBook:
    """Builds every ticket of the run and writes them per opening day."""

    def __init__(
        self,
        cfg: SimulationConfig,
        estate: Estate,
        changes: list[Ticket],
        faults: list[Fault],
        alerts: list[Alert],
    ) -> None:
        self.cfg, self.estate = cfg, estate
        self.rng = rng_for(cfg.seed, "tickets")
        self.tickets: list[Ticket] = list(changes)
        self._faults(faults, alerts, {c.ticket_id: c for c in changes})
        self._alert_incidents(faults, alerts)
        self._user_tickets()
        self._number()

    def _span(self, lo_hi: tuple[int, int]) -> int:
        return int(self.rng.integers(lo_hi[0], lo_hi[1] + 1)) * 60

    def _incident(
        self,
        priority: str,
        ci: str,
        title: str,
        opened: int,
        resolved: int | None = None,
        fingerprint: str = "",
        group: str | None = None,
    ) -> Ticket:
        e = self.estate.entities[ci]
        acked = opened + self._span(MTTA[priority])
        if resolved is None:
            resolved = acked + self._span(MTTR[priority])
        resolved = max(resolved, acked + 60)
        return Ticket(
            "",
            "incident",
            priority,
            e.business or "",
            ci,
            title,
            opened,
            acked,
            resolved,
            resolved + int(self.rng.integers(1, 25)) * HOUR_S,
            group or ASSIGNEE_GROUP[e.kind],
            SLA_MINUTES[priority],
            fingerprint,
        )

    def _faults(self, faults: list[Fault], alerts: list[Alert], changes: dict[str, Ticket]) -> None:
        for f in faults:
            reached = {i.entity_id for i in f.impacts}
            related = [
                a
                for a in alerts
                if a.notified
                and not a.noise
                and a.entity_id in reached
                and f.start <= a.fired_at <= f.end + 900
            ]
            first = min(related, key=lambda a: (a.fired_at, a.fingerprint), default=None)
            opened = (
                first.fired_at + self._span((2, 10)) if first else f.start + self._span((10, 30))
            )
            priority = (
                "P1" if len(f.affected) >= 10 or f.cause_type in ("db", "pdu", "storage") else "P2"
            )
            title = f"[{priority}] {f.description}，影响{len(f.affected)}个对象"
            inc = self._incident(
                priority,
                f.cause_entity,
                title,
                opened,
                f.end + self._span((5, 30)),
                first.fingerprint if first else "",
            )
            apps = [i for i in f.affected if self.estate.entities[i].type == "app"]
            if not inc.business and apps:
                inc.business = self.estate.entities[apps[0]].business or ""
            self.tickets.append(inc)
            if f.change_ticket_id:  # the change is rolled back once the fault is understood
                change = changes[f.change_ticket_id]
                change.resolved = f.end + self._span((5, 20))
                change.closed = change.resolved + int(self.rng.integers(2, 11)) * HOUR_S
            if priority == "P1" and inc.resolved is not None:
                opened = inc.resolved + self._span((30, 180))
                acked = opened + self._span((60, 240))
                resolved = acked + int(self.rng.integers(2, 11)) * DAY_S
                self.tickets.append(
                    Ticket(
                        "",
                        "problem",
                        "P2",
                        inc.business,
                        f.cause_entity,
                        f"问题：{f.description}根因分析",
                        opened,
                        acked,
                        resolved,
                        resolved + DAY_S,
                        inc.assignee_group,
                        None,
                    )
                )

    def _alert_incidents(self, faults: list[Fault], alerts: list[Alert]) -> None:
        in_fault = {(i.entity_id, f.fault_id) for f in faults for i in f.impacts}
        windows = {f.fault_id: (f.start, f.end + 900) for f in faults}

        def during_fault(a: Alert) -> bool:
            return any(
                (a.entity_id, fid) in in_fault and lo <= a.fired_at <= hi
                for fid, (lo, hi) in windows.items()
            )

        for a in sorted(alerts, key=lambda a: (a.fired_at, a.fingerprint)):
            wanted = a.severity in ("critical", "major") and not a.noise
            chance = 0.2 if wanted else 0.05
            if self.rng.random() >= chance or not a.notified or during_fault(a):
                continue
            priority = "P3" if wanted else "P4"
            resolved = (a.resolved_at + self._span((5, 60))) if a.resolved_at else None
            self.tickets.append(
                self._incident(
                    priority,
                    a.entity_id,
                    f"[{priority}] {a.entity_id} {a.summary}",
                    a.fired_at + self._span((3, 15)),
                    resolved,
                    a.fingerprint,
                )
            )

    def _user_tickets(self) -> None:
        apps = self.estate.ids("app")
        n = self.cfg.entities
        for d in range(self.cfg.days):
            day0 = self.cfg.day_start(d)
            for _ in range(max(1, n // 150)):
                app = apps[int(self.rng.integers(len(apps)))]
                text = USER_REPORTS[int(self.rng.integers(len(USER_REPORTS)))]
                priority = "P3" if self.rng.random() < 0.4 else "P4"
                opened = day0 + int(self.rng.integers(HOUR_S, 11 * HOUR_S))  # office hours
                self.tickets.append(
                    self._incident(
                        priority,
                        app,
                        text.format(name=self.estate.entities[app].name),
                        opened,
                        group=SERVICE_DESK,
                    )
                )
            for _ in range(max(2, n // 40)):
                typ, text = REQUESTS[int(self.rng.integers(len(REQUESTS)))]
                ids = self.estate.ids(typ)
                ci = ids[int(self.rng.integers(len(ids)))]
                opened = day0 + int(self.rng.integers(HOUR_S, 11 * HOUR_S))
                t = self._incident(
                    "P4",
                    ci,
                    text.format(name=self.estate.entities[ci].name, id=ci),
                    opened,
                    group=SERVICE_DESK,
                )
                t.type = "request"
                self.tickets.append(t)

    def _number(self) -> None:
        """Ids per type and opening day, in opening order (changes are numbered at planning)."""
        prefixes = {"incident": "INC", "request": "REQ", "problem": "PRB"}
        self.tickets = [t for t in self.tickets if t.opened < self.cfg.end_ts]
        self.tickets.sort(key=lambda t: (t.opened, t.type, t.ci, t.title))
        seq: dict[tuple[str, str], int] = {}
        for t in self.tickets:
            if t.type == "change":
                continue
            day = self.cfg.day(self.cfg.day_of(t.opened)).replace("-", "")
            n = seq[(t.type, day)] = seq.get((t.type, day), 0) + 1
            t.ticket_id = f"{prefixes[t.type]}-{day}-{n:04d}"

    def day_csv(self, day: int, tally: Tally, malformed: Tally) -> bytes:
        """The export of tickets opened on ``day``, with one row whose timestamp is broken."""
        end = self.cfg.end_ts
        rows = [t for t in self.tickets if self.cfg.day_of(t.opened) == day]
        buf = io.StringIO()
        out = csv.writer(buf, lineterminator="\n")
        out.writerow(HEADER)

        def when(ts: int | None) -> str:
            return iso(ts) if ts is not None and ts < end else ""

        body = []
        for t in rows:
            acked, resolved, closed = when(t.acknowledged), when(t.resolved), when(t.closed)
            if not acked:
                resolved = ""
            if not resolved:
                closed = ""
            status = (
                "closed"
                if closed
                else "resolved"
                if resolved
                else "in_progress"
                if acked
                else "new"
            )
            result = (
                ("failed" if t.failed else "successful") if t.type == "change" and resolved else ""
            )
            body.append(
                [
                    t.ticket_id,
                    t.type,
                    status,
                    t.priority,
                    t.business,
                    t.ci,
                    t.title,
                    iso(t.opened),
                    acked,
                    resolved,
                    closed,
                    t.assignee_group,
                    "" if t.sla is None else str(t.sla),
                    t.fingerprint,
                    iso(t.window_start) if t.window_start else "",
                    iso(t.window_end) if t.window_end else "",
                    result,
                ]
            )
        # A hand-typed time the ITSM let through: the row must go to quarantine.
        ymd = self.cfg.day(day)
        broken = [
            f"REQ-{ymd.replace('-', '')}-9901",
            "request",
            "new",
            "P4",
            "",
            self.estate.ids("app")[0],
            "申请开通系统账号（手工补录）",
            f"{ymd.replace('-', '/')} 25:61",
            "",
            "",
            "",
            SERVICE_DESK,
            "4320",
            "",
            "",
            "",
            "",
        ]
        body.insert(len(body) // 2, broken)
        out.writerows(body)
        tally.add(ymd, len(body) - 1)
        malformed.add(ymd, 1)
        return buf.getvalue().encode()
