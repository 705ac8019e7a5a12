"""The demo estate simulator: plans the run, then lands every source's batches in turn."""

from __future__ import annotations

from collections.abc import Callable

from opslake.lake.landing import LandingZone
from opslake.simulate.alerts import RuleEvaluator, encode, label, noise_alerts, notifications
from opslake.simulate.cmdb import CmdbHistory, plan_history
from opslake.simulate.config import SimulationConfig, iso
from opslake.simulate.estate import build_estate
from opslake.simulate.exposition import Exposition
from opslake.simulate.faults import Impact, overlapping_noise, plan_faults
from opslake.simulate.metrics import FAMILIES, MetricModel
from opslake.simulate.probes import ProbeWriter
from opslake.simulate.syslog import SyslogWriter
from opslake.simulate.tickets import TicketBook, failed_changes, plan_changes
from opslake.simulate.truth import SOURCES, GroundTruth, Tally
from opslake.simulate.writer import SimulatorLanding

#: ``progress(stage, done, total)``, e.g. for a rich progress bar.
Progress = Callable[[str, int, int], None]


def simulate(
    config: SimulationConfig, landing: LandingZone, progress: Progress | None = None
) -> GroundTruth:
    """Simulate ``config`` into ``landing`` and return (and store) the ground truth.

    The same config gives byte-identical landed batches (sealed sources: the same plaintext
    and checksum, a fresh nonce); the ground truth is written to
    ``simulator/ground_truth.json`` under the lake root.
    """
    cfg = config
    report: Progress = progress or (lambda stage, done, total: None)
    days = [cfg.day(d) for d in range(cfg.days)]
    out = SimulatorLanding(landing, cfg)
    malformed = {s: Tally(days) for s in SOURCES}
    counts = {
        name: Tally(days) for name in ("metric_points", "events", "tickets", "logs", "probes")
    }

    report("plan", 0, 1)
    estate = build_estate(cfg)
    hist = plan_history(cfg, estate)
    changes = plan_changes(cfg, estate)
    faults = plan_faults(cfg, estate, hist, failed_changes(changes))
    noise = overlapping_noise(cfg, estate, hist, faults)
    impacts = [i for f in faults for i in f.impacts] + noise
    report("plan", 1, 1)

    model = MetricModel(cfg, estate, hist)
    exposition = Exposition(model, estate, hist)
    rules = RuleEvaluator(cfg, model)
    for d in range(cfg.days):
        values = model.day(d, impacts)
        rules.day(d, values)
        for hour in range(24):
            chunks, n_points, n_bad = exposition.hour(d, hour, values)
            out.hourly(d, hour, chunks)
            counts["metric_points"].add(days[d], n_points)
            malformed["prometheus"].add(days[d], n_bad)
            report("metrics", d * 24 + hour + 1, cfg.days * 24)

    alerts = rules.alerts + noise_alerts(cfg, estate, hist)
    label(alerts, estate, hist)
    sent = notifications(alerts, cfg.end_ts)
    posted = Tally(days)
    for d in range(cfg.days):
        todays = [n for n in sent if cfg.day_of(n.ts) == d]
        keys = {
            (a["fingerprint"], a["startsAt"], a["status"]) for n in todays for a in n.body["alerts"]
        }  # type: ignore[union-attr]
        counts["events"].add(days[d], len(keys))
        posted.add(days[d], len(todays))
        lines = [encode(n) for n in todays]
        # A notification cut off by a proxy: not JSON, so it must be quarantined.
        broken = lines[0][: len(lines[0]) // 2] if lines else '{"version":"4","alerts":['
        lines.insert(1 if lines else 0, broken)
        malformed["alertmanager"].add(days[d])
        out.daily("alertmanager", d, ("\n".join(lines) + "\n").encode())
        report("alerts", d + 1, cfg.days)

    book = TicketBook(cfg, estate, changes, faults, alerts)
    for d in range(cfg.days):
        out.daily("itsm", d, book.day_csv(d, counts["tickets"], malformed["itsm"]))
        out.daily("cmdb", d, hist.snapshot_bytes(d))
        report("tickets and cmdb", d + 1, cfg.days)

    unmapped = Tally(days)
    syslog = SyslogWriter(cfg, estate, hist, impacts)
    probes = ProbeWriter(cfg, estate, hist, impacts)
    for d in range(cfg.days):
        out.daily("syslog", d, syslog.day(d, counts["logs"], unmapped, malformed["syslog"]))
        out.daily("probes", d, probes.day(d, counts["probes"], malformed["probes"]))
        report("logs and probes", d + 1, cfg.days)

    all_counts = {k: v.as_dict() for k, v in counts.items()}
    all_counts["asset_versions"] = hist.count_versions().as_dict()
    all_counts["relations"] = hist.count_relation_intervals().as_dict()
    kinds: dict[str, list[str]] = {}
    for eid, e in sorted(estate.entities.items()):
        kinds.setdefault(e.kind, []).append(eid)
    truth = GroundTruth(
        seed=cfg.seed,
        config=cfg.as_dict(),
        window={"start": days[0], "end": cfg.day(cfg.days)},
        counts=all_counts,
        malformed={k: v.as_dict() for k, v in malformed.items()},
        batches=dict(out.batches),
        unmapped_logs=unmapped.as_dict(),
        notifications=posted.as_dict(),
        faults=[f.to_dict() for f in faults],
        entities=dict(sorted(kinds.items())),
        metric_families=[f.name for f in FAMILIES],
        realism=_realism(cfg, hist, noise),
        notes={
            "events": "distinct (fingerprint, startsAt, status) per notification day",
            "asset_versions": "new CIs plus changed CIs per snapshot, on the silver assets "
            "columns; a CI leaving the export closes its version only",
            "relations": "relation validity intervals opened per snapshot",
            "belongs_to": "app belongs_to biz-<slug>: businesses are ids, not CIs",
            "window": "start inclusive, end exclusive, UTC days",
            "realism": "the CMDB export's errors against the real topology (relations as "
            "[src, relation, dst]; stale as [real, recorded]), CIs not in it, and "
            "the unrelated anomalies laid over faults; a fault's off_topology "
            "CIs are in its affected list too",
        },
    )
    out.ground_truth(truth)
    report("done", 1, 1)
    return truth


def _realism(cfg: SimulationConfig, hist: CmdbHistory, noise: list[Impact]) -> dict[str, object]:
    """The realism part of the ground truth (empty when every knob is off)."""
    if not cfg.is_realistic:
        return {}
    return {
        **hist.errors(),
        "noise": [
            {
                "noise_id": i.fault_id,
                "entity_id": i.entity_id,
                "start": iso(i.start),
                "end": iso(i.end),
            }
            for i in noise
        ],
    }
