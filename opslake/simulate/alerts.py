"""Alerts from threshold rules on the generated metrics, and Alertmanager's webhook stream.

Rules are evaluated like Prometheus does at every scrape: an alert is pending from the
first breaching sample and fires once it has breached for the rule's ``for`` duration; it
resolves at the first sample that no longer breaches. A background of noise alerts (clock
skew, restarts, certificates...) comes from rules on things not modelled here. The webhook
stream then follows Alertmanager's grouping (by alertname and business): ``group_wait``
before the first notification, ``group_interval`` between updates, and a re-send of
still-firing alerts every ``repeat_interval``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import quote

import numpy as np

from opslake.simulate.cmdb import CmdbHistory
from opslake.simulate.config import DAY_S, SimulationConfig, iso, rng_for
from opslake.simulate.estate import Estate
from opslake.simulate.metrics import FAMILIES, DayValues, MetricModel

GROUP_WAIT, GROUP_INTERVAL, REPEAT_INTERVAL = 30, 300, 4 * 3600
RECEIVER = "ops-centre"
EXTERNAL_URL = "http://alertmanager.ops.gov.local:9093"
PROMETHEUS_URL = "http://prometheus.ops.gov.local:9090"
ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of a firing alert


@dataclass(frozen=True)
class Rule:
    """A threshold rule on one metric family."""

    alertname: str
    family: str
    op: str  # ">" or "<"
    threshold: float
    for_s: int
    severity: str
    summary: str

    @property
    def expr(self) -> str:
        """The PromQL expression, for ``generatorURL``."""
        return f"{self.family} {self.op} {self.threshold:g}"


RULES: tuple[Rule, ...] = (
    Rule(
        "RackInletTemperatureHigh",
        "rack_inlet_temperature_celsius",
        ">",
        32,
        300,
        "major",
        "机柜进风温度过高",
    ),
    Rule("PduLoadHigh", "pdu_load_ratio", ">", 0.9, 180, "major", "PDU负载过高"),
    Rule("UpsLoadHigh", "ups_load_ratio", ">", 0.85, 300, "major", "UPS负载过高"),
    Rule("UpsBatteryLow", "ups_battery_charge_ratio", "<", 0.5, 120, "critical", "UPS电池电量低"),
    Rule(
        "CoolingSupplyTemperatureHigh",
        "cooling_supply_temperature_celsius",
        ">",
        24,
        300,
        "major",
        "空调送风温度过高",
    ),
    Rule("NodeCpuHigh", "node_cpu_utilisation_ratio", ">", 0.9, 300, "major", "CPU使用率过高"),
    Rule(
        "NodeMemoryHigh",
        "node_memory_utilisation_ratio",
        ">",
        0.92,
        300,
        "warning",
        "内存使用率过高",
    ),
    Rule(
        "NodeFilesystemAlmostFull",
        "node_filesystem_used_ratio",
        ">",
        0.85,
        600,
        "warning",
        "文件系统即将写满",
    ),
    Rule(
        "ContainerCpuHigh",
        "container_cpu_utilisation_ratio",
        ">",
        0.95,
        300,
        "warning",
        "容器CPU接近限额",
    ),
    Rule(
        "StoragePoolAlmostFull",
        "storage_pool_used_ratio",
        ">",
        0.85,
        600,
        "major",
        "存储池容量即将用尽",
    ),
    Rule(
        "StorageLatencyHigh",
        "storage_pool_latency_seconds",
        ">",
        0.05,
        180,
        "major",
        "存储时延过高",
    ),
    Rule(
        "SwitchInterfaceErrors",
        "switch_interface_errors_per_second",
        ">",
        5,
        180,
        "major",
        "交换机端口错包",
    ),
    Rule(
        "SwitchInterfaceSaturated",
        "switch_interface_utilisation_ratio",
        ">",
        0.9,
        300,
        "warning",
        "交换机上联带宽接近饱和",
    ),
    Rule("HttpErrorRatioHigh", "http_error_ratio", ">", 0.05, 180, "critical", "HTTP错误率过高"),
    Rule(
        "HttpLatencyHigh",
        "http_request_duration_p95_seconds",
        ">",
        1.0,
        180,
        "major",
        "HTTP响应时间过长",
    ),
    Rule("DbConnectionsHigh", "db_connections_in_use", ">", 400, 180, "major", "数据库连接数过高"),
    Rule("DbQuerySlow", "db_query_duration_p95_seconds", ">", 0.5, 180, "critical", "数据库慢查询"),
    Rule(
        "MiddlewareThreadPoolExhausted",
        "middleware_thread_pool_utilisation_ratio",
        ">",
        0.95,
        180,
        "major",
        "中间件线程池耗尽",
    ),
    Rule("QueueBacklog", "queue_depth_messages", ">", 5000, 300, "major", "消息队列积压"),
    Rule(
        "AuthFailuresHigh",
        "identity_auth_failures_per_second",
        ">",
        5,
        180,
        "warning",
        "统一身份认证失败次数过多",
    ),
    Rule(
        "PlatformProcessCpuHigh",
        "process_cpu_utilisation_ratio",
        ">",
        0.9,
        300,
        "major",
        "平台进程CPU过高",
    ),
    Rule(
        "FirewallSessionsHigh",
        "firewall_sessions_active",
        ">",
        800000,
        300,
        "warning",
        "防火墙并发会话数过高",
    ),
    Rule(
        "WafAttackSpike",
        "waf_blocked_requests_per_second",
        ">",
        50,
        120,
        "warning",
        "WAF拦截请求激增",
    ),
    Rule("IdsAlertSurge", "ids_alerts_per_minute", ">", 30, 120, "warning", "入侵检测告警激增"),
    Rule(
        "SecurityDeviceCpuHigh",
        "security_device_cpu_utilisation_ratio",
        ">",
        0.9,
        300,
        "major",
        "安全设备CPU过高",
    ),
)
#: Alerts from rules on things not modelled: background noise (alertname, severity,
#: duration range in seconds, summary).
NOISE: tuple[tuple[str, str, tuple[int, int], str], ...] = (
    ("NtpClockSkew", "warning", (300, 2400), "时钟偏移超过100毫秒"),
    ("ProcessRestarted", "warning", (120, 600), "进程异常重启"),
    ("CertificateExpiringSoon", "info", (6 * 3600, 30 * 3600), "证书将在30天内过期"),
    ("BackupJobSlow", "warning", (1800, 7200), "备份作业耗时过长"),
    ("LogVolumeSpike", "info", (600, 3600), "日志量突增"),
)


@dataclass
class Alert:
    """One firing episode of one alert (one label set)."""

    alertname: str
    entity_id: str
    severity: str
    fired_at: int
    resolved_at: int | None
    summary: str
    expr: str
    noise: bool = False
    labels: dict[str, str] | None = None
    fingerprint: str = ""
    notified: bool = False  # reached the webhook (only these can be linked to tickets)


def fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's label-set fingerprint: FNV-1a 64 over sorted names and values."""
    h = 0xCBF29CE484222325
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode():
                h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
            h = ((h ^ 0xFF) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


class RuleEvaluator:
    """Evaluates every rule over each day's values, carrying open episodes across midnight."""

    def __init__(self, cfg: SimulationConfig, model: MetricModel) -> None:
        self.cfg, self.model = cfg, model
        self.index = {f.name: i for i, f in enumerate(FAMILIES)}
        self.carry = {
            r.alertname: np.full(len(model.series[self.index[r.family]]), -1, dtype=np.int64)
            for r in RULES
        }
        self.alerts: list[Alert] = []

    def day(self, day: int, values: list[DayValues]) -> None:
        """Find the episodes that fire in (or continue through) day ``day``."""
        step, day0 = self.cfg.step_seconds, self.cfg.day_start(day)
        last_day = day == self.cfg.days - 1
        for rule in RULES:
            fi = self.index[rule.family]
            dv = values[fi]
            if dv.q.shape[0] == 0:
                continue
            v = dv.q / dv.scale
            cond = v > rule.threshold if rule.op == ">" else v < rule.threshold
            n_cols = cond.shape[1]
            cond &= np.arange(n_cols)[None, :] < dv.valid_cols[:, None]
            pad = np.zeros((cond.shape[0], n_cols + 2), dtype=np.int8)
            pad[:, 1:-1] = cond
            edges = np.diff(pad, axis=1)
            rows, start_cols = np.nonzero(edges == 1)
            _, end_cols = np.nonzero(edges == -1)
            carry = self.carry[rule.alertname]
            starts = day0 + start_cols * step
            joined = (start_cols == 0) & (carry[rows] >= 0)
            starts = np.where(joined, carry[rows], starts)
            ends = day0 + end_cols * step
            # Episodes still open at the end of the previous day that ended at midnight.
            closed = np.nonzero((carry >= 0) & ~cond[:, 0])[0]
            rows = np.concatenate([rows, closed])
            starts = np.concatenate([starts, carry[closed]])
            ends = np.concatenate([ends, np.full(len(closed), day0, dtype=np.int64)])
            open_now = ends == day0 + n_cols * step
            new_carry = np.full_like(carry, -1)
            if not last_day:
                new_carry[rows[open_now]] = starts[open_now]
            self.carry[rule.alertname] = new_carry
            fire = starts + -(-rule.for_s // step) * step
            emit = (fire < ends) & (~open_now | last_day)
            for r, f, e, o in zip(rows[emit], fire[emit], ends[emit], open_now[emit], strict=True):
                self.alerts.append(
                    Alert(
                        rule.alertname,
                        self.model.series[fi][int(r)],
                        rule.severity,
                        int(f),
                        None if o else int(e),
                        rule.summary,
                        rule.expr,
                    )
                )


def noise_alerts(cfg: SimulationConfig, estate: Estate, hist: CmdbHistory) -> list[Alert]:
    """Background alerts unrelated to the modelled metrics or faults."""
    out = []
    monitored = [e for e, ent in estate.entities.items() if ent.monitored]
    for d in range(cfg.days):
        rng = rng_for(cfg.seed, "noise-alerts", d)
        for _ in range(max(3, cfg.entities // 40)):
            name, severity, (lo, hi), summary = NOISE[int(rng.integers(len(NOISE)))]
            fired = cfg.day_start(d) + int(rng.integers(0, DAY_S))
            eid = monitored[int(rng.integers(len(monitored)))]
            if not hist.alive(eid, fired):
                continue
            resolved = fired + int(rng.integers(lo, hi))
            out.append(
                Alert(
                    name,
                    eid,
                    severity,
                    fired,
                    resolved if resolved < cfg.end_ts else None,
                    summary,
                    f'ALERTS{{alertname="{name}"}}',
                    noise=True,
                )
            )
    return out


def label(alerts: list[Alert], estate: Estate, hist: CmdbHistory) -> None:
    """Attach Alertmanager labels and fingerprints (instance as it was at firing time)."""
    for a in alerts:
        e = estate.entities[a.entity_id]
        labels = {
            "alertname": a.alertname,
            "entity_id": a.entity_id,
            "instance": f"{hist.ip_at(e, a.fired_at)}:{e.port}",
            "job": e.job,
            "kind": e.kind,
            "severity": a.severity,
        }
        if e.business:
            labels["business"] = e.business
        a.labels = labels
        a.fingerprint = fingerprint(labels)


@dataclass
class Notification:
    """One webhook POST: when it was sent and its body."""

    ts: int
    group_key: str
    body: dict[str, object]


def _alert_json(a: Alert, firing: bool) -> dict[str, object]:
    labels = a.labels or {}
    return {
        "status": "firing" if firing else "resolved",
        "labels": dict(sorted(labels.items())),
        "annotations": {
            "description": f"{a.entity_id} {a.summary}（{a.expr}）",
            "runbook_url": f"https://wiki.ops.gov.local/runbooks/{a.alertname}",
            "summary": a.summary,
        },
        "startsAt": iso(a.fired_at),
        "endsAt": ZERO_TIME if firing else iso(a.resolved_at or 0),
        "generatorURL": f"{PROMETHEUS_URL}/graph?g0.expr={quote(a.expr)}&g0.tab=1",
        "fingerprint": a.fingerprint,
    }


def _common(dicts: list[dict[str, str]]) -> dict[str, str]:
    first = dicts[0]
    return {k: v for k, v in sorted(first.items()) if all(d.get(k) == v for d in dicts[1:])}


def _payload(
    group: dict[str, str], key: str, firing: list[Alert], resolved: list[Alert]
) -> dict[str, object]:
    items = [_alert_json(a, True) for a in firing] + [_alert_json(a, False) for a in resolved]
    return {
        "receiver": RECEIVER,
        "status": "firing" if firing else "resolved",
        "alerts": items,
        "groupLabels": group,
        "commonLabels": _common([i["labels"] for i in items]),  # type: ignore[misc]
        "commonAnnotations": _common([i["annotations"] for i in items]),  # type: ignore[misc]
        "externalURL": EXTERNAL_URL,
        "version": "4",
        "groupKey": key,
        "truncatedAlerts": 0,
    }


def notifications(alerts: list[Alert], end_ts: int) -> list[Notification]:
    """Alertmanager's notifications for ``alerts`` up to ``end_ts``, in sending order."""
    groups: dict[tuple[str, str], list[Alert]] = {}
    for a in alerts:
        groups.setdefault((a.alertname, (a.labels or {}).get("business", "")), []).append(a)
    out: list[Notification] = []
    for (name, business), members in sorted(groups.items()):
        members.sort(key=lambda a: (a.fired_at, a.fingerprint))
        group = {"alertname": name, **({"business": business} if business else {})}
        key = "{}:{" + ", ".join(f'{k}="{v}"' for k, v in sorted(group.items())) + "}"
        out += _group_notifications(members, group, key, end_ts)
    out.sort(key=lambda n: (n.ts, n.group_key))
    return out


def _group_notifications(
    members: list[Alert], group: dict[str, str], key: str, end_ts: int
) -> list[Notification]:
    """Walk one aggregation group's flush ticks, jumping over ticks where nothing changes."""
    out: list[Notification] = []
    arrived = 0
    live: list[Alert] = []  # arrived and not finished
    notified: dict[int, str] = {}  # id(alert) -> status last sent
    flush: int | None = None
    last_sent: int | None = None
    while True:
        if flush is None:
            if arrived == len(members):
                break
            flush, last_sent = members[arrived].fired_at + GROUP_WAIT, None
        if flush >= end_ts:
            break
        while arrived < len(members) and members[arrived].fired_at <= flush:
            live.append(members[arrived])
            arrived += 1
        firing = [a for a in live if a.resolved_at is None or a.resolved_at > flush]
        resolved = [
            a
            for a in live
            if a.resolved_at is not None
            and a.resolved_at <= flush
            and notified.get(id(a)) == "firing"
        ]
        changed = bool(resolved) or any(notified.get(id(a)) != "firing" for a in firing)
        repeat = bool(firing) and last_sent is not None and flush - last_sent >= REPEAT_INTERVAL
        if changed or repeat:
            out.append(Notification(flush, key, _payload(group, key, firing, resolved)))
            last_sent = flush
            for a in firing:
                notified[id(a)] = "firing"
                a.notified = True
        # Resolved alerts leave the group; one never notified as firing is dropped silently.
        live = firing
        if not firing:
            flush = None
            continue
        upcoming = [members[arrived].fired_at] if arrived < len(members) else []
        upcoming += [a.resolved_at for a in firing if a.resolved_at is not None]
        upcoming.append((last_sent or flush) + REPEAT_INTERVAL)
        wait = max(1, -(-(min(upcoming) - flush) // GROUP_INTERVAL))
        flush += wait * GROUP_INTERVAL
    return out


def encode(n: Notification) -> str:
    """One webhook body as a JSON line (compact, UTF-8, as Alertmanager posts it)."""
    return json.dumps(n.body, ensure_ascii=False, separators=(",", ":"))
