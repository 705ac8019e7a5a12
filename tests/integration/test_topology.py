"""Logs and topology in the warehouse, the API and the portal (issue 21, S5.2b-c, S5.2f), over
the shared estate: what the API answers is checked against silver (relations as of a time,
an entity's neighbours, its logs), and a department viewer meets only its own CIs."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import polars as pl
import pytest
from fastapi.testclient import TestClient

from opslake.api.app import create_app
from opslake.api.signin import SESSION_COOKIE
from opslake.lake.schemas import LOGS
from opslake.lake.storage import Lake
from opslake.security.identity import IdentityStore
from opslake.settings import Settings

PASSWORD = "Topology-test-pass-1"
SAME = {"Origin": "http://testserver"}


@dataclass
class Topo:
    """The estate's service, silver as the lake holds it, and the viewer's department."""

    app: object
    relations: pl.DataFrame
    assets: pl.DataFrame
    logs: pl.DataFrame
    department: str


@pytest.fixture(scope="module")
def topo(own_estate) -> Topo:
    settings, _ = own_estate
    lake = Lake.from_settings(settings)
    newest = lake.partitions("silver", "relations")[-1]
    relations = pl.from_arrow(lake.read_table("silver", "relations", dts=[newest]))
    assets = pl.from_arrow(lake.read_table("silver", "assets", dts=[newest])).filter(
        pl.col("valid_to").is_null()
    )
    logs = pl.from_arrow(lake.read_table("silver", "logs", schema=LOGS))
    # The department of the business with the most CIs: its viewer has something to see.
    department = (
        assets.filter(pl.col("business").is_not_null())
        .group_by("department")
        .len()
        .sort(["len", "department"], descending=[True, False])
        .item(0, "department")
    )
    store = IdentityStore.sealed(settings)
    store.add_user("tp-olga", "ops_engineer", PASSWORD)
    store.add_user("tp-dora", "dept_viewer", PASSWORD, departments=[department])
    return Topo(
        create_app(Settings.from_env({"OPSLAKE_HOME": settings.home})),
        relations,
        assets,
        logs,
        department,
    )


def _client(t: Topo, user: str) -> TestClient:
    client = TestClient(t.app)
    form = {"user": user, "password": PASSWORD, "next": "/"}
    signed = client.post("/login", data=form, headers=SAME, follow_redirects=False)
    assert signed.status_code == 303, signed.text
    client.headers["Authorization"] = f"Bearer {client.cookies[SESSION_COOKIE]}"
    return client


def _edges(rows: list[dict]) -> set[tuple[str, str, str]]:
    return {(r["src_entity_id"], r["relation"], r["dst_entity_id"]) for r in rows}


def test_relations_now_and_as_of_a_time_are_silvers_edges(topo: Topo) -> None:
    with _client(topo, "tp-olga") as client:
        now = client.get("/v1/relations", params={"limit": 10000}).json()["rows"]
        ended = topo.relations.filter(pl.col("valid_to").is_not_null()).row(0, named=True)
        middle = ended["valid_from"] + (ended["valid_to"] - ended["valid_from"]) / 2
        then = client.get(
            "/v1/relations", params={"as_of": middle.isoformat(), "entity": ended["src_entity_id"]}
        )
        assert then.status_code == 200, then.text
        page = client.get("/v1/relations", params={"limit": 2, "offset": 1}).json()["rows"]
    current = topo.relations.filter(pl.col("valid_to").is_null())
    assert _edges(now) == _edges(current.to_dicts())
    edge = (ended["src_entity_id"], ended["relation"], ended["dst_entity_id"])
    assert edge not in _edges(now)
    # As of a time inside its validity the historical edge is back, with its interval.
    past = [r for r in then.json()["rows"] if _edges([r]) == {edge}]
    assert len(past) == 1 and past[0]["valid_to"] is not None
    expected_then = topo.relations.filter(
        (pl.col("valid_from") <= middle)
        & (pl.col("valid_to").is_null() | (pl.col("valid_to") > middle))
        & (
            (pl.col("src_entity_id") == ended["src_entity_id"])
            | (pl.col("dst_entity_id") == ended["src_entity_id"])
        )
    )
    assert _edges(then.json()["rows"]) == _edges(expected_then.to_dicts())
    assert page == now[1:3]  # pages follow one order


def test_an_entitys_neighbours_metrics_and_logs_are_what_silver_holds(topo: Topo) -> None:
    current = topo.relations.filter(pl.col("valid_to").is_null())
    # A VM that runs a service and runs on a host: the middle of the chain.
    vm = (
        current.filter(pl.col("relation") == "runs_on")
        .join(
            topo.assets.select("entity_id", "type", "lifecycle_state"),
            left_on="src_entity_id",
            right_on="entity_id",
        )
        .filter((pl.col("type") == "vm") & (pl.col("lifecycle_state") == "in_service"))
        .filter(pl.col("src_entity_id").is_in(current.get_column("dst_entity_id").implode()))
        .filter(pl.col("src_entity_id").is_in(topo.logs.get_column("entity_id").implode()))
        .item(0, "src_entity_id")
    )
    with _client(topo, "tp-olga") as client:
        body = client.get(f"/v1/entities/{vm}").json()
        lines = []
        offset = 0
        while page := client.get(
            "/v1/logs", params={"entity": vm, "limit": 50, "offset": offset}
        ).json()["rows"]:
            lines += page
            offset += 50
        errors = client.get("/v1/logs", params={"entity": vm, "level": "err"}).json()["rows"]
    assert body["entity"]["entity_id"] == vm and body["entity"]["type"] == "vm"
    hop = {
        d: [r for r in body["neighbours"]["rows"] if r["direction"] == d and r["hops"] == 1]
        for d in ("down", "up")
    }
    assert _edges(hop["down"]) == _edges(current.filter(pl.col("src_entity_id") == vm).to_dicts())
    assert _edges(hop["up"]) == _edges(current.filter(pl.col("dst_entity_id") == vm).to_dicts())
    # Two hops down reaches the host's own dependencies.
    host = next(r["dst_entity_id"] for r in hop["down"] if r["relation"] == "runs_on")
    below_host = current.filter(pl.col("src_entity_id") == host)
    two = {
        (r["src_entity_id"], r["relation"], r["dst_entity_id"])
        for r in body["neighbours"]["rows"]
        if r["hops"] == 2 and r["src_entity_id"] == host
    }
    assert two == _edges(below_host.to_dicts())
    assert body["metrics"]["count"] > 0 and body["health"]["entity_id"] == vm
    # Every log line of the VM is counted once, under its level, in the hourly templates.
    mine = topo.logs.filter(pl.col("entity_id") == vm)
    assert sum(r["count"] for r in lines) == mine.height
    assert sum(r["count"] for r in errors) == mine.filter(pl.col("severity") <= 3).height > 0
    assert {r["level"] for r in errors} <= {"emerg", "alert", "crit", "err"}
    # Recent templates: its last logged day, most frequent first.
    counts = [r["count"] for r in body["logs"]["rows"]]
    assert counts == sorted(counts, reverse=True) and counts
    assert all(
        re.search(r"\d+\.\d+\.\d+\.\d+", r["template"]) is None for r in body["logs"]["rows"]
    )


def test_a_department_viewer_meets_only_its_own_cis(topo: Topo) -> None:
    # The viewer is given a department and no business: its rows are that department's.
    visible = set(
        topo.assets.filter(pl.col("department") == topo.department).get_column("entity_id")
    )
    foreign = sorted(set(topo.assets.get_column("entity_id")) - visible)
    mine = sorted(visible)
    assert foreign and mine
    with _client(topo, "tp-dora") as client:
        assert client.get(f"/v1/entities/{foreign[0]}").status_code == 404
        page404 = client.get(f"/entities/{foreign[0]}")
        body = client.get(f"/v1/entities/{mine[0]}").json()
        graph = client.get("/v1/topology").json()
        edges = client.get("/v1/relations").json()["rows"]
        logs = client.get("/v1/logs", params={"limit": 10000}).json()["rows"]
        page = client.get("/topology")
    assert page404.status_code == 404
    ends = {e for r in body["neighbours"]["rows"] for e in (r["src_entity_id"], r["dst_entity_id"])}
    assert ends <= visible
    assert {n["entity_id"] for n in graph["nodes"]} <= visible and graph["nodes"]
    inside = topo.relations.filter(
        pl.col("valid_to").is_null()
        & pl.col("src_entity_id").is_in(list(visible))
        & pl.col("dst_entity_id").is_in(list(visible))
    )
    assert _edges(edges) == _edges(inside.to_dicts()) and edges
    assert {r["entity_id"] for r in logs} <= visible
    assert (
        sum(r["count"] for r in logs)
        == topo.logs.filter(pl.col("entity_id").is_in(list(visible))).height
        > 0
    )
    assert page.status_code == 200
    drawn = set(re.findall(r'data-entity="([^"]+)"', page.text))
    assert drawn and drawn <= visible and not drawn & set(foreign)


def test_the_topology_page_draws_every_ci_coloured_by_health(topo: Topo) -> None:
    with _client(topo, "tp-olga") as client:
        graph = client.get("/v1/topology").json()
        page = client.get("/topology")
        one = client.get("/topology", params={"business": graph["nodes"][0]["business"] or "x"})
        vm = next(n["entity_id"] for n in graph["nodes"] if n["type"] == "vm")
        entity = client.get(f"/entities/{vm}")
    assert page.status_code == 200 and one.status_code == 200
    assert "script" not in page.headers["content-security-policy"]
    summary = re.search(r'data-nodes="(\d+)" data-edges="(\d+)"', page.text)
    assert (
        summary
        and int(summary[1]) == len(graph["nodes"])
        and int(summary[2]) == len(graph["edges"])
    )
    # Every CI is drawn (some more than once: a host under each of its VMs), in its status.
    drawn = {
        e: s for s, e in re.findall(r'class="node health-(\w+)" data-entity="([^"]+)"', page.text)
    }
    assert set(drawn) == {n["entity_id"] for n in graph["nodes"]}
    for n in graph["nodes"]:
        expected = (n["health"] or {}).get("status") or "unknown"
        assert drawn[n["entity_id"]] == expected
    assert entity.status_code == 200
    text = html.unescape(entity.text)
    assert vm in text and 'id="neighbours"' in text and 'class="log level-' in text


def test_an_entity_shows_the_firing_incidents_and_alerts_that_touch_it(topo: Topo) -> None:
    with _client(topo, "tp-olga") as client:
        firing = [r for r in client.get("/v1/incidents").json()["rows"] if r["status"] == "firing"]
        assert firing
        alerts = client.get(f"/v1/incidents/{firing[0]['incident_id']}/alerts").json()["rows"]
        alert = next(a for a in alerts if a["ends_at"] is None and a["entity_id"])
        body = client.get(f"/v1/entities/{alert['entity_id']}").json()
    expected = {r["incident_id"] for r in firing if alert["entity_id"] in r["entities"]}
    assert {i["incident_id"] for i in body["incidents"]["rows"]} == expected
    assert alert["alert_id"] in {a["alert_id"] for a in body["alerts"]["rows"]}
