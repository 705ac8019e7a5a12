"""The demo estate simulator: determinism, coverage of S4, topology, formats, ground truth.

Counts are re-derived from the landed files with deliberately simple logic (regular
expressions, ``json``, ``csv``), never with the simulator's own counters.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import time
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from opslake.errors import ConfigError
from opslake.lake.landing import LandingZone
from opslake.lake.schemas import OBJECT_KINDS, RELATIONS
from opslake.lake.storage import Lake
from opslake.simulate import GroundTruth, SimulationConfig, simulate
from opslake.simulate.metrics import FAMILIES

CFG = SimulationConfig(seed=7, entities=60, days=2, start=date(2026, 11, 20), step_seconds=60)
DAYS = ["2026-11-20", "2026-11-21"]
SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*\{[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*"'
    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*")*\} (\S+) (\d+)$'
)
RFC5424 = re.compile(r"^<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) (-|\[[^\]]*\]) (.*)$")
ITSM_TIMES = (
    "opened_at",
    "acknowledged_at",
    "resolved_at",
    "closed_at",
    "change_window_start",
    "change_window_end",
)


def _lake(root: Path) -> LandingZone:
    # Stored in clear on purpose: these tests read what the simulated sources delivered.
    return LandingZone(Lake(pafs.LocalFileSystem(), str(root), local=True), encrypted_sources=())


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GroundTruth]:
    """One simulation shared by the read-only tests."""
    root = tmp_path_factory.mktemp("sim")
    stages: list[str] = []
    truth = simulate(CFG, _lake(root), lambda stage, done, total: stages.append(stage))
    assert {"metrics", "alerts", "done"} <= set(stages)
    return root, truth


def _landed(root: Path, source: str, day: str) -> list[bytes]:
    """Data files of one source and day, in batch order."""
    base = root / "landing" / f"source={source}" / f"dt={day}"
    return [p.read_bytes() for p in sorted(base.iterdir())]


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under the lake, with the lake root written out of manifest paths."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = p.read_bytes().replace(str(root).encode(), b"<root>")
    return out


def _ts(text: str) -> bool:
    try:
        datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return False
    return True


# -- determinism -------------------------------------------------------------------------
def test_same_seed_gives_identical_bytes(run: tuple[Path, GroundTruth], tmp_path: Path) -> None:
    root, truth = run
    again = simulate(CFG, _lake(tmp_path))
    first, second = _tree(root), _tree(tmp_path)
    assert list(first) == list(second)
    assert [k for k in first if first[k] != second[k]] == []
    assert again.to_json() == truth.to_json()


def test_different_seed_gives_different_data(run: tuple[Path, GroundTruth], tmp_path: Path) -> None:
    root, truth = run
    other = simulate(SimulationConfig(seed=8, entities=60, days=1), _lake(tmp_path))
    for source in ("prometheus", "syslog", "cmdb"):
        assert _landed(root, source, DAYS[0]) != _landed(tmp_path, source, DAYS[0])
    assert other.faults != truth.faults


def test_ground_truth_is_stored_in_the_lake(run: tuple[Path, GroundTruth]) -> None:
    root, truth = run
    stored = (root / "simulator" / "ground_truth.json").read_bytes()
    assert stored == truth.to_json()
    assert GroundTruth.from_json(stored) == truth
    assert set(truth.counts) == {
        "metric_points",
        "events",
        "tickets",
        "logs",
        "probes",
        "asset_versions",
        "relations",
    }
    assert truth.batches == {
        "prometheus": 48,
        "alertmanager": 2,
        "itsm": 2,
        "cmdb": 2,
        "syslog": 2,
        "probes": 2,
    }


@pytest.mark.parametrize(
    "kwargs",
    [{"entities": 5}, {"days": 0}, {"step_seconds": 7}, {"step_seconds": 70}, {"seed": -1}],
)
def test_bad_config_is_a_clear_error(kwargs: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        SimulationConfig(**kwargs)


# -- the estate ---------------------------------------------------------------------------
def _snapshots(root: Path) -> list[dict]:
    return [json.loads(_landed(root, "cmdb", d)[0]) for d in DAYS]


def test_all_five_kinds_are_present(run: tuple[Path, GroundTruth]) -> None:
    root, truth = run
    assert sorted(truth.entities) == sorted(OBJECT_KINDS)
    for snap in _snapshots(root):
        assert {ci["kind"] for ci in snap["cis"]} == set(OBJECT_KINDS)
    types = {ci["type"] for ci in _snapshots(root)[0]["cis"]}
    assert types >= {
        "rack",
        "pdu",
        "ups",
        "cooling",
        "host",
        "vm",
        "container",
        "storage",
        "switch",
        "app",
        "svc",
        "db",
        "middleware",
        "queue",
        "identity",
        "firewall",
        "waf",
        "ids",
        "bastion",
    }
    assert "app-tax-portal" in truth.entities["application"]
    assert "svc-tax-portal-api" in truth.entities["application"]
    assert "vm-0012" in truth.entities["cloud"] and "pdu-0001" in truth.entities["facility"]


def test_topology_is_consistent(run: tuple[Path, GroundTruth]) -> None:
    root, _ = run
    for snap in _snapshots(root):
        cis = {ci["entity_id"]: ci for ci in snap["cis"]}
        out: dict[str, list[tuple[str, str]]] = {}
        for r in snap["relations"]:
            assert r["relation"] in RELATIONS
            assert r["src"] in cis
            if r["relation"] == "belongs_to":
                assert r["dst"].startswith("biz-")
            else:
                assert r["dst"] in cis, r
            out.setdefault(r["src"], []).append((r["relation"], r["dst"]))

        def targets(eid: str, relation: str, cis: dict = cis, out: dict = out) -> list[str]:
            return [cis[d]["type"] for rel, d in out.get(eid, []) if rel == relation]

        for eid, ci in cis.items():
            if ci["lifecycle_state"] == "retired":
                assert eid not in out, "a retired CI keeps no relations"
                continue
            runs_on = targets(eid, "runs_on")
            if ci["type"] in ("vm", "container"):
                assert runs_on == ["host"], eid
            if ci["type"] == "svc":
                assert len(runs_on) == 1 and runs_on[0] in ("vm", "container")
                assert "db" in targets(eid, "depends_on")
            if ci["type"] in ("db", "middleware", "queue", "identity"):
                assert runs_on == ["vm"]
            if ci["type"] == "app":
                assert set(targets(eid, "depends_on")) == {"svc"}
                assert len([d for rel, d in out[eid] if rel == "belongs_to"]) == 1
            if ci["type"] == "host":
                assert targets(eid, "located_in") == ["rack"]
                assert targets(eid, "powered_by") == ["pdu"]
                assert targets(eid, "depends_on") == ["switch"]
            if ci["type"] == "pdu":
                assert targets(eid, "powered_by") == ["ups"]


def test_cmdb_snapshots_carry_lifecycle_and_expiring_contracts(
    run: tuple[Path, GroundTruth],
) -> None:
    root, _ = run
    snaps = _snapshots(root)
    for day, snap in zip(DAYS, snaps, strict=True):
        assert snap["exported_at"] == f"{day}T23:59:00Z"
        for ci in snap["cis"]:
            assert re.fullmatch(r"1[3-9]\d{9}", ci["owner_contact"])
            assert ci["name"] != ci["entity_id"]
    states = {ci["lifecycle_state"] for snap in snaps for ci in snap["cis"]}
    assert states >= {"in_service", "retired", "planned"}
    end = CFG.start + timedelta(days=CFG.days)
    ends = [
        date.fromisoformat(ci[f])
        for ci in snaps[-1]["cis"]
        for f in ("warranty_end", "contract_end", "licence_end")
        if ci[f]
    ]
    assert any(end < d <= end + timedelta(days=30) for d in ends)
    assert any(end + timedelta(days=30) < d <= end + timedelta(days=90) for d in ends)
    assert any(d < CFG.start for d in ends)


# -- sources ------------------------------------------------------------------------------
def test_prometheus_exposition(run: tuple[Path, GroundTruth]) -> None:
    root, truth = run
    ratios, families = [], set()
    for data in _landed(root, "prometheus", DAYS[0])[:2]:
        for line in data.decode().splitlines():
            if line.startswith("# TYPE "):
                families.add(line.split()[2])
            m = SAMPLE.match(line)
            if m and line.split("{")[0].endswith("_ratio"):
                ratios.append(float(m.group(1)))
            if m:
                assert 'entity_id="' in line and 'instance="10.' in line and 'job="' in line
    assert families == set(truth.metric_families)
    assert ratios and all(0.0 <= v <= 1.0 for v in ratios)


def test_ratio_families_are_bounded_and_named_with_units() -> None:
    for family in FAMILIES:
        assert re.search(
            r"_(ratio|celsius|watts|seconds|bytes_per_second|per_second|"
            r"per_minute|messages|active|in_use)$",
            family.name,
        ), family.name
        if family.name.endswith("_ratio"):
            assert family.hi == 1.0 and (family.fault is None or family.fault[0] != "mult")


def test_business_hours_are_busier(run: tuple[Path, GroundTruth]) -> None:
    root, _ = run
    files = _landed(root, "prometheus", DAYS[0])  # Friday; local time is UTC+8

    def mean_rps(hour: int) -> float:
        values = [
            float(SAMPLE.match(line).group(1))  # type: ignore[union-attr]
            for line in files[hour].decode().splitlines()
            if line.startswith("http_requests_per_second{")
        ]
        return sum(values) / len(values)

    assert mean_rps(2) > 2 * mean_rps(19)  # 10:00 vs 03:00 local


def test_alerts_are_alertmanager_v4_webhooks(run: tuple[Path, GroundTruth]) -> None:
    root, _ = run
    fingerprints: dict[str, str] = {}
    statuses = Counter()
    for day in DAYS:
        for line in _landed(root, "alertmanager", day)[0].decode().splitlines():
            try:
                body = json.loads(line)
            except ValueError:
                continue
            assert body["version"] == "4"
            assert {
                "status",
                "receiver",
                "groupKey",
                "groupLabels",
                "commonLabels",
                "commonAnnotations",
                "externalURL",
                "truncatedAlerts",
                "alerts",
            } <= set(body)
            assert set(body["groupLabels"]) <= {"alertname", "business"}
            for alert in body["alerts"]:
                assert {
                    "status",
                    "labels",
                    "annotations",
                    "startsAt",
                    "endsAt",
                    "generatorURL",
                    "fingerprint",
                } <= set(alert)
                labels = alert["labels"]
                assert labels["severity"] in ("critical", "major", "warning", "info")
                assert labels["alertname"] and labels["entity_id"]
                assert re.fullmatch(r"[0-9a-f]{16}", alert["fingerprint"])
                key = json.dumps(labels, sort_keys=True)
                assert fingerprints.setdefault(key, alert["fingerprint"]) == alert["fingerprint"]
                statuses[alert["status"]] += 1
                if alert["status"] == "firing":
                    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
                else:
                    assert alert["endsAt"] > alert["startsAt"]
    assert len(set(fingerprints.values())) == len(fingerprints), "one fingerprint per label set"
    assert statuses["firing"] > statuses["resolved"] > 0


def test_syslog_hostnames_are_cmdb_names(run: tuple[Path, GroundTruth]) -> None:
    root, truth = run
    names = {ci["name"] for snap in _snapshots(root) for ci in snap["cis"]}
    ids = {e for kind in truth.entities.values() for e in kind}
    unknown = 0
    for day in DAYS:
        for line in _landed(root, "syslog", day)[0].decode().splitlines():
            m = RFC5424.match(line)
            if not m:
                continue
            assert 0 <= int(m.group(1)) <= 191
            host = m.group(3)
            assert host not in ids
            unknown += host not in names
    assert unknown == truth.unmapped_logs["total"] > 0


def test_ground_truth_counts_match_the_landed_files(run: tuple[Path, GroundTruth]) -> None:
    root, truth = run
    for day in DAYS:
        samples = bad_samples = 0
        for data in _landed(root, "prometheus", day):
            for line in data.decode().splitlines():
                if not line or line.startswith("#"):
                    continue
                m = SAMPLE.match(line)
                try:
                    ok = m is not None and float(m.group(1)) == float(m.group(1))
                except ValueError:
                    ok = False
                samples += ok
                bad_samples += not ok
        assert samples == truth.count("metric_points", day)
        assert bad_samples == truth.malformed["prometheus"]["per_day"][day]

        events, bad_json = set(), 0
        for line in _landed(root, "alertmanager", day)[0].decode().splitlines():
            try:
                body = json.loads(line)
            except ValueError:
                bad_json += 1
                continue
            events |= {(a["fingerprint"], a["startsAt"], a["status"]) for a in body["alerts"]}
        assert len(events) == truth.count("events", day)
        assert bad_json == truth.malformed["alertmanager"]["per_day"][day]

        text = _landed(root, "itsm", day)[0].decode()
        assert text.splitlines()[0] == (
            "ticket_id,type,status,priority,business,ci,title,opened_at,acknowledged_at,"
            "resolved_at,closed_at,assignee_group,sla_target_minutes,alert_fingerprint,"
            "change_window_start,change_window_end,change_result"
        )
        rows = list(csv.DictReader(io.StringIO(text)))
        good = [r for r in rows if all(r[c] == "" or _ts(r[c]) for c in ITSM_TIMES)]
        assert len(good) == truth.count("tickets", day)
        assert len(rows) - len(good) == truth.malformed["itsm"]["per_day"][day]

        lines = _landed(root, "syslog", day)[0].decode().splitlines()
        logs = sum(1 for line in lines if RFC5424.match(line))
        assert logs == truth.count("logs", day)
        assert len(lines) - logs == truth.malformed["syslog"]["per_day"][day]

        probes = bad_probes = 0
        for line in _landed(root, "probes", day)[0].decode().splitlines():
            try:
                json.loads(line)
                probes += 1
            except ValueError:
                bad_probes += 1
        assert probes == truth.count("probes", day)
        assert bad_probes == truth.malformed["probes"]["per_day"][day]

    versions = intervals = 0
    before_cis: dict[str, dict] = {}
    before_rels: set[tuple[str, str, str]] = set()
    for snap in _snapshots(root):
        cis = {
            ci["entity_id"]: {k: v for k, v in ci.items() if k != "updated_at"}
            for ci in snap["cis"]
        }
        versions += sum(1 for k, v in cis.items() if before_cis.get(k) != v)
        rels = {(r["src"], r["relation"], r["dst"]) for r in snap["relations"]}
        intervals += len(rels - before_rels)
        before_cis, before_rels = cis, rels
    assert versions == truth.count("asset_versions")
    assert intervals == truth.count("relations")
    assert truth.count("asset_versions", DAYS[1]) > 0, "the CMDB changes from day to day"


def test_every_source_has_deliberate_malformed_input(run: tuple[Path, GroundTruth]) -> None:
    _, truth = run
    for source in ("prometheus", "alertmanager", "itsm", "syslog", "probes"):
        assert all(n > 0 for n in truth.malformed[source]["per_day"].values()), source


def test_faults_have_a_root_cause_and_leave_traces(run: tuple[Path, GroundTruth]) -> None:
    root, truth = run
    assert len(truth.faults) >= 2 * len(DAYS)
    ids = {e for kind in truth.entities.values() for e in kind}
    tickets = [
        r
        for day in DAYS
        for r in csv.DictReader(io.StringIO(_landed(root, "itsm", day)[0].decode()))
    ]
    fingerprints = {r["alert_fingerprint"] for r in tickets if r["alert_fingerprint"]}
    firing = set()
    for day in DAYS:
        for line in _landed(root, "alertmanager", day)[0].decode().splitlines():
            if line.endswith("}"):
                firing |= {a["fingerprint"] for a in json.loads(line)["alerts"]}
    assert fingerprints and fingerprints <= firing, "incidents link to real alerts"
    for fault in truth.faults:
        assert fault["cause_entity"] in ids and set(fault["affected"]) <= ids
        assert fault["cause_kind"] in OBJECT_KINDS and fault["start"] < fault["end"]
        if fault["start"] >= f"{DAYS[-1]}T23:00:00Z":
            continue  # its incident may only be opened after the export
        assert any(r["type"] == "incident" and r["ci"] == fault["cause_entity"] for r in tickets), (
            fault["fault_id"]
        )
        if fault["change_ticket_id"]:
            change = next(r for r in tickets if r["ticket_id"] == fault["change_ticket_id"])
            assert change["type"] == "change" and change["change_result"] == "failed"
            assert change["change_window_start"] <= fault["start"]
    assert any(f["change_ticket_id"] for f in truth.faults)
    assert any(len(f["affected"]) >= 3 for f in truth.faults), "faults spread to dependants"


def test_timing_of_the_benchmark_size(tmp_path: Path) -> None:
    """2,000 entities for one day at 60 s (about 9M points): printed, not asserted."""
    started = time.perf_counter()
    truth = simulate(SimulationConfig(seed=7, entities=2000, days=1), _lake(tmp_path))
    elapsed = time.perf_counter() - started
    print(
        f"\nsimulate 2000 entities x 1 day: {truth.count('metric_points'):,} points "
        f"in {elapsed:.1f} s"
    )
    shutil.rmtree(tmp_path / "landing")  # about 1 GB of text
