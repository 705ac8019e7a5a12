"""The analysts' client: one ``LakeClient`` over the serving warehouse or over the read API.

``LakeClient.local()`` opens the serving warehouse (``warehouse.duckdb``) read-only with
DuckDB and runs the same fixed statements, with bound parameters, that the read API runs; it
records nothing and sees every row (whoever can read the file can read it all).
``LakeClient.remote(url, key)`` asks the API (``/v1``) for Arrow IPC and decodes it with pyarrow; the API checks the
key, scopes rows by role and audits each call. Both offer the same calls with the same
columns and types, as polars (default), pandas or Arrow::

    from opslake.client import LakeClient

    lake = LakeClient.local()  # or LakeClient.remote("http://host:8700", "olk_…")
    lake.metrics(search="cpu")
    lake.metric("cloud.host.cpu_utilisation", "2026-03-02", "2026-03-03", by="business")
    lake.incidents(status="firing", as_="pandas")

Errors are :class:`~opslake.errors.OpsLakeError` subclasses whose message says what went
wrong and what to do (for the API, its ``{"error", "fix"}`` body).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Literal, Self

import duckdb
import pyarrow as pa

from opslake.api import statements
from opslake.errors import (
    AuthError,
    ConfigError,
    Forbidden,
    NotFoundError,
    OpsLakeError,
    QuotaExceeded,
    StorageError,
)
from opslake.metrics_catalog.compute import SCOPE_COLUMNS
from opslake.settings import Settings

if TYPE_CHECKING:
    from opslake.alerting.handling import HandlingLog
    from opslake.api.warehouse import WarehouseReader

__all__ = ["FILTERS", "LakeClient", "Output", "When"]

#: What a call returns: a polars DataFrame, a pandas DataFrame or a pyarrow Table.
Output = Literal["polars", "pandas", "arrow"]
#: A day or an instant: ``"2026-03-02"``, ``"2026-03-02T08:00:00Z"``, a date or a datetime.
When = str | date | datetime
#: Dimension filters ``metric()`` accepts, per breakdown (as the API's).
FILTERS = SCOPE_COLUMNS
_OUTPUTS = ("polars", "pandas", "arrow")


class LakeClient:
    """Read OpsLake's serving data as DataFrames, locally or through the API.

    Build one with :meth:`local` or :meth:`remote`; every call takes ``as_`` ("polars",
    "pandas" or "arrow") and otherwise uses the lake's default, set at construction or on
    :attr:`as_`. A lake can be used as a context manager, which closes it at the end.
    """

    def __init__(self, backend: _Backend, as_: Output = "polars") -> None:
        """Wrap a backend; use :meth:`local` or :meth:`remote` rather than this."""
        self._backend = backend
        self.as_: Output = _output(as_)

    # -- construction --------------------------------------------------------------------

    @classmethod
    def local(cls, settings: Settings | None = None, *, as_: Output = "polars") -> LakeClient:
        """The serving warehouse of ``settings`` (default: from ``OPSLAKE_*``), read-only.

        Nothing is recorded and no rows are withheld: use :meth:`remote` for audited,
        role-scoped access. The warehouse is reopened when a rebuild replaces it.
        """
        from opslake.alerting.handling import HandlingLog
        from opslake.api.warehouse import WarehouseReader

        settings = settings or Settings.from_env()
        return cls(
            _Local(WarehouseReader(settings.warehouse_path), HandlingLog.from_settings(settings)),
            as_,
        )

    @classmethod
    def remote(
        cls, url: str, key: str | None = None, timeout: float = 30, *, as_: Output = "polars"
    ) -> LakeClient:
        """The read API at ``url`` (e.g. ``http://127.0.0.1:8700``) with API ``key``.

        ``key`` defaults to ``OPSLAKE_API_KEY``; ``timeout`` is seconds per request. Each call
        is one request, authorised, row-scoped, counted against the key's quota and audited
        by the service.
        """
        key = key or Settings.from_env().api_key
        if not key:
            raise ConfigError(
                "LakeClient.remote needs an API key; pass key='olk_…' or set "
                "OPSLAKE_API_KEY (an administrator issues keys)"
            )
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{url!r} is not an http(s) URL; give the data service's base "
                "URL, e.g. http://127.0.0.1:8700"
            )
        return cls(_Remote(url, key, timeout), as_)

    def close(self) -> None:
        """Release the connection (HTTP client or DuckDB file)."""
        self._backend.close()

    def __enter__(self) -> Self:
        """The lake itself; it is closed when the block ends."""
        return self

    def __exit__(self, *_exc: object) -> None:
        """Close the lake."""
        self.close()

    def __repr__(self) -> str:
        return f"LakeClient({self._backend.describe_self()}, as_={self.as_!r})"

    # -- catalog -------------------------------------------------------------------------

    def metrics(
        self,
        search: str | None = None,
        category: str | None = None,
        status: str | None = None,
        *,
        as_: Output | None = None,
    ) -> Any:
        """The metrics catalog, one row per metric, ordered by ``metric_id``.

        ``search`` matches text in the id, the Chinese and English names and the
        description (case-insensitive); ``category`` (e.g. ``cloud``) and ``status``
        (``active``, ``deprecated``…) narrow it.
        """
        return self._out(self._backend.catalog(search, category, status), as_)

    def describe(self, metric_id: str) -> dict[str, Any]:
        """One metric's definition as a dict: names, unit, expression, dimensions, grains."""
        return self._backend.describe(metric_id)

    def versions(self, metric_id: str, *, as_: Output | None = None) -> Any:
        """A metric's version history: what changed, when and by whom."""
        return self._out(self._backend.versions(metric_id), as_)

    def lineage(self, metric_id: str, *, as_: Output | None = None) -> Any:
        """A metric's lineage: metric → inputs → model columns → silver → bronze → landing."""
        return self._out(self._backend.lineage(metric_id), as_)

    # -- data ----------------------------------------------------------------------------

    def metric(
        self,
        metric_id: str,
        start: When,
        end: When,
        by: str = "all",
        step: str = "1h",
        *,
        as_: Output | None = None,
        **filters: str,
    ) -> Any:
        """A metric's values from ``start`` (inclusive) to ``end`` (exclusive).

        ``by`` is the breakdown (``all``, ``entity``, ``business``, ``department``,
        ``region``, ``object_kind``, ``object_type``, as the catalog allows for the metric),
        ``step`` the grain (``1h``, ``1d``). ``filters`` keep rows whose dimension equals the
        value, e.g. ``business="电子税务"``; which apply depends on ``by`` (see
        :data:`FILTERS`). A day alone means its midnight UTC; naive datetimes are UTC.
        Columns: ``bucket_start``, the breakdown's dimensions, ``value``, ``numerator``,
        ``denominator``, ``metric_version``.
        """
        begin, finish = _instant(start, "start"), _instant(end, "end")
        if finish <= begin or finish - begin > timedelta(days=366):
            raise ConfigError(
                "the time range is empty or longer than a year; give start < end within 366 days"
            )
        allowed = FILTERS.get(by, ())
        unknown = sorted(set(filters) - set(FILTERS["entity"]))
        wrong = sorted(set(filters) - set(allowed))
        if unknown:
            raise ConfigError(
                f"unknown filters {unknown}; filter on {', '.join(FILTERS['entity'])}"
            )
        if wrong:
            raise ConfigError(
                f"filters {wrong} do not apply to the breakdown {by!r}; filter on "
                f"{', '.join(allowed) or 'nothing'} or choose another 'by'"
            )
        clean = {k: str(v) for k, v in filters.items() if v is not None and v != ""}
        return self._out(self._backend.metric_data(metric_id, begin, finish, step, by, clean), as_)

    def incidents(
        self,
        day: When | None = None,
        status: str | None = None,
        severity: str | None = None,
        *,
        as_: Output | None = None,
    ) -> Any:
        """A UTC day's incidents (default: the newest day), with root cause and enrichment.

        ``status`` is ``firing`` or ``resolved``. Ordered by ``started_at``.
        """
        if status not in (None, "firing", "resolved"):
            raise ConfigError(f"status={status!r}: use 'firing', 'resolved' or None")
        return self._out(self._backend.incidents(_day(day), status, severity), as_)

    def incident_alerts(self, incident_id: str, *, as_: Output | None = None) -> Any:
        """The alerts an incident converged, the root-cause alert flagged ``is_root_cause``."""
        return self._out(self._backend.incident_alerts(incident_id), as_)

    def anomalies(
        self,
        day: When | None = None,
        entity_id: str | None = None,
        metric: str | None = None,
        events_only: bool = False,
        *,
        as_: Output | None = None,
    ) -> Any:
        """A UTC day's anomalous points (default: the newest day), with the level expected.

        ``events_only`` keeps the points that opened an anomaly event.
        """
        return self._out(self._backend.anomalies(_day(day), entity_id, metric, events_only), as_)

    def forecasts(
        self, entity_id: str | None = None, metric: str | None = None, *, as_: Output | None = None
    ) -> Any:
        """The newest forecast run: point and 80/95 % bounds per series and hour ahead."""
        return self._out(self._backend.forecasts(entity_id, metric), as_)

    def capacity(
        self, entity_id: str | None = None, metric: str | None = None, *, as_: Output | None = None
    ) -> Any:
        """The newest capacity runway: per capacity-planning series, current value, trend per
        day, the dates the forecast (and its upper bound) reach capacity and days left.

        Ordered by ``days_left`` (soonest first, series that do not fill up last).
        """
        return self._out(self._backend.capacity(entity_id, metric), as_)

    def assets(
        self,
        expiring_within_days: int | None = None,
        kind: str | None = None,
        department: str | None = None,
        business: str | None = None,
        *,
        as_: Output | None = None,
    ) -> Any:
        """CIs in service with days to warranty, contract and licence end.

        ``expiring_within_days`` keeps those where any of the three ends within that many
        days (or has ended). ``owner_contact`` is decrypted only by the API, for roles allowed
        to see personal data; :meth:`local` always leaves it empty.
        """
        if expiring_within_days is not None and not 0 <= expiring_within_days <= 3650:
            raise ConfigError(f"expiring_within_days={expiring_within_days}: give 0 to 3650")
        return self._out(
            self._backend.assets(expiring_within_days, kind, department, business), as_
        )

    def quality(
        self, day: When | None = None, failed: bool = False, *, as_: Output | None = None
    ) -> Any:
        """Each data-quality check of each table for a day (default: the newest checked day):
        passed, observed value, threshold. ``failed`` keeps only the checks that failed."""
        return self._out(self._backend.quality(_day(day), failed), as_)

    def latest_day(self) -> date:
        """The newest day the daily pipeline checked (from the quality results)."""
        days = self._backend.quality(None, False).column("day").to_pylist()
        if not days:
            raise NotFoundError(
                "the lake has no quality results yet; run the daily pipeline (opslake materialize)"
            )
        return max(days)

    # -- output --------------------------------------------------------------------------

    def _out(self, table: pa.Table, as_: Output | None) -> Any:
        kind = _output(as_ or self.as_)
        if kind == "arrow":
            return table
        if kind == "pandas":
            return table.to_pandas()
        import polars as pl

        return pl.from_arrow(table)


# -- arguments ---------------------------------------------------------------------------


def _output(as_: str) -> Output:
    if as_ not in _OUTPUTS:
        raise ConfigError(f"as_={as_!r}: use 'polars', 'pandas' or 'arrow'")
    return as_  # type: ignore[return-value]


def _instant(value: When, name: str) -> datetime:
    """A UTC datetime from a day or an instant (naive means UTC)."""
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
        except ValueError as exc:
            raise ConfigError(
                f"{name}={value!r} is not a date or time; use ISO 8601, e.g. "
                "2026-03-02 or 2026-03-02T08:00:00Z"
            ) from exc
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(), UTC)
    raise ConfigError(f"{name} must be a str, date or datetime, not {type(value).__name__}")


