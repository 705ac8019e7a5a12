"""Routing incidents to receivers, with rate limits, retries and a delivery log (S5.5b, S5.5f).

``config/alerting/notify.yaml`` names the receivers (a channel and its settings; a setting
ending in ``_env`` is read from that environment variable, so URLs, keys and passwords stay
out of the repository) and the routes (first match wins unless ``continue: true``; a route
matches an incident's ``severity``, ``correlation``, ``businesses`` and ``departments``).
``oncall.yaml`` is the duty roster exported from the ITSM: per assignee group, who is on duty
when; a receiver with ``on_call: true`` also addresses the people on duty for the group that
handles the incident's probable cause (the group on most ITSM tickets of that CI).

Each (incident, transition, receiver) is delivered once: ``firing`` when an incident that is
not muted is first seen, ``resolved`` once it resolves, to receivers that were told it fired
(ticket receivers only open tickets); an incident that fires again after resolving is news
again (``firing#1``, ``resolved#1``…). The ``handling`` section names the receivers of
handling notices (:mod:`opslake.alerting.notices`) and how to reach each portal user
(``contacts``: mobile, e-mail). Every attempt is appended to the delivery log in the
lake (``alerting/deliveries/dt=D/…json``, never rewritten). Delivery goes through the delivery
engine (:mod:`opslake.delivery`): a receiver that fails is retried in the same pass after
:data:`RETRY_PAUSES`, then again on later passes (``next_attempt_at``, 30 s doubling to 10
minutes); a receiver that failed every try of a pass is not tried again in that pass; one over
its ``rate_limit_per_minute`` is deferred; an incident is never notified twice for one
transition.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

from opslake.alerting.channels import CHANNELS, Channel, Message
from opslake.alerting.rules import Matcher, read_yaml
from opslake.delivery import Engine, RetryPolicy
from opslake.errors import ConfigError
from opslake.lake.storage import Lake
from opslake.settings import Settings

NOTIFY_FILE = "notify.yaml"
ONCALL_FILE = "oncall.yaml"
LOG_DIR = "alerting/deliveries"
#: In-pass retry pauses (seconds) before a delivery is left for a later pass.
RETRY_PAUSES = (0.5, 1.0, 2.0)
RETRY = RetryPolicy(RETRY_PAUSES)
REQUIRED = {"email": ("host",), "dingtalk": ("url",), "wecom": ("url",), "webhook": ("url",)}


@dataclass(frozen=True)
class Receiver:
    """A named endpoint: channel, settings (resolved from the environment), limits."""

    name: str
    channel: str
    settings: dict[str, str]
    missing: tuple[str, ...] = ()
    rate_limit_per_minute: int = 20
    on_call: bool = False
    ticket: bool = False

    def build(self) -> Channel:
        return CHANNELS[self.channel](self.name, self.settings)


@dataclass(frozen=True)
class Route:
    """Which incidents go to which receivers."""

    name: str
    match: Matcher
    receivers: tuple[str, ...]
    carry_on: bool = False


@dataclass(frozen=True)
class Shift:
    """One person on duty for a group between two local times (may wrap past midnight)."""

    name: str
    start: dtime
    end: dtime
    mobile: str = ""
    email: str = ""

    def on_duty(self, at: dtime) -> bool:
        if self.start <= self.end:
            return self.start <= at < self.end
        return at >= self.start or at < self.end


@dataclass
class NotifyConfig:
    """Receivers, routes and the duty roster."""

    receivers: dict[str, Receiver] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    roster: dict[str, list[Shift]] = field(default_factory=dict)
    timezone: str = "Asia/Shanghai"
    #: Receivers of handling notices (``handling.receivers``), in order.
    handling: tuple[str, ...] = ()
    #: User name → (mobile, e-mail) (``handling.contacts``).
    contacts: dict[str, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path, environ: Mapping[str, str] | None = None) -> NotifyConfig:
        """Read ``notify.yaml`` and ``oncall.yaml``; no file, no notifications.

        ``*_env`` settings are read from ``environ`` (default: the environment, as
        :class:`~opslake.settings.Settings` read it).
        """
        env = Settings.from_env().variables if environ is None else environ
        path = directory / NOTIFY_FILE
        raw = read_yaml(path)
        problems: list[str] = []
        receivers = {}
        for name, item in (raw.get("receivers") or {}).items():
            where = f"{path}: receiver {name!r}"
            if not isinstance(item, Mapping) or item.get("channel") not in CHANNELS:
                problems.append(f"{where}: channel must be one of {sorted(CHANNELS)}")
                continue
            settings, missing = {}, []
            for key, value in item.items():
                if key in ("channel", "rate_limit_per_minute", "on_call", "kind"):
                    continue
                if key.endswith("_env"):
                    if env.get(str(value)):
                        settings[key[:-4]] = env[str(value)]
                    else:
                        missing.append(str(value))
                else:
                    settings[key] = ",".join(value) if isinstance(value, list) else str(value)
            lacking = [k for k in REQUIRED[item["channel"]] if k not in settings]
            receivers[str(name)] = Receiver(
                str(name),
                item["channel"],
                settings,
                tuple(missing) if lacking else (),
                int(item.get("rate_limit_per_minute", 20)),
                bool(item.get("on_call", False)),
                item.get("kind") == "ticket",
            )
        routes = []
        for i, item in enumerate(raw.get("routes") or []):
            where = f"{path}: routes[{i}]"
            unknown = [r for r in item.get("receivers", []) if r not in receivers]
            if unknown or not item.get("receivers"):
                problems.append(
                    f"{where}: receivers {unknown or '(none)'} are not defined under receivers"
                )
                continue
            routes.append(
                Route(
                    str(item.get("name", f"route-{i}")),
                    Matcher.parse(item.get("match"), where),
                    tuple(item["receivers"]),
                    bool(item.get("continue", False)),
                )
            )
        handling = raw.get("handling") or {}
        notified = tuple(str(r) for r in handling.get("receivers") or ())
        if unknown := [r for r in notified if r not in receivers]:
            problems.append(f"{path}: handling receivers {unknown} are not defined under receivers")
        contacts = {
            str(user): (str(c.get("mobile", "")), str(c.get("email", "")))
            for user, c in (handling.get("contacts") or {}).items()
        }
        if problems:
            raise ConfigError("\n".join(problems))
        roster_path = directory / ONCALL_FILE
        roster_raw = read_yaml(roster_path)
        roster = {
            str(g): [
                Shift(
                    str(s["name"]),
                    _clock(s["from"], roster_path),
                    _clock(s["to"], roster_path),
                    str(s.get("mobile", "")),
                    str(s.get("email", "")),
                )
                for s in shifts
            ]
            for g, shifts in (roster_raw.get("groups") or {}).items()
        }
        return cls(
            receivers,
            routes,
            roster,
            str(roster_raw.get("timezone", "Asia/Shanghai")),
            notified,
            contacts,
        )

    def receivers_for(self, incident: Mapping[str, object]) -> list[Receiver]:
        """The receivers of the routes that match ``incident`` (in route order, no repeats)."""
        fields = {"severity": incident.get("severity"), "correlation": incident.get("correlation")}
        out: list[str] = []
        for route in self.routes:
            if _route_matches(route.match, fields, incident):
                out += [r for r in route.receivers if r not in out]
                if not route.carry_on:
                    break
        return [self.receivers[r] for r in out]

    def on_duty(self, group: str | None, at: datetime) -> list[Shift]:
        """Who of ``group`` is on duty at ``at``."""
        local = at.astimezone(ZoneInfo(self.timezone)).time()
        return [s for s in self.roster.get(group or "", []) if s.on_duty(local)]


def _route_matches(
    match: Matcher, fields: dict[str, object], incident: Mapping[str, object]
) -> bool:
    """Scalars must match; for businesses and departments any of the incident's may."""
    for name, values in match.terms:
        if name in ("businesses", "departments", "business", "department"):
            have = incident.get(name if name.endswith("s") else name + "s") or []
            if not set(have) & values:  # type: ignore[arg-type]
                return False
        elif fields.get(name) not in values:
            return False
    return True


