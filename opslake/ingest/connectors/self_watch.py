"""The ``opslake-self`` connector: the platform's own figures as an ordinary metric source.

Each run collects, as gauges with ``job="opslake-self"`` and the component as ``entity_id``:

- ``opslake-api`` (the data service's ``/metrics``, read with ``Settings.self_api_key``, a key
  with ``platform:read``): ``opslake_api_up``, ``opslake_api_requests``,
  ``opslake_api_errors_5xx`` and ``opslake_api_errors_4xx`` (answers since the previous run)
  and ``opslake_api_latency_p95_seconds`` (over those answers);
- ``opslake-pipeline`` (the Dagster instance under ``Settings.dagster_home``): runs that ended
  since the previous run, ``opslake_pipeline_runs{status}``, ``opslake_pipeline_failed_runs``,
  ``opslake_pipeline_step_retries`` and ``opslake_pipeline_run_seconds_max``;
- ``opslake-lake`` (at most once per ``lake_every_seconds``, reading every partition's
  footer costs): ``opslake_lake_bytes`` and ``opslake_lake_rows`` per ``layer`` and ``day``
  for today and yesterday;
- ``opslake-superset`` (``GET {superset_url}/health``): ``opslake_superset_up`` and
  ``opslake_superset_health_seconds``;
- ``collector-<task>`` (the collection state): ``opslake_collection_lag_seconds`` of each
  enabled task that has succeeded once, ``opslake_collection_healthy`` (1 or 0).

A part that cannot be reached is reported (``…_up 0``), never a failed run: the platform's
watcher must keep running when what it watches is down. The samples land as Prometheus text
exposition with millisecond timestamps into ``landing/prometheus`` (connector
``opslake-self/1``), so they reach bronze, silver ``metric_points`` and gold like any other
metric; then the rules of ``config/alerting/self.yaml`` are evaluated on them
(:mod:`opslake.alerting.selfwatch`). Counters are turned into per-run figures against the
previous run's, kept as the connector's cursor in the collection state
(:func:`opslake.ingest.collect.read_cursor`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import httpx
from prometheus_client.parser import text_string_to_metric_families

from opslake.alerting import selfwatch
from opslake.alerting.selfwatch import Sample
from opslake.ingest import collect
from opslake.ingest.connectors.base import DEFAULT_TIMEOUT, Connector, aware
from opslake.ingest.parsers.prometheus_text import canonical
from opslake.ingest.tasks import load_tasks
from opslake.lake.inventory import inventory
from opslake.lake.landing import LandedBatch, LandingZone
from opslake.settings import Settings

JOB = "opslake-self"
API, PIPELINE, LAKE, SUPERSET = (
    "opslake-api",
    "opslake-pipeline",
    "opslake-lake",
    "opslake-superset",
)
_REQUESTS = "opslake_http_requests_total"
_BUCKETS = "opslake_http_request_duration_seconds_bucket"


class SelfWatch(Connector):
    """Collect the platform's own figures once; see the module doc."""

    name = "opslake-self"
    version = "1"
    source = "prometheus"
    fmt = "prom"

    def __init__(
        self,
        api_url: str | None = None,
        superset_url: str | None = None,
        lake_every_seconds: int = 3600,
    ) -> None:
        self.api_url = api_url.rstrip("/") if api_url else None
        self.superset_url = superset_url.rstrip("/") if superset_url else None
        self.lake_every_seconds = lake_every_seconds

    def collect(self, landing: LandingZone, now: datetime) -> list[LandedBatch]:
        now = aware(now)
        settings = Settings.from_env()
        before = collect.read_cursor(settings, self.name)
        after: dict = {"at": now.isoformat()}
        samples: list[Sample] = []
        if self.api_url:
            samples += self._api(settings, before.get("api"), after)
        samples += _pipeline(settings, before.get("at"), now)
        lake_at = before.get("lake_at")
        if lake_at is None or (now - datetime.fromisoformat(lake_at)).total_seconds() >= (
            self.lake_every_seconds
        ):
            samples += _lake(landing, now)
            after["lake_at"] = now.isoformat()
        else:
            after["lake_at"] = lake_at
        if self.superset_url:
            samples += _superset(self.superset_url)
        samples += _collection(settings, now)
        batch = self.land(landing, exposition(samples, now), now)
        collect.write_cursor(settings, self.name, after)
        alerts = selfwatch.evaluate(landing, selfwatch.load(settings.alerting_dir), samples, now)
        return [batch, *alerts]

    def _api(self, settings: Settings, previous: dict | None, after: dict) -> list[Sample]:
        """The data service's answers since ``previous`` (its counters then)."""
        headers = {"Accept": "text/plain;version=0.0.4"}
        if settings.self_api_key:
            headers["Authorization"] = f"Bearer {settings.self_api_key}"
        try:
            response = httpx.get(
                f"{self.api_url}/metrics", headers=headers, timeout=DEFAULT_TIMEOUT
            )
            response.raise_for_status()
        except httpx.HTTPError:
            return [Sample("opslake_api_up", {"entity_id": API}, 0.0)]
        counts: dict[str, float] = {}
        buckets: dict[float, float] = {}
        for family in text_string_to_metric_families(response.text):
            for s in family.samples:
                if s.name == _REQUESTS:
                    cls = s.labels["status_class"]
                    counts[cls] = counts.get(cls, 0.0) + s.value
                elif s.name == _BUCKETS:
                    le = float(s.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + s.value
        after["api"] = {"counts": counts, "buckets": {repr(k): v for k, v in buckets.items()}}
        was = previous or {"counts": {}, "buckets": {}}
        # A restarted service starts its counters at 0: its figures since then are the delta.
        restarted = sum(counts.values()) < sum(was["counts"].values())
        out = [Sample("opslake_api_up", {"entity_id": API}, 1.0)]
        # One name per figure: hourly rollups keep the name and the entity, not the labels.
        since = {
            cls: n - (0.0 if restarted else was["counts"].get(cls, 0.0))
            for cls, n in counts.items()
        }
        entity = {"entity_id": API}
        out += [
            Sample("opslake_api_requests", entity, sum(since.values())),
            Sample("opslake_api_errors_5xx", entity, since.get("5xx", 0.0)),
            Sample("opslake_api_errors_4xx", entity, since.get("4xx", 0.0)),
        ]
        delta_buckets = {
            le: n - (0.0 if restarted else was["buckets"].get(repr(le), 0.0))
            for le, n in buckets.items()
        }
        if (p95 := quantile(delta_buckets, 0.95)) is not None:
            out.append(Sample("opslake_api_latency_p95_seconds", {"entity_id": API}, p95))
        return out


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """The ``q`` quantile of cumulative histogram ``buckets`` (upper bound → count), linearly
    interpolated within its bucket as Prometheus's ``histogram_quantile`` does; None if empty."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for le in bounds:
        if buckets[le] >= rank:
            if le == float("inf"):
                return lower  # beyond the last finite bound: its bound is all that is known
            share = (rank - below) / (buckets[le] - below) if buckets[le] > below else 1.0
            return lower + (le - lower) * share
        lower, below = le, buckets[le]
    return lower


def _pipeline(settings: Settings, since: str | None, now: datetime) -> list[Sample]:
    """Dagster runs that ended after ``since`` (the last hour on a first run)."""
    if not (settings.dagster_home / "dagster.yaml").exists():
        return []
    # Imported here: Dagster costs seconds to import, and only this part needs it.
    import dagster as dg

    start = datetime.fromisoformat(since) if since else now - timedelta(hours=1)
    done = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        records = instance.get_run_records(
            dg.RunsFilter(statuses=list(done), updated_after=start), limit=1000
        )
        runs = {status.value: 0 for status in done}
        longest, retries = 0.0, 0
        for record in records:
            runs[record.dagster_run.status.value] += 1
            if record.start_time and record.end_time:
                longest = max(longest, record.end_time - record.start_time)
            retries += len(
                instance.get_records_for_run(
                    record.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY
                ).records
            )
    entity = {"entity_id": PIPELINE}
    return [
        *(
            Sample("opslake_pipeline_runs", entity | {"status": s}, float(n))
            for s, n in runs.items()
        ),
        Sample("opslake_pipeline_failed_runs", entity, float(runs["FAILURE"])),
        Sample("opslake_pipeline_step_retries", entity, float(retries)),
        Sample("opslake_pipeline_run_seconds_max", entity, longest),
    ]


def _lake(landing: LandingZone, now: datetime) -> list[Sample]:
    """Bytes and rows per layer of today's and yesterday's partitions."""
    days = {(now - timedelta(days=k)).date().isoformat() for k in (0, 1)}
    totals: dict[tuple[str, str], list[float]] = {}
    for part in inventory(landing.lake):
        if part.dt in days:
            sums = totals.setdefault((part.layer, part.dt), [0.0, 0.0])
            sums[0] += part.bytes
            sums[1] += part.rows
    return [
        Sample(metric, {"entity_id": LAKE, "layer": layer, "day": day}, sums[i])
        for (layer, day), sums in sorted(totals.items())
        for i, metric in enumerate(("opslake_lake_bytes", "opslake_lake_rows"))
    ]


def _superset(url: str) -> list[Sample]:
    entity = {"entity_id": SUPERSET}
    started = time.perf_counter()
    try:
        up = httpx.get(f"{url}/health", timeout=DEFAULT_TIMEOUT).status_code == 200
    except httpx.HTTPError:
        up = False
    return [
        Sample("opslake_superset_up", entity, 1.0 if up else 0.0),
        Sample("opslake_superset_health_seconds", entity, time.perf_counter() - started),
    ]


def _collection(settings: Settings, now: datetime) -> list[Sample]:
    """Each enabled task's lag since its last success and whether it is healthy."""
    out = []
    for task in collect.inventory(settings, load_tasks(settings.tasks_dir, missing_ok=True), now):
        if not task.enabled:
            continue
        entity = {"entity_id": f"collector-{task.name}", "task": task.name}
        out.append(
            Sample("opslake_collection_healthy", entity, 1.0 if task.state == "healthy" else 0.0)
        )
        if task.lag_seconds is not None:
            out.append(Sample("opslake_collection_lag_seconds", entity, task.lag_seconds))
    return out


def exposition(samples: Iterable[Sample], at: datetime) -> bytes:
    """``samples`` as text exposition 0.0.4, each with ``job`` and the time ``at`` (ms)."""
    ms = int(at.astimezone(UTC).timestamp() * 1000)
    lines = [
        f"{s.metric}{canonical({**s.labels, 'job': JOB})} {float(s.value)!r} {ms}" for s in samples
    ]
    return ("\n".join(lines) + "\n").encode()
