"""Handling notices (S5.5d): assigning an incident tells the assignee, resolving or reopening it
tells its followers.

Whoever is addressed (:func:`addressees`): on ``assign`` the new assignee; on ``resolve`` and
``reopen`` the incident's followers, everyone who acted on it before and its assignee. The one
acting is never told of their own action. A user is reached at their contact of
``notify.yaml``'s ``handling.contacts``; an on-call group by the people on duty now
(``oncall.yaml``), as alert notifications reach them.

A notice goes to each receiver of ``handling.receivers`` (an e-mail, robot or webhook
channel of :mod:`opslake.alerting.channels`) through the one delivery engine
(:mod:`opslake.delivery`): retried in the same pass, then kept as ``failed`` (a notice is news
of one moment; no later pass sends it again). Each attempt is appended to the notification
delivery log (``alerting/deliveries``, ``opslake alerts deliveries``) like an alert
notification, under the transition ``<action>#<seq>`` (the event's step on the incident).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from opslake.alerting.channels import Message
from opslake.alerting.dispatch import (
    RETRY,
    DeliveryLog,
    NotificationRecord,
    NotifyConfig,
    delivery_key,
)
from opslake.alerting.handling import HandlingEvent, HandlingLog, incident_row
from opslake.alerting.notify import SEVERITY_ZH
from opslake.delivery import Engine
from opslake.errors import OpsLakeError

log = logging.getLogger(__name__)

#: The actions that send notices.
NOTIFYING = ("assign", "resolve", "reopen")
ACTION_ZH = {"assign": "指派", "resolve": "已解决", "reopen": "重新打开"}
KIND_ZH = {"user": "用户", "group": "值班组"}


@dataclass(frozen=True)
class Addressee:
    """Someone a notice is for: a user or an on-call group."""

    name: str
    kind: str  # user, group


def addressees(event: HandlingEvent, past: Sequence[HandlingEvent]) -> list[Addressee]:
    """Who is told of ``event``, given the incident's events before it (in order)."""
    if event.action == "assign":
        told = [Addressee(str(event.assignee), str(event.assignee_kind))]
    elif event.action in ("resolve", "reopen"):
        told = [Addressee(e.actor, "user") for e in past]
        assigned = [e for e in past if e.action == "assign"]
        if assigned:
            told.append(Addressee(str(assigned[-1].assignee), str(assigned[-1].assignee_kind)))
    else:
        return []
    unique = list(dict.fromkeys(told))
    return [a for a in unique if (a.name, a.kind) != (event.actor, "user")]


def message(
    event: HandlingEvent,
    incident: Mapping[str, object],
    told: Sequence[Addressee],
    config: NotifyConfig,
) -> Message:
    """The notice of ``event`` for ``told`` (Chinese, local time), with their mobiles and
    e-mail addresses: a user's contact, the people on duty of a group."""
    mobiles: list[str] = []
    emails: list[str] = []
    for who in told:
        if who.kind == "group":
            for shift in config.on_duty(who.name, event.at):
                mobiles.append(shift.mobile)
                emails.append(shift.email)
        else:
            mobile, email = config.contacts.get(who.name, ("", ""))
            mobiles.append(mobile)
            emails.append(email)
    sev = str(incident.get("severity") or "")
    at = event.at.astimezone(ZoneInfo(config.timezone))
    lines = [
        f"事件：{event.incident_id}",
        f"操作人：{event.actor}",
        f"时间：{at:%Y-%m-%d %H:%M:%S}",
    ]
    if event.action == "assign":
        lines.append(f"指派给：{event.assignee}（{KIND_ZH.get(str(event.assignee_kind), '')}）")
    lines.append("通知：" + "、".join(w.name for w in told))
    if event.comment:
        lines.append(f"备注：{event.comment[:500]}")
    subject = f"[{ACTION_ZH[event.action]}][{SEVERITY_ZH.get(sev, sev)}] {incident.get('title')}"
    document = {
        "incident_id": event.incident_id,
        "event_id": event.event_id,
        "action": event.action,
        "actor": event.actor,
        "at": event.at.isoformat(),
        "assignee": event.assignee,
        "assignee_kind": event.assignee_kind,
        "to": [{"name": w.name, "kind": w.kind} for w in told],
        "title": incident.get("title"),
        "severity": sev,
        "comment": event.comment,
    }
    return Message(
        subject,
        tuple(lines),
        document,
        tuple(dict.fromkeys(m for m in mobiles if m)),
        tuple(dict.fromkeys(e for e in emails if e)),
    )


def send(
    handling: HandlingLog,
    config: NotifyConfig,
    event: HandlingEvent,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], None] = time.sleep,
) -> list[NotificationRecord]:
    """Send the notices of ``event`` to the handling receivers; the delivery log's new records
    (none when the action sends no notice, no one is addressed or no receiver is named)."""
    if event.action not in NOTIFYING or not config.handling:
        return []
    past = [e for e in handling.events([event.incident_id]) if e.seq < event.seq]
    told = addressees(event, past)
    if not told:
        return []
    incident = incident_row(handling.lake, event.incident_id, ["title", "severity"])
    note = message(event, incident, told, config)
    transition = f"{event.action}#{event.seq}"
    delivery_log = DeliveryLog(handling.lake, [])
    engine = Engine(RETRY, sleep)
    recipients = note.mobiles + note.emails
    records = []
    for name in config.handling:
        receiver = config.receivers[name]
        moment = now()
        if receiver.missing:
            status, attempts, detail = "unconfigured", 0, "set " + ", ".join(receiver.missing)
        else:
            channel = receiver.build()
            outcome = engine.deliver(name, lambda c=channel: c.send(note).detail, now=moment)
            status, attempts, detail = outcome.status, outcome.attempts, outcome.detail
        record = NotificationRecord(
            delivery_key(event.incident_id, transition, name),
            event.incident_id,
            transition,
            name,
            receiver.channel,
            status,
            attempts,
            now().isoformat(),
            detail,
            None,  # no later pass
            recipients,
        )
        delivery_log.append(record)
        records.append(record)
    return records


class Notifier:
    """Sends handling notices off the request's path, one at a time (``submit``), or at once
    (``send``, for the CLI); ``close`` waits for those still going (a later ``submit`` starts
    again: an application may be started and stopped more than once)."""

    def __init__(self, handling: HandlingLog, alerting_dir: Path) -> None:
        self.handling = handling
        self.alerting_dir = alerting_dir
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def send(self, event: HandlingEvent) -> list[NotificationRecord]:
        """The notices of ``event``, sent now (ConfigError when ``notify.yaml`` is wrong)."""
        return send(self.handling, NotifyConfig.load(self.alerting_dir), event)

    def submit(self, event: HandlingEvent) -> Future[list[NotificationRecord]] | None:
        """Send the notices of ``event`` in the background (None: it sends none)."""
        if event.action not in NOTIFYING:
            return None
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="handling-notices")
            return self._pool.submit(self._logged, event)

    def _logged(self, event: HandlingEvent) -> list[NotificationRecord]:
        try:
            records = self.send(event)
        except OpsLakeError as exc:  # the action stands; say why its notices did not go
            log.error("handling notices of %s were not sent: %s", event.event_id, exc)
            return []
        except Exception:
            log.exception("handling notices of %s failed", event.event_id)
            return []
        for r in records:
            if r.status != "sent":
                log.warning(
                    "handling notice %s to %s: %s %s", r.transition, r.receiver, r.status, r.detail
                )
        return records

    def close(self) -> None:
        """Wait for the notices still being sent, then stop."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