def _clock(text: object, path: Path) -> dtime:
    try:
        return dtime.fromisoformat(str(text))
    except ValueError as exc:
        raise ConfigError(f"{path}: {text!r} is not a time of day; write HH:MM") from exc


@dataclass(frozen=True)
class NotificationRecord:
    """One record of the notification delivery log."""

    key: str
    incident_id: str
    transition: str
    receiver: str
    channel: str
    status: str  # sent, failed, deferred, unconfigured
    attempts: int
    at: str
    detail: str = ""
    next_attempt_at: str | None = None
    recipients: tuple[str, ...] = ()


def delivery_key(incident_id: str, transition: str, receiver: str) -> str:
    """The identity of one notification."""
    return hashlib.sha256(f"{incident_id}|{transition}|{receiver}".encode()).hexdigest()[:20]


class DeliveryLog:
    """The append-only delivery log in the lake, read back as each key's latest record."""

    def __init__(self, lake: Lake, days: Sequence[str]) -> None:
        self.lake = lake
        self.latest: dict[str, NotificationRecord] = {}
        self.records: list[NotificationRecord] = []
        for day in days:
            base = lake.path(LOG_DIR, f"dt={day}")
            if not lake.exists(base):
                continue
            for path in sorted(lake.list_files(base)):
                d = NotificationRecord(**json.loads(lake.read_bytes(path)))
                self.records.append(d)
        for d in sorted(self.records, key=lambda r: (r.at, r.attempts)):
            self.latest[d.key] = d

    def append(self, d: NotificationRecord) -> None:
        day = d.at[:10]
        name = f"{d.at.replace(':', '').replace('-', '')}-{d.key}-{uuid.uuid4().hex[:8]}.json"
        self.lake.put_atomic(
            self.lake.path(LOG_DIR, f"dt={day}", name),
            [json.dumps(d.__dict__, ensure_ascii=False, sort_keys=True).encode()],
        )
        self.records.append(d)
        self.latest[d.key] = d

    def sent_since(self, receiver: str, since: datetime) -> int:
        return sum(
            1
            for d in self.records
            if d.receiver == receiver and d.status == "sent" and d.at >= since.isoformat()
        )

    def due(self, now: datetime) -> list[NotificationRecord]:
        """Failed or deferred deliveries whose next attempt is due."""
        return [
            d
            for d in self.latest.values()
            if d.status in ("failed", "deferred")
            and d.next_attempt_at
            and d.next_attempt_at <= now.isoformat()
        ]


