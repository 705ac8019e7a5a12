"""The analysts' client: ``LakeClient.local()`` and ``LakeClient.remote()`` agree, and the notebooks run.

A 60-object estate (one day) goes through the real pipeline and the serving build; an
operations engineer gets an API key and ``opslake serve`` runs on loopback. Each call is made
both ways and the frames compared (columns, types and values); then the three notebooks are
executed with nbclient in a real python3 kernel against the same lake (the quickstart also
through the API).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nbformat
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from nbclient import NotebookClient

from opslake.client import LakeClient
from opslake.errors import AuthError, ConfigError, NotFoundError
from opslake.security.identity import IdentityStore
from opslake.settings import Settings
from tests.integration.conftest import DAY, copy_of
from tests.integration.services import REPO, free_port, running

NEXT = DAY + timedelta(days=1)
METRIC = "cloud.host.cpu_utilisation"
PASSWORD = "Correct-Horse-42-Battery"
NOTEBOOKS = ("quickstart.ipynb", "capacity_planning.ipynb", "incident_review.ipynb")


@dataclass
class Estate:
    settings: Settings
    url: str
    key: str
    env: dict[str, str]
    local: LakeClient
    remote: LakeClient


@pytest.fixture(scope="module")
def estate(day_estate: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estate]:
    settings = copy_of(day_estate, tmp_path_factory, "client")
    home = Path(settings.home)
    base = home.parent
    store = IdentityStore.sealed(settings)
    store.add_user("ana", "ops_engineer", PASSWORD)
    key = store.create_key("ana")[1]
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("OPSLAKE_STATE_DIR", "OPSLAKE_S3_ENDPOINT", "OPSLAKE_API_URL", "OPSLAKE_API_KEY")
    }
    env["OPSLAKE_HOME"] = str(home)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "opslake", "serve", "--port", str(port)]
    with running(cmd, f"{url}/healthz", base / "serve.log", env=env) as serve:
        local, remote = LakeClient.local(settings), LakeClient.remote(url, key)
        try:
            yield Estate(settings, url, key, env, local, remote)
        finally:
            local.close()
            remote.close()
        assert serve.poll() is None, "opslake serve died: " + (base / "serve.log").read_text()


def _same(local: pa.Table, remote: pa.Table, *, unordered: bool = False) -> None:
    """Equal schemas and values; ``unordered`` where the API's order has ties."""
    assert local.schema == remote.schema
    if unordered:
        a, b = pl.from_arrow(local), pl.from_arrow(remote)
        keys = [c for c, t in a.schema.items() if not isinstance(t, pl.List)]
        assert a.sort(keys, nulls_last=True).equals(b.sort(keys, nulls_last=True))
    else:
        assert local.equals(remote), (local.to_pylist()[:3], remote.to_pylist()[:3])


def test_local_and_remote_give_the_same_frames(estate: Estate) -> None:
    local, remote = estate.local, estate.remote
    calls = {
        "metrics": ((), {}),
        "metrics search": ((), {"search": "cpu", "category": "cloud"}),
        "metric all": ((METRIC, DAY, NEXT), {}),
        "metric department 1d": ((METRIC, DAY, NEXT), {"by": "department", "step": "1d"}),
        "metric entity filtered": (
            (METRIC, f"{DAY}T06:00:00Z", f"{DAY}T12:00:00+00:00"),
            {"by": "entity", "object_type": "host"},
        ),
        "incidents": ((), {}),
        "incidents of the day resolved": ((DAY, "resolved"), {}),
        "lineage": ((METRIC,), {}),
        "versions": ((METRIC,), {}),
        "anomalies": ((), {"events_only": True}),
        "assets": ((), {"expiring_within_days": 90}),
    }
    for name, (args, kwargs) in calls.items():
        method = getattr(LakeClient, name.split()[0])
        mine = method(local, *args, as_="arrow", **kwargs)
        theirs = method(remote, *args, as_="arrow", **kwargs)
        assert isinstance(mine, pa.Table) and mine.num_rows, f"{name}: no rows to compare"
        _same(mine, theirs)
    assert local.metric(METRIC, DAY, NEXT, as_="arrow").num_rows == 24
    entity = local.metric(METRIC, DAY, NEXT, by="entity", object_type="host")
    assert set(entity["object_type"]) == {"host"} and entity.height > 24
    found = local.metrics(search="CPU")
    text = pl.concat_str("metric_id", "name_zh_cn", "name_en", "description", separator=" ")
    assert found.height and found.select(text.str.to_lowercase().str.contains("cpu").all()).item()
    assert local.describe(METRIC) == remote.describe(METRIC)
    # The API gives these in an order with ties (quality) or none at all (forecasts).
    _same(local.quality(as_="arrow"), remote.quality(as_="arrow"), unordered=True)
    _same(local.forecasts(as_="arrow"), remote.forecasts(as_="arrow"), unordered=True)
    assert local.latest_day() == remote.latest_day() == DAY
    # Calls the API may not serve yet: equal when it does, a clear error when it does not.
    incident = local.incidents()["incident_id"][0]
    for name, args in (("capacity", ()), ("incident_alerts", (incident,))):
        mine = getattr(local, name)(*args, as_="arrow")
        assert mine.num_rows, name
        try:
            theirs = getattr(remote, name)(*args, as_="arrow")
        except NotFoundError as exc:
            assert "LakeClient.local()" in str(exc) and "has no /v1/" in str(exc)
        else:
            _same(mine, theirs, unordered=True)