def _day(value: When | None) -> date | None:
    """A UTC day from a day, a datetime (its UTC day) or ISO text; None stays None."""
    if value is None:
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    return _instant(value, "day").date()


# -- backends ----------------------------------------------------------------------------


class _Backend:
    """What a LakeClient asks of its source: one Arrow table per call."""

    def describe_self(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def catalog(self, q: str | None, category: str | None, status: str | None) -> pa.Table:
        raise NotImplementedError

    def describe(self, metric_id: str) -> dict[str, Any]:
        raise NotImplementedError

    def versions(self, metric_id: str) -> pa.Table:
        raise NotImplementedError

    def lineage(self, metric_id: str) -> pa.Table:
        raise NotImplementedError

    def metric_data(
        self,
        metric_id: str,
        start: datetime,
        end: datetime,
        step: str,
        by: str,
        filters: Mapping[str, str],
    ) -> pa.Table:
        raise NotImplementedError

    def incidents(self, day: date | None, status: str | None, severity: str | None) -> pa.Table:
        raise NotImplementedError

    def incident_alerts(self, incident_id: str) -> pa.Table:
        raise NotImplementedError

    def anomalies(
        self, day: date | None, entity_id: str | None, metric: str | None, events_only: bool
    ) -> pa.Table:
        raise NotImplementedError

    def forecasts(self, entity_id: str | None, metric: str | None) -> pa.Table:
        raise NotImplementedError

    def capacity(self, entity_id: str | None, metric: str | None) -> pa.Table:
        raise NotImplementedError

    def assets(
        self,
        expiring_within_days: int | None,
        kind: str | None,
        department: str | None,
        business: str | None,
    ) -> pa.Table:
        raise NotImplementedError

    def quality(self, day: date | None, failed: bool) -> pa.Table:
        raise NotImplementedError


class _Local(_Backend):
    """The serving warehouse, read-only: the read API's statements
    (:mod:`opslake.api.statements`) with bound parameters.

    The caller is not row-scoped (it reads the file), so no scope conditions apply.
    """

    def __init__(self, reader: WarehouseReader, handling: HandlingLog) -> None:
        self.reader = reader
        self.handling = handling

    def describe_self(self) -> str:
        return f"local {self.reader.path}"

    def close(self) -> None:
        self.reader._con = None  # the connection closes when no cursor uses it

    def _query(self, sql: str, params: Sequence[object]) -> pa.Table:
        try:
            return self.reader.query(sql, params)
        except duckdb.CatalogException as exc:
            raise NotFoundError(
                f"the warehouse at {self.reader.path} does not serve what this "
                f"call reads ({str(exc).splitlines()[0]}); run the daily "
                "pipeline and `opslake warehouse build`"
            ) from exc
        except duckdb.Error as exc:
            raise StorageError(
                f"reading the warehouse at {self.reader.path} failed: "
                f"{str(exc).splitlines()[0]}; rebuild it with `opslake "
                "warehouse build`"
            ) from exc

    def _newest(self, table: str, day: date | None) -> str:
        if day is not None:
            return day.isoformat()
        newest = self._query(*statements.newest_dt(table)).column("d")[0].as_py()
        if newest is None:
            raise NotFoundError(f"{table} has no rows yet; run the daily pipeline")
        return str(newest)

    def catalog(self, q: str | None, category: str | None, status: str | None) -> pa.Table:
        return self._query(*statements.catalog(q, category, status))

    def describe(self, metric_id: str) -> dict[str, Any]:
        rows = self._query(*statements.metric(metric_id)).to_pylist()
        if not rows:
            raise NotFoundError(
                f"no metric {metric_id!r} in the catalog; list them with LakeClient.metrics()"
            )
        return rows[0]

    def versions(self, metric_id: str) -> pa.Table:
        self.describe(metric_id)
        return self._query(*statements.versions(metric_id))

    def lineage(self, metric_id: str) -> pa.Table:
        self.describe(metric_id)
        return self._query(*statements.lineage(metric_id))

    def metric_data(
        self,
        metric_id: str,
        start: datetime,
        end: datetime,
        step: str,
        by: str,
        filters: Mapping[str, str],
    ) -> pa.Table:
        metric = self.describe(metric_id)
        if step not in metric["grains"]:
            raise ConfigError(
                f"{metric_id} is computed at {', '.join(metric['grains'])}, not "
                f"{step}; pick one of those as step"
            )
        if by not in [*metric["dimensions"], "all"]:
            raise ConfigError(
                f"{metric_id} can be broken down by all, "
                f"{', '.join(metric['dimensions'])}, not {by!r}"
            )
        # The API's own statement, filters in a fixed order (one of a closed set of templates).
        ordered = {c: filters[c] for c in FILTERS["entity"] if c in filters}
        sql, params = statements.data_statement(metric_id, step, by, start, end, ordered)
        return self._query(sql, params)

    def incidents(self, day: date | None, status: str | None, severity: str | None) -> pa.Table:
        dt = self._newest("incidents_current", day)
        from opslake.alerting.handling import with_state

        table = self._query(*statements.incidents(dt, status, severity))
        # As the API answers them: with each incident's handling as of now.
        return with_state(table, self.handling.states(table.column("incident_id").to_pylist()))

    def incident_alerts(self, incident_id: str) -> pa.Table:
        if not self._query(*statements.incident_exists(incident_id)).num_rows:
            raise NotFoundError(
                f"no incident {incident_id!r}; list them with LakeClient.incidents()"
            )
        return self._query(*statements.incident_alerts(incident_id))

    def anomalies(
        self, day: date | None, entity_id: str | None, metric: str | None, events_only: bool
    ) -> pa.Table:
        dt = self._newest("anomalies", day)
        return self._query(*statements.anomalies(dt, entity_id, metric, events_only))

    def forecasts(self, entity_id: str | None, metric: str | None) -> pa.Table:
        dt = self._newest("forecasts", None)
        return self._query(*statements.forecasts(dt, entity_id, metric))

    def capacity(self, entity_id: str | None, metric: str | None) -> pa.Table:
        dt = self._newest("capacity", None)
        return self._query(*statements.capacity(dt, entity_id, metric))

    def assets(
        self,
        expiring_within_days: int | None,
        kind: str | None,
        department: str | None,
        business: str | None,
    ) -> pa.Table:
        dt = self._newest("asset_ledger", None)
        table = self._query(
            *statements.assets(dt, kind, department, business, expiring_within_days)
        )
        # Owner contacts stay sealed here: only the audited API decrypts them, by role.
        return table.drop_columns(["owner_contact_sm4"]).append_column(
            "owner_contact", pa.nulls(table.num_rows, pa.string())
        )

    def quality(self, day: date | None, failed: bool) -> pa.Table:
        want = day.isoformat() if day else None
        if want is None:
            newest = self._query(*statements.newest_quality_day()).column("d")[0]
            want = str(newest.as_py()) if newest.as_py() else None
        return self._query(*statements.quality(want, failed))


class _Remote(_Backend):
    """The read API over HTTP, rows as Arrow IPC."""

    #: HTTP status → the error class the API raised for it.
    STATUS: Mapping[int, type[OpsLakeError]] = {
        400: ConfigError,
        401: AuthError,
        403: Forbidden,
        404: NotFoundError,
        422: ConfigError,
        503: StorageError,
    }

    def __init__(self, url: str, key: str, timeout: float) -> None:
        import httpx

        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            timeout=timeout,
            headers={
                "Authorization": f"Bearer {key}",
                "Accept": "application/vnd.apache.arrow.stream",
            },
        )

    def describe_self(self) -> str:
        return f"remote {self.url}"

    def close(self) -> None:
        self._http.close()

    def _get(
        self, path: str, params: Mapping[str, object] | None = None, *, arrow: bool = True
    ) -> Any:
        import httpx

        query = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        if arrow:
            query["format"] = "arrow"
        try:
            response = self._http.get(path, params=query)
        except httpx.HTTPError as exc:
            raise StorageError(
                f"cannot reach the OpsLake API at {self.url} ({exc}); check the "
                "URL and that `opslake serve` runs there"
            ) from exc
        if response.status_code >= 400:
            raise self._error(path, response)
        if not arrow:
            return response.json()
        try:
            return pa.ipc.open_stream(response.content).read_all()
        except pa.ArrowInvalid as exc:
            raise StorageError(
                f"{self.url}{path} did not answer Arrow IPC ({exc}); is this an "
                "OpsLake data service?"
            ) from exc

    def _error(self, path: str, response: Any) -> OpsLakeError:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        if "error" in body:
            error, fix = str(body["error"]), str(body.get("fix") or "")
            text = error if not fix or fix == error else f"{error}; {fix}"
        elif status == 404:
            return NotFoundError(
                f"the API at {self.url} has no {path} (an older data service?); "
                "upgrade it or read the warehouse with LakeClient.local()"
            )
        elif isinstance(body.get("detail"), list):
            problems = ", ".join(
                f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}"
                for d in body["detail"]
            )
            text = f"the API refused the request ({problems}); correct those parameters"
        else:
            text = (
                f"the API answered HTTP {status} for {path} "
                f"({body.get('detail') or response.text[:200]}); see the service's log"
            )
        if status == 429:
            now = datetime.now(UTC)
            return QuotaExceeded(
                text, datetime.combine(now.date() + timedelta(days=1), time(), UTC)
            )
        return self.STATUS.get(status, OpsLakeError)(text)

    def catalog(self, q: str | None, category: str | None, status: str | None) -> pa.Table:
        return self._get("/v1/catalog/metrics", {"q": q, "category": category, "status": status})

    def describe(self, metric_id: str) -> dict[str, Any]:
        return self._get(f"/v1/catalog/metrics/{_seg(metric_id)}", arrow=False)

    def versions(self, metric_id: str) -> pa.Table:
        return self._get(f"/v1/catalog/metrics/{_seg(metric_id)}/versions")

    def lineage(self, metric_id: str) -> pa.Table:
        return self._get(f"/v1/catalog/metrics/{_seg(metric_id)}/lineage")

    def metric_data(
        self,
        metric_id: str,
        start: datetime,
        end: datetime,
        step: str,
        by: str,
        filters: Mapping[str, str],
    ) -> pa.Table:
        return self._get(
            f"/v1/metrics/{_seg(metric_id)}/data",
            {"start": start, "end": end, "step": step, "by": by, **filters},
        )

    def incidents(self, day: date | None, status: str | None, severity: str | None) -> pa.Table:
        return self._get("/v1/incidents", {"day": day, "status": status, "severity": severity})

    def incident_alerts(self, incident_id: str) -> pa.Table:
        return self._get(f"/v1/incidents/{_seg(incident_id)}/alerts")

    def anomalies(
        self, day: date | None, entity_id: str | None, metric: str | None, events_only: bool
    ) -> pa.Table:
        return self._get(
            "/v1/anomalies",
            {"day": day, "entity_id": entity_id, "metric": metric, "events_only": events_only},
        )

    def forecasts(self, entity_id: str | None, metric: str | None) -> pa.Table:
        return self._get("/v1/forecasts", {"entity_id": entity_id, "metric": metric})

    def capacity(self, entity_id: str | None, metric: str | None) -> pa.Table:
        return self._get("/v1/capacity", {"entity_id": entity_id, "metric": metric})

    def assets(
        self,
        expiring_within_days: int | None,
        kind: str | None,
        department: str | None,
        business: str | None,
    ) -> pa.Table:
        return self._get(
            "/v1/assets",
            {
                "expiring_within_days": expiring_within_days,
                "kind": kind,
                "department": department,
                "business": business,
            },
        )

    def quality(self, day: date | None, failed: bool) -> pa.Table:
        return self._get("/v1/quality/results", {"day": day, "failed": failed})


def _param(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _seg(text: str) -> str:
    """A path segment: ids are letters, digits and ``_.-`` (the API refuses anything else)."""
    from urllib.parse import quote

    return quote(text, safe="")