@dataclass
class Dispatcher:
    """Delivers incident transitions to their receivers once each."""

    config: NotifyConfig
    log: DeliveryLog
    render: Callable[[Mapping[str, object], str, Sequence[Shift]], Message]
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    sleep: Callable[[float], None] = time.sleep

    def run(
        self, incidents: Sequence[Mapping[str, object]], groups: Mapping[str, str | None]
    ) -> list[NotificationRecord]:
        """Deliver what is due for ``incidents`` (rows of gold/incidents); the new records."""
        engine = Engine(RETRY, self.sleep)
        out: list[NotificationRecord] = []
        for inc in incidents:
            if inc["muted"]:
                continue
            # A reopened incident (it resolved, then fired again) is news again.
            n = int(inc.get("reopened") or 0)
            fired, done = ("firing", "resolved") if n == 0 else (f"firing#{n}", f"resolved#{n}")
            transitions = [fired] + ([done] if inc["status"] == "resolved" else [])
            for receiver in self.config.receivers_for(inc):
                for transition in transitions:
                    if transition == done and (
                        receiver.ticket or not self._sent(inc, fired, receiver)
                    ):
                        continue
                    record = self._deliver(
                        engine, inc, transition, receiver, groups.get(str(inc["incident_id"]))
                    )
                    if record is not None:
                        out.append(record)
        return out

    def _sent(self, inc: Mapping[str, object], transition: str, receiver: Receiver) -> bool:
        d = self.log.latest.get(delivery_key(str(inc["incident_id"]), transition, receiver.name))
        return d is not None and d.status == "sent"

    def _deliver(
        self,
        engine: Engine,
        inc: Mapping[str, object],
        transition: str,
        receiver: Receiver,
        group: str | None,
    ) -> NotificationRecord | None:
        key = delivery_key(str(inc["incident_id"]), transition, receiver.name)
        prev = self.log.latest.get(key)
        now = self.now()
        if prev is not None and (
            prev.status in ("sent", "unconfigured")
            or (prev.next_attempt_at or "") > now.isoformat()
        ):
            return None
        attempts = prev.attempts if prev else 0

        def record(
            status: str,
            detail: str = "",
            next_at: datetime | None = None,
            recipients: tuple[str, ...] = (),
            attempts: int = attempts,
        ) -> NotificationRecord:
            d = NotificationRecord(
                key,
                str(inc["incident_id"]),
                transition,
                receiver.name,
                receiver.channel,
                status,
                attempts,
                self.now().isoformat(),
                detail,
                next_at.isoformat() if next_at else None,
                recipients,
            )
            self.log.append(d)
            return d

        if receiver.missing:
            return record("unconfigured", "set " + ", ".join(receiver.missing))
        if (
            self.log.sent_since(receiver.name, now - timedelta(minutes=1))
            >= receiver.rate_limit_per_minute
        ):
            return record("deferred", "rate limit", now + timedelta(minutes=1))
        shifts = self.config.on_duty(group, now) if receiver.on_call else []
        message = self.render(inc, transition, shifts)
        recipients = tuple(s.mobile or s.email for s in shifts)
        channel = receiver.build()
        failures = sum(1 for d in self.log.records if d.key == key and d.status == "failed")
        outcome = engine.deliver(
            receiver.name,
            lambda: channel.send(message).detail,
            now=now,
            attempts=attempts,
            failures=failures,
        )
        return record(
            outcome.status, outcome.detail, outcome.next_attempt_at, recipients, outcome.attempts
        )
