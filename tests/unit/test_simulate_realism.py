"""The simulator's realism knobs: an imperfect CMDB, faults off the recorded topology, noise.

The read-only checks of ``test_simulate`` run again here on a realistic estate (imported
below, so they use this module's ``run`` fixture), except the topology check: a CMDB that
misses or misrecords relations is what this module is about. The rest asks that the errors
are the ones asked for, persist from day to day, and are in the ground truth.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from opslake.errors import ConfigError
from opslake.simulate import GroundTruth, SimulationConfig, simulate
from opslake.simulate.config import REALISM
from tests.unit.test_simulate import (  # noqa: F401  (collected here with this ``run``)
    DAYS,
    _lake,
    _landed,
    _snapshots,
    test_alerts_are_alertmanager_v4_webhooks,
    test_all_five_kinds_are_present,
    test_cmdb_snapshots_carry_lifecycle_and_expiring_contracts,
    test_every_source_has_deliberate_malformed_input,
    test_faults_have_a_root_cause_and_leave_traces,
    test_ground_truth_counts_match_the_landed_files,
    test_prometheus_exposition,
    test_syslog_hostnames_are_cmdb_names,
)

#: Stronger than the demo's so that a 120-object estate shows every kind of error.
CFG = SimulationConfig(
    seed=7,
    entities=120,
    days=2,
    start=date(2026, 11, 20),
    step_seconds=60,
    cmdb_missing=0.08,
    cmdb_stale=0.05,
    unknown_cis=0.1,
    off_topology=0.6,
    noise_overlap=1.5,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GroundTruth]:
    root = tmp_path_factory.mktemp("sim")
    return root, simulate(CFG, _lake(root))


def _relations(snap: dict) -> set[tuple[str, str, str]]:
    return {(r["src"], r["relation"], r["dst"]) for r in snap["relations"]}


def test_knobs_off_change_nothing(tmp_path: Path) -> None:
    base = replace(CFG, entities=60, days=1, **dict.fromkeys(REALISM, 0.0))
    assert not base.is_realistic and "cmdb_missing" not in base.as_dict()
    truth = simulate(base, _lake(tmp_path))
    assert truth.realism == {} and all(f["off_topology"] == [] for f in truth.faults)
    assert SimulationConfig.realistic().is_realistic
    assert {k: getattr(SimulationConfig.realistic(), k) for k in REALISM} == REALISM


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cmdb_missing": -0.1},
        {"unknown_cis": 1.5},
        {"cmdb_missing": 0.7, "cmdb_stale": 0.5},
        {"noise_overlap": -1.0},
    ],
)
def test_bad_realism_is_a_clear_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        SimulationConfig(**kwargs)


def test_the_cmdb_export_misses_and_misrecords_relations(run) -> None:
    root, truth = run
    real = truth.realism
    missing = {tuple(r) for r in real["missing_relations"]}
    stale = {tuple(a): tuple(b) for a, b in real["stale_relations"]}
    unknown = set(real["unknown_cis"])
    assert missing and stale and unknown
    snaps = _snapshots(root)
    for snap in snaps:
        shown = _relations(snap)
        cis = {ci["entity_id"]: ci for ci in snap["cis"]}
        assert not missing & shown, "a missing relation stays missing every day"
        assert not unknown & set(cis), "an unknown CI is in no export"
        assert all(s not in unknown and d not in unknown for s, _, d in shown)
        for was, recorded in stale.items():
            assert recorded[:2] == was[:2] and recorded[2] != was[2]
            assert cis[recorded[2]]["type"] == cis.get(was[2], cis[recorded[2]])["type"]
    # About the asked-for shares of the relations the CMDB could know (CIs it has).
    first = _snapshots(root)[0]
    known = len(_relations(first)) + len(missing)
    assert 0.03 < len(missing) / known < 0.15 and 0.01 < len(stale) / known < 0.1


def test_unknown_cis_still_report_metrics(run) -> None:
    root, truth = run
    unknown = set(truth.realism["unknown_cis"])
    text = b"".join(_landed(root, "prometheus", DAYS[0])).decode()
    for eid in unknown:
        assert f'entity_id="{eid}"' in text


def test_faults_leave_the_topology_and_noise_overlaps_them(run) -> None:
    _, truth = run
    off = [f for f in truth.faults if f["off_topology"]]
    assert off
    for f in off:
        assert set(f["off_topology"]) <= set(f["affected"])
        assert f["cause_entity"] not in f["off_topology"]
    noise = truth.realism["noise"]
    assert noise
    starts = {f["fault_id"][2:]: f["start"] for f in truth.faults}
    for n in noise:
        fault_start = starts[n["noise_id"][2:].rsplit("-", 1)[0]]
        gap = abs(_epoch(n["start"]) - _epoch(fault_start))
        assert gap <= 600 and n["start"] < n["end"]
    json.dumps(truth.realism)  # JSON-friendly as stored


def test_realism_is_deterministic(run, tmp_path: Path) -> None:
    _, truth = run
    again = simulate(CFG, _lake(tmp_path))
    assert again.to_json() == truth.to_json()


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()