def test_dates_as_text_dates_or_datetimes_give_the_same_rows(estate: Estate) -> None:
    lake = estate.local
    want = lake.metric(METRIC, DAY, NEXT)
    for start, end in (
        (DAY.isoformat(), NEXT.isoformat()),
        (f"{DAY}T00:00:00Z", f"{NEXT}T08:00:00+08:00"),
        (datetime(2026, 3, 2), datetime(2026, 3, 3, tzinfo=UTC)),
    ):
        assert lake.metric(METRIC, start, end).equals(want)
        assert estate.remote.metric(METRIC, start, end).equals(want)
    assert lake.incidents(day=datetime(2026, 3, 2, 23, tzinfo=UTC)).equals(
        lake.incidents(day="2026-03-02")
    )


def test_polars_pandas_or_arrow_per_call_or_per_lake(estate: Estate) -> None:
    local, remote = estate.local, estate.remote
    assert isinstance(local.incidents(), pl.DataFrame)
    mine, theirs = local.incidents(as_="pandas"), remote.incidents(as_="pandas")
    assert isinstance(mine, pd.DataFrame)
    pd.testing.assert_frame_equal(mine, theirs)
    frame = local.metric(METRIC, DAY, NEXT, by="department", as_="pandas")
    assert list(frame.columns) == [
        "bucket_start",
        "department",
        "value",
        "numerator",
        "denominator",
        "metric_version",
    ]
    assert str(frame["bucket_start"].dtype).startswith("datetime64[")
    with LakeClient.local(estate.settings, as_="pandas") as lake:
        assert isinstance(lake.metrics(), pd.DataFrame)
        lake.as_ = "arrow"
        assert isinstance(lake.metrics(), pa.Table)
        assert isinstance(lake.metrics(as_="polars"), pl.DataFrame)
        with pytest.raises(ConfigError, match="use 'polars', 'pandas' or 'arrow'"):
            lake.metrics(as_="excel")


def test_errors_say_what_went_wrong_and_what_to_do(estate: Estate) -> None:
    for lake in (estate.local, estate.remote):
        with pytest.raises(
            NotFoundError, match="no metric 'no.such.metric' in the catalog; list them with"
        ):
            lake.metric("no.such.metric", DAY, NEXT)
        with pytest.raises(ConfigError, match="can be broken down by all, .*not 'galaxy'"):
            lake.metric(METRIC, DAY, NEXT, by="galaxy")
        with pytest.raises(ConfigError, match=r"is computed at 1h, 1d, not 5m"):
            lake.metric(METRIC, DAY, NEXT, step="5m")
        with pytest.raises(
            ConfigError,
            match=r"filters \['region'\] do not apply to the "
            "breakdown 'business'",
        ):
            lake.metric(METRIC, DAY, NEXT, by="business", region="杭州市")
        with pytest.raises(ConfigError, match="the time range is empty"):
            lake.metric(METRIC, NEXT, DAY)
        with pytest.raises(ConfigError, match="is not a date or time"):
            lake.metric(METRIC, "yesterday", NEXT)
        with pytest.raises(NotFoundError, match="no metric 'nope'"):
            lake.lineage("nope")
    with pytest.raises(AuthError, match="not an OpsLake API key"):
        LakeClient.remote(estate.url, "olk_wrong").metrics()
    with pytest.raises(ConfigError, match="needs an API key"):
        LakeClient.remote(estate.url, "")
    missing = Settings.from_env({"OPSLAKE_HOME": str(estate.settings.state_dir / "nowhere")})
    with pytest.raises(NotFoundError, match="no serving warehouse at"):
        LakeClient.local(missing).metrics()


def test_local_reads_record_nothing_and_remote_calls_are_audited(estate: Estate) -> None:
    audit = estate.settings.state_dir / "audit"

    def entries() -> int:
        return sum(len(f.read_text().splitlines()) for f in audit.glob("*.jsonl"))

    before = entries()
    estate.local.metrics()
    estate.local.metric(METRIC, DAY, NEXT)
    assert entries() == before
    estate.remote.metrics()
    assert entries() == before + 1


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_against_the_lake(estate: Estate, name: str, tmp_path: Path) -> None:
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    env = dict(estate.env)
    if name == "quickstart.ipynb":
        env |= {"OPSLAKE_API_URL": estate.url, "OPSLAKE_API_KEY": estate.key}
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute(env=env)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs for c in code), [c.source[:60] for c in code if not c.outputs]
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    text = "\n".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
        for c in code
        for o in c.outputs
    )
    expected = {
        "quickstart.ipynb": "remote equals local: True",
        "capacity_planning.ipynb": "capacity series, made on 2026-03-02",
        "incident_review.ipynb": "root cause / 根因:",
    }[name]
    assert expected in text, text[-2000:]
