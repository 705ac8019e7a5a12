"""A lake built in four day shards answers exactly as the unsharded one (issue 17, Must show 6).

The session's ``estate`` (conftest: 60 objects, two days, one shard) is landed again from
the same seed into a second lake that ``opslake materialize`` builds with
``OPSLAKE_SHARDS=4`` in its own process (the shard count shapes the job when the
definitions load). Gold, the screens' datasets, the catalog values and the API's answers
must be the same rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import yaml
from fastapi.testclient import TestClient

from opslake.api.app import create_app
from opslake.crypto import data_key
from opslake.lake.storage import Lake
from opslake.screens.bundle import read_files
from opslake.screens.model import TIMEZONE_TOKEN
from opslake.settings import Settings
from tests.integration.conftest import DAYS, START
from tests.keys import bearer, ingest_key

OPSLAKE = str(Path(sys.executable).with_name("opslake"))
SHARDS = 4
DASHBOARDS_DIR = Path(__file__).parents[2] / "dashboards"
#: Appended by every run with the time it ran: never the same rows twice.
RUN_LOGS = {"metric_usage", "quality_log"}
#: Columns stamped with the wall clock or the run of the step that wrote them (``received_at``
#: of OpsLake's own findings is when its step landed them).
RUN_STAMPS = {"at", "run_id", "received_at", "recorded_at", "recorded_by"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lakes(estate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Settings]]:
    """(the unsharded session estate, the same landing built in four shards)."""
    plain, _truth = estate
    home = tmp_path_factory.mktemp("sharded")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSLAKE_")}
    # The same data key: sealed personal fields are then the same tokens in both lakes.
    env |= {
        "OPSLAKE_HOME": str(home / "lake"),
        "OPSLAKE_STATE_DIR": str(home / "state"),
        "OPSLAKE_SHARDS": str(SHARDS),
        "OPSLAKE_DATA_KEY": data_key(plain).hex(),
    }
    for args in (
        (
            "simulate",
            "--entities",
            "60",
            "--days",
            str(len(DAYS)),
            "--start",
            START.isoformat(),
            "--step",
            "300",
            "--seed",
            "11",
        ),
        ("materialize",),
        ("warehouse", "build"),
    ):
        done = subprocess.run(
            [OPSLAKE, *args], env=env, capture_output=True, text=True, timeout=600, check=False
        )
        assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    yield plain, Settings.from_env(env)


def _files(settings: Settings, layer: str, table: str) -> list[str]:
    lake = Lake.from_settings(settings)
    return [
        f
        for f in lake.list_files(lake.table_path(layer, table), recursive=True)
        if f.endswith(".parquet")
    ]


def _difference(con: duckdb.DuckDBPyConnection, a: str, b: str) -> int:
    """Rows of ``a`` not in ``b`` and of ``b`` not in ``a``, duplicates counted."""
    return con.execute(
        f"SELECT (SELECT count(*) FROM ({a} EXCEPT ALL {b})) + "
        f"(SELECT count(*) FROM ({b} EXCEPT ALL {a}))"
    ).fetchone()[0]


def test_the_heavy_tables_are_one_part_per_shard(lakes) -> None:
    plain, sharded = lakes
    for layer, table in (("silver", "metric_points"), ("gold", "metric_rollup_5m")):
        for day in DAYS:
            names = sorted(
                f.rsplit("/", 1)[-1] for f in _files(sharded, layer, table) if f"/dt={day}/" in f
            )
            assert names == [f"part-{i}.parquet" for i in range(SHARDS)], (table, names)
            assert [
                f.rsplit("/", 1)[-1] for f in _files(plain, layer, table) if f"/dt={day}/" in f
            ] == ["part-0.parquet"]


def test_silver_and_gold_hold_the_same_rows(lakes) -> None:
    plain, sharded = lakes
    con = duckdb.connect()
    compared = []
    for layer in ("silver", "gold"):
        lake = Lake.from_settings(plain)
        for table in lake.list_dirs(lake.path(layer)):
            if table in RUN_LOGS:
                continue
            a, b = _files(plain, layer, table), _files(sharded, layer, table)
            assert bool(a) == bool(b), (layer, table)
            if not a:
                continue
            columns = [
                r[0]
                for r in con.execute(
                    f"DESCRIBE SELECT * FROM read_parquet({a!r}, union_by_name = true)"
                ).fetchall()
            ]
            kept = ", ".join(f'"{c}"' for c in columns if c not in RUN_STAMPS)
            rows = con.execute(f"SELECT count(*) FROM read_parquet({a!r})").fetchone()[0]
            differ = _difference(
                con,
                f"SELECT {kept} FROM read_parquet({a!r}, union_by_name = true)",
                f"SELECT {kept} FROM read_parquet({b!r}, union_by_name = true)",
            )
            assert differ == 0, f"{layer}/{table}: {differ} of {rows} rows differ"
            compared.append((f"{layer}/{table}", rows))
    assert ("silver/metric_points", 0) not in compared
    assert {
        "silver/metric_points",
        "gold/metric_rollup_1h",
        "gold/metric_values",
        "gold/entity_health",
        "gold/anomalies",
    } <= {name for name, _ in compared}
    print(compared)


def test_every_screen_dataset_returns_the_same_rows(lakes) -> None:
    plain, sharded = lakes
    checked = 0
    con = duckdb.connect()
    con.execute(f"ATTACH '{plain.warehouse_path}' AS plain (READ_ONLY)")
    con.execute(f"ATTACH '{sharded.warehouse_path}' AS sharded (READ_ONLY)")
    for rel, text in read_files(DASHBOARDS_DIR).items():
        if not rel.startswith("datasets/"):
            continue
        spec = yaml.safe_load(text)
        sql = spec["sql"].replace(TIMEZONE_TOKEN, plain.timezone)
        answers = []
        for db in ("plain", "sharded"):
            con.execute(f"USE {db}")
            answers.append(sorted(map(repr, con.execute(sql).fetchall())))
        # Each language's copy of a dataset (<key>-en, <key>-zh-tw) reads the same rows.
        stem = Path(rel).stem.removesuffix("-en").removesuffix("-zh-tw")
        if stem in ("quality_checks", "metric_usage", "pipeline_runs"):
            # Run logs and check results carry the time their step ran: same count.
            assert len(answers[0]) == len(answers[1]), rel
        elif stem == "lake_inventory":
            # Files and bytes are the layout (a part per shard); the rows are the content.
            names = [c["column_name"] for c in spec["columns"]]
            kept = ", ".join(f'"{n}"' for n in names if n not in ("files", "bytes"))
            contents = []
            for db in ("plain", "sharded"):
                con.execute(f"USE {db}")
                got = con.execute(f"SELECT {kept} FROM ({sql})").fetchall()
                contents.append(sorted(map(repr, got)))
            assert contents[0] == contents[1] and contents[0], rel
        else:
            assert answers[0] == answers[1], rel
        checked += bool(answers[0])
    assert checked >= 10


@pytest.fixture(scope="module")
def clients(lakes) -> Iterator[list[TestClient]]:
    """An ops engineer's API client on each lake."""
    with (
        TestClient(
            create_app(lakes[0]),
            headers=bearer(ingest_key(lakes[0], user="shard-analyst", role="ops_engineer")),
        ) as plain,
        TestClient(
            create_app(lakes[1]),
            headers=bearer(ingest_key(lakes[1], user="shard-analyst", role="ops_engineer")),
        ) as sharded,
    ):
        yield [plain, sharded]


RANGE = "start={d0}T00:00:00Z&end={d2}T00:00:00Z"


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/metrics/cloud.host.cpu_utilisation/data?{RANGE}&step=1h&by=entity",
        f"/v1/metrics/cloud.node.memory_utilisation/data?{RANGE}&step=1d&by=business",
        f"/v1/metrics/service.sla.attainment/data?{RANGE}&step=1d&by=business",
        "/v1/anomalies?day={d1}",
        "/v1/incidents",
        "/v1/capacity",
        "/v1/forecasts",
    ],
)
def test_the_api_answers_the_same(clients: list[TestClient], path: str) -> None:
    url = path.format(d0=DAYS[0], d1=DAYS[1], d2="2026-03-04")
    rows = []
    for client in clients:
        answer = client.get(url)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        rows.append(sorted(map(repr, body["rows"] if isinstance(body, dict) else body)))
    assert rows[0] == rows[1], url
    assert rows[0], f"{url} answered nothing"
