"""Incident handling end to end on a copy of the shared estate: the API, the CLI, row scoping, MTTA/MTTR.

An operations engineer acknowledges, assigns, comments and resolves an incident through the
real API; the history says who and when, in order; the incident list shows the handling at
once; a department viewer of another department cannot see it, one of its own department may
comment but not resolve; the CLI does the same as a named user and is audited; and the
incident's MTTA/MTTR come from these events.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow.compute as pc
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from opslake.alerting.handling import HandlingLog, handled_incidents
from opslake.api.app import create_app
from opslake.cli import app as cli
from opslake.errors import Forbidden, HandlingError, NotFoundError, OpsLakeError
from opslake.kpi.service_levels import service_levels
from opslake.lake.landing import LandingZone
from opslake.lake.schemas import TICKETS
from opslake.lake.storage import Lake
from opslake.orchestration import runner
from opslake.security.audit import AuditLog
from opslake.security.identity import IdentityStore
from opslake.settings import Settings
from tests.integration.conftest import DAYS
from tests.keys import PASSWORD, bearer


@dataclass
class Handling:
    settings: Settings
    client: TestClient
    keys: dict[str, str]
    incident: str
    day: str


def _linked_incident(lake: Lake) -> tuple[str, str, list[str]]:
    """An incident with departments whose alerts an ITSM incident ticket links to."""
    tickets = lake.read_table("silver", "tickets", schema=TICKETS)
    linked = set(
        tickets.filter(pc.equal(tickets.column("type"), "incident"))
        .column("alert_fingerprint")
        .to_pylist()
    ) - {None, ""}
    alerts = lake.read_table("gold", "incident_alerts", columns=["incident_id", "fingerprint"])
    ids = {a["incident_id"] for a in alerts.to_pylist() if a["fingerprint"] in linked}
    rows = [
        r
        for r in lake.read_table("gold", "incidents").to_pylist()
        if r["incident_id"] in ids and r["departments"]
    ]
    first = min(rows, key=lambda r: r["incident_id"])
    return first["incident_id"], first["started_at"].date().isoformat(), first["departments"]


@pytest.fixture(scope="module")
def handling(own_estate) -> Handling:
    settings, _ = own_estate
    incident, day, departments = _linked_incident(Lake.from_settings(settings))
    store = IdentityStore.sealed(settings)
    users = {
        "hd_ops": ("ops_engineer", ()),
        "hd_lead": ("leadership", ()),
        "hd_own": ("dept_viewer", departments),
        "hd_other": ("dept_viewer", ["别的部门"]),
    }
    keys = {}
    for name, (role, own) in users.items():
        store.add_user(name, role, PASSWORD, departments=own)
        keys[name] = store.create_key(name, quota_per_day=100_000)[1]
    return Handling(settings, TestClient(create_app(settings)), keys, incident, day)


def _post(h: Handling, user: str, action: str, body: dict | None = None):
    return h.client.post(
        f"/v1/incidents/{h.incident}/{action}", json=body, headers=bearer(h.keys[user])
    )


def _mtta_mttr(h: Handling) -> tuple[float, float]:
    """The province's MTTA and MTTR of the incident's day, as gold/service_levels computes
    them, from the handling events as of now."""
    lake = Lake.from_settings(h.settings)
    tickets = lake.read_table("silver", "tickets", schema=TICKETS, dts=[h.day])
    states = HandlingLog(LandingZone.from_settings(h.settings)).states()
    row = service_levels(
        tickets, date.fromisoformat(h.day), handled_incidents(lake, states)
    ).to_pylist()[0]
    return row["mtta_minutes"], row["mttr_minutes"]


def test_handled_through_the_api_with_who_and_when(handling: Handling) -> None:
    h = handling
    before = _mtta_mttr(h)
    assert (
        _post(h, "hd_ops", "ack", {"comment": "on it"}).json()["state"]["handling_status"]
        == "acknowledged"
    )
    assigned = _post(h, "hd_ops", "assign", {"assignee": "云平台组", "kind": "group"})
    assert assigned.status_code == 200, assigned.text
    assert _post(h, "hd_ops", "assign", {"assignee": "nobody"}).status_code == 400
    assert _post(h, "hd_ops", "severity", {"severity": "critical"}).status_code == 200
    assert _post(h, "hd_ops", "comment", {"text": "数据库连接池已扩容"}).status_code == 200
    # A viewer of another department does not see it; of its own may comment, not resolve.
    assert _post(h, "hd_other", "comment", {"text": "?"}).status_code == 404
    assert (
        h.client.get(
            f"/v1/incidents/{h.incident}/history", headers=bearer(h.keys["hd_other"])
        ).status_code
        == 404
    )
    assert _post(h, "hd_own", "comment", {"text": "业务已恢复"}).status_code == 200
    assert _post(h, "hd_own", "resolve").status_code == 403
    assert _post(h, "hd_lead", "ack").status_code == 403
    resolved = _post(h, "hd_ops", "resolve", {"comment": "fixed"})
    assert resolved.json()["state"]["resolved_by"] == "hd_ops"
    again = _post(h, "hd_ops", "resolve")
    assert again.status_code == 400 and "reopen it first" in again.json()["fix"]

    history = h.client.get(
        f"/v1/incidents/{h.incident}/history", headers=bearer(h.keys["hd_own"])
    ).json()
    assert [(e["action"], e["actor"]) for e in history["events"]] == [
        ("acknowledge", "hd_ops"),
        ("assign", "hd_ops"),
        ("severity", "hd_ops"),
        ("comment", "hd_ops"),
        ("comment", "hd_own"),
        ("resolve", "hd_ops"),
    ]
    times = [e["at"] for e in history["events"]]
    assert times == sorted(times) and all(
        e["via"].startswith("api:key ") for e in history["events"]
    )
    assert history["state"]["comments"] == 2

    listed = h.client.get(
        "/v1/incidents", params={"day": h.day}, headers=bearer(h.keys["hd_lead"])
    ).json()["rows"]
    mine = next(r for r in listed if r["incident_id"] == h.incident)
    assert (mine["handling_status"], mine["assignee"], mine["severity_override"]) == (
        "resolved",
        "云平台组",
        "critical",
    )
    assert mine["acknowledged_by"] == "hd_ops" and mine["acknowledged_at"] == times[0]

    # MTTA/MTTR: the incident now counts by its own acknowledgement and resolution.
    after = _mtta_mttr(h)
    assert after != before and after[0] > before[0] and after[1] > before[1]

    entries = [
        json.loads(line)
        for f in sorted(AuditLog.from_settings(h.settings).directory.glob("*.jsonl"))
        for line in f.read_text().splitlines()
        if line.strip()
    ]
    acts = [e for e in entries if e.get("action") == "POST /v1/incidents/{incident_id}/resolve"]
    assert {(e["who"], e["status"]) for e in acts} >= {("hd_ops", 200), ("hd_own", 403)}


def test_cli_handles_as_a_named_user(handling: Handling, monkeypatch) -> None:
    h = handling
    monkeypatch.setenv("OPSLAKE_HOME", h.settings.home)
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        """Exit code and output as `opslake` gives them (an OpsLake error: its code)."""
        result = runner.invoke(cli, ["alerts", *args])
        if isinstance(result.exception, OpsLakeError):
            return result.exception.exit_code, str(result.exception)
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            result.exception
        )
        return result.exit_code, result.output

    assert run("reopen", h.incident, "--as", "hd_own")[0] == Forbidden.exit_code
    code, said = run("reopen", h.incident, "--as", "hd_ops", "--comment", "came back")
    assert code == 0 and "is open" in said, said
    assert run("comment", h.incident, "从命令行评论", "--as", "hd_own")[0] == 0
    assert run("comment", h.incident, "x", "--as", "hd_other")[0] == NotFoundError.exit_code
    assert run("ack", h.incident, "--as", "hd_ops")[0] == 0
    assert run("assign", h.incident, "hd_ops", "--as", "hd_ops")[0] == 0
    code, said = run("ack", h.incident, "--as", "hd_ops")
    assert code == HandlingError.exit_code and "only an open incident" in said, said
    assert run("resolve", h.incident, "--as", "hd_ops")[0] == 0
    code, shown = run("history", h.incident)
    assert code == 0 and "reopen" in shown and "cli:" in shown
    code, shown = run("show", h.incident, "--day", h.day)
    assert code == 0 and json.loads(shown)["handling"]["handling_status"] == "resolved"
    code, listed = run("incidents", "--day", h.day, "--limit", "1")
    assert code == 0 and "the 1 most severe of" in listed, listed
    assert listed.count("INC-") == 1
    state = HandlingLog(LandingZone.from_settings(h.settings)).state(h.incident)
    assert (state.handling_status, state.assignee, state.reopens) == ("resolved", "hd_ops", 1)
    audit = [
        json.loads(line)
        for f in sorted(AuditLog.from_settings(h.settings).directory.glob("*.jsonl"))
        for line in f.read_text().splitlines()
        if line.strip()
    ]
    cli_acts = [e for e in audit if e.get("action", "").startswith("opslake alerts ")]
    assert {(e["action"], e["params"]["acting_as"], e["status"]) for e in cli_acts} >= {
        ("opslake alerts ack", "hd_ops", 0),
        ("opslake alerts ack", "hd_ops", HandlingError.exit_code),
        ("opslake alerts comment", "hd_other", NotFoundError.exit_code),
        ("opslake alerts reopen", "hd_own", Forbidden.exit_code),
    }


def test_two_api_hosts_on_one_database_take_each_step_once(
    handling: Handling, database_url: str | None, tmp_path: Path
) -> None:
    """Two data services over the one lake take comments on one incident at once: on
    PostgreSQL each with a state directory of its own (two hosts sharing
    OPSLAKE_DATABASE_URL), on SQLite both over the estate's (two processes of one host)."""
    h = handling
    hosts = [h.settings, h.settings]
    if database_url:
        hosts = [
            replace(h.settings, state_dir=tmp_path / f"host{i}", database_url=database_url)
            for i in range(2)
        ]
        for host in hosts:  # the hosts share the data key and serve one warehouse
            shutil.copytree(h.settings.state_dir / "keys", host.state_dir / "keys")
            host.warehouse_path.symlink_to(h.settings.warehouse_path)
    store = IdentityStore.sealed(hosts[0])
    store.add_user("hd_two", "ops_engineer", PASSWORD)
    key = store.create_key("hd_two", quota_per_day=100_000)[1]
    clients = [TestClient(create_app(host)) for host in hosts]
    incident = next(
        r["incident_id"]
        for r in Lake.from_settings(h.settings).read_table("gold", "incidents").to_pylist()
        if r["incident_id"] != h.incident and r["departments"]
    )
    before = len(HandlingLog(LandingZone.from_settings(h.settings)).events([incident]))

    def comment(n: int) -> int:
        return (
            clients[n % 2]
            .post(f"/v1/incidents/{incident}/comment", json={"text": f"#{n}"}, headers=bearer(key))
            .status_code
        )

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(comment, range(8))) == [200] * 8
    events = HandlingLog(LandingZone.from_settings(h.settings)).events([incident])
    assert sorted(e.seq for e in events) == list(range(1, before + 9))
    assert sorted(e.comment for e in events[before:]) == [f"#{n}" for n in range(8)]


