"""Event prediction (S6.7a): labels, causality of features, calibration, impact, end to end."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from opslake.errors import InputError
from opslake.lake.schemas import TICKETS
from opslake.lake.storage import Lake
from opslake.ml import features, risk
from opslake.ml.features import MODEL_FEATURES, NUMERIC_FEATURES, RiskInputs, Topology
from opslake.simulate import SimulationConfig
from opslake.simulate.cmdb import plan_history
from opslake.simulate.estate import build_estate
from opslake.simulate.faults import plan_faults
from opslake.simulate.tickets import TicketBook, failed_changes, plan_changes

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def _ts(hours: float) -> pd.Timestamp:
    return pd.Timestamp(T0) + pd.Timedelta(hours=hours)


def _assets(rows: list[tuple[str, str, str, str | None, str | None]]) -> pd.DataFrame:
    """CMDB versions (entity_id, kind, type, business, department) valid from T0 - 1 day."""
    return pd.DataFrame(
        [
            {
                "entity_id": e,
                "kind": k,
                "type": t,
                "business": b,
                "department": d,
                "lifecycle_state": "in_service",
                "valid_from": _ts(-24),
                "valid_to": pd.NaT,
            }
            for e, k, t, b, d in rows
        ]
    )


def _relations(
    rows: list[tuple[str, str, str]], valid_to: dict[int, float] | None = None
) -> pd.DataFrame:
    ends = valid_to or {}
    return pd.DataFrame(
        [
            {
                "src_entity_id": s,
                "relation": r,
                "dst_entity_id": d,
                "valid_from": _ts(-24),
                "valid_to": _ts(ends[i]) if i in ends else pd.NaT,
            }
            for i, (s, r, d) in enumerate(rows)
        ]
    )


ESTATE = _assets(
    [
        ("pdu-1", "facility", "pdu", None, None),
        ("rack-1", "facility", "rack", None, None),
        ("host-1", "cloud", "host", None, None),
        ("host-2", "cloud", "host", None, None),
        ("vm-1", "cloud", "vm", "社保", "人社厅"),
        ("vm-2", "cloud", "vm", "医保", "医保局"),
        ("svc-1", "application", "svc", "社保", "人社厅"),
        ("app-1", "application", "app", "社保", "人社厅"),
    ]
)
TOPOLOGY = _relations(
    [
        ("host-1", "powered_by", "pdu-1"),
        ("host-2", "powered_by", "pdu-1"),
        ("host-1", "located_in", "rack-1"),
        ("vm-1", "runs_on", "host-1"),
        ("vm-2", "runs_on", "host-2"),
        ("svc-1", "runs_on", "vm-1"),
        ("app-1", "depends_on", "svc-1"),
        ("app-1", "belongs_to", "biz-shebao"),
        ("vm-2", "runs_on", "host-1"),  # migrated to host-2 after the first day
    ],
    valid_to={8: 24},
)


def test_labels_count_impacts_starting_within_the_horizon_only() -> None:
    rows = pd.DataFrame(
        {
            "entity_id": ["a", "a", "a", "a", "b", "b", "c"],
            "ts": [_ts(h) for h in (5, 6, 9, 10, 6, 7, 6)],
        }
    )
    faults = [
        {
            "fault_type": "x",
            "cause_entity": "a",
            "start": "2026-03-02T10:00:00Z",
            "affected_from": {"b": "2026-03-02T10:02:00Z"},
        }
    ]
    # a: start 10:00 is in (6, 10] and (9, 13] but not in (5, 9] nor (10, 14];
    # b: 10:02 is just past 06:00 + 4 h, inside 07:00 + 4 h; c is never reached.
    assert risk.label(rows, faults, 4).tolist() == [False, True, True, False, False, True, False]
    assert risk.label(rows, faults, 5).tolist() == [True, True, True, False, True, True, False]


def _inputs(metric_scale: float = 1.0, cut: float | None = None, extra: bool = False) -> RiskInputs:
    """Two days of hand-made data; after ``cut`` (hours from T0) values are scaled and,
    with ``extra``, alerts, incidents and changes are added."""
    rng = np.random.default_rng(0)
    stamps = pd.date_range(_ts(-30), _ts(48), freq="5min", inclusive="left")
    frames = []
    for eid in ("host-1", "host-2", "vm-1", "vm-2", "svc-1"):
        value = 0.4 + 0.02 * rng.standard_normal(len(stamps))
        if cut is not None:
            value = np.where(stamps >= _ts(cut), value * metric_scale, value)
        frames.append(
            pd.DataFrame({"entity_id": eid, "metric": "cpu", "ts": stamps, "value": value})
        )
    events = pd.DataFrame(
        {
            "entity_id": ["vm-1", "host-1"],
            "fingerprint": ["f1", "f2"],
            "severity": ["critical", "warning"],
            "starts_at": [_ts(3.5), _ts(10.2)],
        }
    )
    tickets = pd.DataFrame(
        {
            "type": ["change", "incident"],
            "entity_id": ["svc-1", "host-1"],
            "opened_at": [_ts(2), _ts(11)],
            "change_window_start": [_ts(14), pd.NaT],
            "change_window_end": [_ts(16), pd.NaT],
        }
    )
    if extra:
        events = pd.concat(
            [
                events,
                pd.DataFrame(
                    {
                        "entity_id": ["vm-1", "svc-1"],
                        "fingerprint": ["f3", "f4"],
                        "severity": ["critical", "major"],
                        "starts_at": [_ts(cut), _ts(cut + 0.5)],
                    }
                ),
            ]
        )
        tickets = pd.concat(
            [
                tickets,
                pd.DataFrame(
                    {
                        "type": ["change", "incident"],
                        "entity_id": ["vm-1", "vm-2"],
                        "opened_at": [_ts(cut + 0.1), _ts(cut)],
                        "change_window_start": [_ts(cut + 2), pd.NaT],
                        "change_window_end": [_ts(cut + 3), pd.NaT],
                    }
                ),
            ]
        )
    return RiskInputs(pd.concat(frames, ignore_index=True), events, tickets, ESTATE, TOPOLOGY)


def test_features_at_t_ignore_everything_after_t() -> None:
    cut = 20.0
    base = risk.build_features(_inputs(), T0, T0 + timedelta(days=2))
    changed = risk.build_features(
        _inputs(metric_scale=2.0, cut=cut, extra=True), T0, T0 + timedelta(days=2)
    )
    before = base["ts"] <= _ts(cut)
    pd.testing.assert_frame_equal(base[before], changed[before])
    # The alteration is visible right after the cut, so the comparison above can fail.
    after = (base["ts"] > _ts(cut)) & (base["ts"] <= _ts(cut + 2))
    assert not base.loc[after, NUMERIC_FEATURES].equals(changed.loc[after, NUMERIC_FEATURES])
    assert changed.loc[after, "anomaly_rate_1h"].max() > 0.5


def test_features_see_announced_changes_alerts_and_the_topology() -> None:
    rows = risk.build_features(_inputs(), T0, T0 + timedelta(days=2)).set_index(["entity_id", "ts"])
    # Change on svc-1 announced at 02:00 for 14:00-16:00: known from 02:00 only.
    assert rows.loc[("svc-1", _ts(10)), "change_upcoming"] == 1
    assert rows.loc[("svc-1", _ts(9)), "change_upcoming"] == 0
    assert rows.loc[("svc-1", _ts(14)), "change_active"] == 1
    assert rows.loc[("app-1", _ts(10)), "upstream_change_upcoming"] == 1
    # The alert that starts at 03:30 counts from 04:00 (the row's hour is before it).
    assert rows.loc[("vm-1", _ts(3)), "alerts_24h"] == 0
    assert rows.loc[("vm-1", _ts(4)), "severe_alerts_24h"] == 1
    assert rows.loc[("svc-1", _ts(4)), "upstream_alerts_1h"] == 1
    assert rows.loc[("pdu-1", _ts(0)), "n_dependants"] == 6  # hosts, vms, svc, app; no rack
    assert rows.loc[("vm-2", _ts(0)), "n_upstream"] == 3  # host-1 and host-2 on day one
    assert rows.loc[("vm-2", _ts(24)), "n_upstream"] == 2  # only host-2 after migrating
    assert set(rows.index.get_level_values("ts")) == {_ts(h) for h in range(48)}


def test_features_without_metrics_leave_metric_columns_empty_and_the_rest_alone() -> None:
    full = risk.build_features(_inputs(), T0, T0 + timedelta(days=2))
    light = risk.build_features(_inputs(), T0, T0 + timedelta(days=2), metrics=False)
    assert light[list(features.METRIC_FEATURES)].isna().all().all()
    assert full["anomaly_rate_1h"].notna().all()
    rest = [c for c in full.columns if c not in features.METRIC_FEATURES]
    pd.testing.assert_frame_equal(full[rest], light[rest])


def test_without_ground_truth_incident_tickets_are_the_labels(lake: Lake) -> None:
    tickets = [
        {"ticket_id": "INC-1", "type": "incident", "entity_id": "vm-1", "opened_at": _ts(10)},
        {"ticket_id": "INC-2", "type": "incident", "entity_id": None, "opened_at": _ts(11)},
        {"ticket_id": "CHG-1", "type": "change", "entity_id": "svc-1", "opened_at": _ts(12)},
        {"ticket_id": "INC-3", "type": "incident", "entity_id": "host-1", "opened_at": _ts(30)},
    ]
    day = T0.date().isoformat()
    lake.write_table(
        pa.Table.from_pylist(tickets[:3], schema=TICKETS), "silver", "tickets", {"dt": day}
    )
    # INC-1 carried again by the next day's batch (an update) counts once.
    lake.write_table(
        pa.Table.from_pylist([tickets[0], tickets[3]], schema=TICKETS),
        "silver",
        "tickets",
        {"dt": (T0 + timedelta(days=1)).date().isoformat()},
    )
    faults, source = risk.load_labels(lake, T0, T0 + timedelta(days=1))
    assert source == risk.LABELS_TICKETS
    assert [(f["fault_id"], f["cause_entity"]) for f in faults] == [("INC-1", "vm-1")]
    rows = pd.DataFrame(
        {"entity_id": ["vm-1", "vm-1", "vm-1", "host-1"], "ts": [_ts(5), _ts(6), _ts(10), _ts(9)]}
    )
    assert risk.label(rows, faults, 4).tolist() == [False, True, False, False]
    lake.put_atomic(lake.path(*features.GROUND_TRUTH), [b'{"faults": []}'])
    assert risk.load_labels(lake, T0, T0 + timedelta(days=1)) == ([], risk.LABELS_SIMULATED)


def test_fault_windows_cover_each_entity_from_when_the_fault_reached_it() -> None:
    faults = [
        {
            "fault_type": "x",
            "cause_entity": "a",
            "start": "2026-03-02T10:00:00Z",
            "end": "2026-03-02T11:00:00Z",
            "affected_from": {"b": "2026-03-02T10:30:00Z"},
        },
        {"fault_type": "incident", "cause_entity": "c", "start": "2026-03-02T10:00:00Z"},
    ]
    hours = [9.9, 10.0, 10.4, 11.0, 11.1]
    got = features.in_fault(["a"] * 5 + ["b"] * 5 + ["c"] * 5, [_ts(h) for h in hours] * 3, faults)
    assert got.tolist() == [
        False,
        True,
        True,
        True,
        False,  # a: 10:00 to 11:00
        False,
        False,
        False,
        True,
        False,  # b: 10:30 to 11:00
        False,
        False,
        False,
        False,
        False,
    ]  # c: no end, no window


def test_topology_impact_walks_downstream_along_propagating_relations() -> None:
    topo = Topology.at(ESTATE, TOPOLOGY, T0 + timedelta(days=1, hours=1))
    assert topo.downstream("pdu-1") == {"host-1", "host-2", "vm-1", "vm-2", "svc-1", "app-1"}
    assert topo.impact("pdu-1") == (["医保", "社保"], ["人社厅", "医保局"])
    assert topo.impact("host-1") == (["社保"], ["人社厅"])  # vm-2 has moved to host-2
    assert topo.impact("rack-1") == ([], [])  # located_in carries no failure
    assert topo.upstream("app-1") == {"svc-1", "vm-1", "host-1", "pdu-1"}
    before = Topology.at(ESTATE, TOPOLOGY, T0)
    assert before.impact("host-1") == (["医保", "社保"], ["人社厅", "医保局"])


def _synthetic(days: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows whose true incident probability grows with ``n_upstream`` and a coming change."""
    rng = np.random.default_rng(seed)
    n = days * 24 * 200
    rows = pd.DataFrame(0.0, index=range(n), columns=list(MODEL_FEATURES))
    rows.insert(0, "ts", pd.Timestamp(T0) + pd.to_timedelta(np.arange(n) // 200, unit="h"))
    rows.insert(0, "entity_id", [f"e{i % 200}" for i in range(n)])
    rows.insert(2, "type", np.where(np.arange(n) % 2, "vm", "host"))
    rows["n_upstream"] = rng.integers(0, 8, n).astype(float)
    rows["change_upcoming"] = (rng.random(n) < 0.05).astype(float)
    truth = 0.01 + 0.03 * rows["n_upstream"] + 0.4 * rows["change_upcoming"]
    rows["horizon_h"] = 4
    rows["label"] = rng.random(n) < truth
    return rows, truth.to_numpy()


def test_probabilities_are_calibrated_on_synthetic_rows() -> None:
    rows, _ = _synthetic(days=5, seed=1)
    model = risk.train(rows)
    test, truth = _synthetic(days=2, seed=2)
    p = risk.predict(model, test)["probability"].to_numpy()
    deciles = np.searchsorted(np.quantile(p, np.linspace(0, 1, 11)[1:-1]), p)
    for b in np.unique(deciles):
        assert abs(p[deciles == b].mean() - truth[deciles == b].mean()) < 0.03, b
    y = test["label"].to_numpy()
    assert np.mean((p - y) ** 2) < np.mean((y.mean() - y) ** 2)
    restored = pickle.loads(pickle.dumps(model))
    assert np.allclose(risk.predict(restored, test)["probability"], p)


def test_predict_attaches_impact_to_high_risk_rows_and_rejects_foreign_tables() -> None:
    rows, _ = _synthetic(days=4, seed=3)
    model = risk.train(rows)
    rows = rows.head(400).copy()
    rows["entity_id"] = np.where(rows["change_upcoming"] > 0, "pdu-1", "rack-1")
    out = risk.predict(model, rows, Topology.at(ESTATE, TOPOLOGY, T0), min_probability=0.3)
    risky = out["probability"] >= 0.3
    assert risky.any() and (~risky).any()
    assert all(b == ["医保", "社保"] for b in out.loc[risky, "affected_businesses"])
    assert all(b == [] for b in out.loc[~risky, "affected_businesses"])
    with pytest.raises(InputError, match="horizon_h=4"):
        risk.predict(model, rows.assign(horizon_h=6))
    with pytest.raises(InputError, match="lacks n_upstream"):
        risk.predict(model, rows.drop(columns="n_upstream"))


def _simulated(cfg: SimulationConfig) -> tuple[RiskInputs, list[dict[str, object]]]:
    """The simulator's plan as silver-like tables, skipping landing and Dagster (minutes).

    Metrics and alerts stay empty: the default model does not use them. The CMDB is the
    day-one estate, valid throughout.
    """
    estate = build_estate(cfg)
    hist = plan_history(cfg, estate)
    changes = plan_changes(cfg, estate)
    faults = plan_faults(cfg, estate, hist, failed_changes(changes))
    day_one = pd.Timestamp(cfg.start_ts, unit="s", tz="UTC")
    assets = pd.DataFrame([e.record() for e in estate.entities.values()]).assign(
        valid_from=day_one, valid_to=pd.NaT
    )
    relations = pd.DataFrame(
        sorted(hist.relations_at(cfg.start_ts)),
        columns=["src_entity_id", "relation", "dst_entity_id"],
    ).assign(valid_from=day_one, valid_to=pd.NaT)

    def ts(seconds: int | None) -> pd.Timestamp:
        return pd.Timestamp(seconds, unit="s", tz="UTC") if seconds else pd.NaT

    tickets = pd.DataFrame(
        [
            {
                "type": t.type,
                "entity_id": t.ci,
                "opened_at": ts(t.opened),
                "change_window_start": ts(t.window_start),
                "change_window_end": ts(t.window_end),
            }
            for t in TicketBook(cfg, estate, changes, faults, []).tickets
        ]
    )
    metrics = pd.DataFrame(
        {
            "entity_id": pd.Series(dtype=str),
            "metric": pd.Series(dtype=str),
            "ts": pd.Series(dtype="datetime64[us, UTC]"),
            "value": pd.Series(dtype=float),
        }
    )
    events = pd.DataFrame(columns=["entity_id", "fingerprint", "severity", "starts_at"])
    return (RiskInputs(metrics, events, tickets, assets, relations), [f.to_dict() for f in faults])


def test_held_out_days_of_a_simulated_estate() -> None:
    cfg = SimulationConfig(seed=7, entities=150, days=8, start=T0.date())
    inputs, faults = _simulated(cfg)
    end = T0 + timedelta(days=cfg.days)
    rows = risk.build_features(inputs, T0, end)
    rows["label"] = risk.label(rows, faults, 4)
    figures = risk.evaluate(rows, test_days=3, faults=faults)
    assert figures["test_days"] == ["2026-03-07", "2026-03-08", "2026-03-09"]
    assert figures["train_days"][-1] == "2026-03-06"  # rows up to 4 h before the test days
    assert figures["test_rows"] == 3 * 24 * rows["entity_id"].nunique()
    assert figures["roc_auc"] > 0.65
    assert figures["brier"] < 2 * figures["brier_base_rate"]
    assert sum(b["rows"] for b in figures["reliability"]) == figures["test_rows"]
    assert figures["by_fault_type"]["failed_change"]["roc_auc"] > 0.8
    model = risk.train(rows)
    out = risk.predict(model, rows, Topology.at(inputs.assets, inputs.relations, end), 0.0)
    app = out["entity_id"].str.startswith("app-")
    assert out.loc[app, "affected_businesses"].map(len).min() == 1