def test_the_pipeline_carries_the_actions_into_silver_and_gold(handling: Handling) -> None:
    """Landing → bronze → silver/incident_actions → gold/incident_state for today, the log
    then reads the same events from silver without counting any twice, and the incident's
    day's gold/service_levels counts them."""
    h = handling
    log = HandlingLog(LandingZone.from_settings(h.settings))
    events = log.events([h.incident])
    today = datetime.now(UTC).date().isoformat()
    runner.materialize(h.settings, [today], ["landing/incident_actions+"])
    lake = Lake.from_settings(h.settings)
    silver = lake.read_table("silver", "incident_actions", dts=[today])
    assert silver.num_rows == len(log.events()) and len(events) == 11  # the two tests' actions
    assert log.events([h.incident]) == events
    gold = {
        r["incident_id"]: r
        for r in lake.read_table("gold", "incident_state", dts=[today]).to_pylist()
    }
    assert gold[h.incident] == asdict(log.state(h.incident))
    # gold/service_levels, by the asset, agrees with the figures above (both days: a ticket
    # of the other day may be the incident's).
    runner.materialize(h.settings, DAYS, ["gold/service_levels"])
    row = lake.read_table("gold", "service_levels", dts=[h.day]).to_pylist()[0]
    assert (row["mtta_minutes"], row["mttr_minutes"]) == _mtta_mttr(h)
