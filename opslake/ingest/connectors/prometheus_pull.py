"""Pull connectors for Prometheus: scrape an exporter, federate, or run a range query.

All three land into source ``prometheus`` in format ``prom`` (text exposition 0.0.4), so
they flow through the one parser (``opslake.ingest.parsers.prometheus_text``) and the
``metric_points`` silver table like every other Prometheus batch:

- ``ExporterScrape``: an exporter's ``/metrics`` as it answered. Its samples carry no
  timestamps; the bronze parser gives them the batch's received time (``now``).
- ``Federate``: Prometheus's ``/federate`` answer as it arrived (latest sample of each
  matched series, with millisecond timestamps): the shape docs/sources.md describes.
- ``QueryRange``: ``/api/v1/query_range`` answers JSON, not exposition text. It is
  *converted*, and the converted text is what lands: one line per sample,
  ``name{labels} value timestamp_ms``, labels sorted and escaped, after a comment line that
  records the query and range. So for this connector landing holds the exposition
  rendering of the answer, not the bytes Prometheus sent (the conversion is lossless for
  float samples: names, labels, values as Prometheus wrote them, timestamps to the ms).
  This keeps one landing source and one parser for all Prometheus data instead of a second
  source (``prometheus_api``) with its own parser and silver wiring. A series without
  ``__name__`` (the result of an expression such as ``rate(…)``) takes ``name_as``, which
  must then be given; native-histogram samples are refused (they have no float value).

HTTP failures raise ``CollectionError`` naming the URL and the status.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from opslake.errors import CollectionError
from opslake.ingest.connectors.base import Connector, aware, http_get
from opslake.ingest.parsers.prometheus_text import canonical
from opslake.lake.landing import LandedBatch, LandingZone

#: Ask for the text format (not protobuf or OpenMetrics), the format the parser reads.
TEXT_ACCEPT = {"Accept": "text/plain;version=0.0.4;q=1.0,*/*;q=0.1"}
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


class ExporterScrape(Connector):
    """Scrape one exporter's metrics endpoint (the full URL, e.g. ``http://h:9100/metrics``)."""

    name = "prometheus-exporter-scrape"
    version = "1"
    source = "prometheus"
    fmt = "prom"

    def __init__(self, url: str) -> None:
        self.url = url

    def collect(self, landing: LandingZone, now: datetime) -> list[LandedBatch]:
        response = http_get(self.url, headers=TEXT_ACCEPT)
        return [self.land(landing, response.content, now)]


class Federate(Connector):
    """``GET {base_url}/federate?match[]=…``: the latest sample of every matched series."""

    name = "prometheus-federate"
    version = "1"
    source = "prometheus"
    fmt = "prom"

    def __init__(self, base_url: str, match: Sequence[str]) -> None:
        if isinstance(match, str) or not match:
            raise CollectionError(
                "Federate needs a list of series selectors, e.g. ['{job=\"node\"}']"
            )
        self.base_url = base_url.rstrip("/")
        self.match = list(match)

    def collect(self, landing: LandingZone, now: datetime) -> list[LandedBatch]:
        response = http_get(
            f"{self.base_url}/federate",
            params=[("match[]", m) for m in self.match],
            headers=TEXT_ACCEPT,
        )
        return [self.land(landing, response.content, now)]


class QueryRange(Connector):
    """``GET {base_url}/api/v1/query_range``, landed as exposition text (see the module doc)."""

    name = "prometheus-query-range"
    version = "1"
    source = "prometheus"
    fmt = "prom"

    def __init__(
        self,
        base_url: str,
        query: str,
        start: datetime,
        end: datetime,
        step: float,
        name_as: str | None = None,
    ) -> None:
        if not step > 0:
            raise CollectionError(f"query_range step must be > 0 seconds, got {step!r}")
        if aware(end) < aware(start):
            raise CollectionError(f"query_range ends ({end}) before it starts ({start})")
        if name_as is not None and not _METRIC_NAME.match(name_as):
            raise CollectionError(f"name_as {name_as!r} is not a Prometheus metric name")
        self.base_url = base_url.rstrip("/")
        self.query, self.start, self.end, self.step = query, start, end, step
        self.name_as = name_as

    def fetch(self) -> list[dict]:
        """The ``result`` matrix of the query, as Prometheus answered it."""
        url = f"{self.base_url}/api/v1/query_range"
        params = {
            "query": self.query,
            "start": _epoch(self.start),
            "end": _epoch(self.end),
            "step": repr(float(self.step)),
        }
        response = http_get(url, params=params)
        try:
            body = response.json()
        except ValueError as exc:
            raise CollectionError(f"GET {url} did not answer JSON: {exc}") from exc
        data = body.get("data") if isinstance(body, dict) else None
        if body.get("status") != "success" or not isinstance(data, dict):
            raise CollectionError(
                f"GET {url} answered status {body.get('status')!r}: "
                f"{body.get('errorType')}: {body.get('error')}"
            )
        if data.get("resultType") != "matrix":
            raise CollectionError(
                f"GET {url} answered a {data.get('resultType')!r}, not a "
                "matrix; query_range expects an instant-vector expression"
            )
        return data.get("result") or []

    def collect(self, landing: LandingZone, now: datetime) -> list[LandedBatch]:
        header = (
            f"# opslake query_range query={' '.join(self.query.split())} "
            f"start={_epoch(self.start)} end={_epoch(self.end)} step={self.step}\n"
        )
        text = header + matrix_to_exposition(self.fetch(), name_as=self.name_as)
        return [self.land(landing, text.encode(), now)]


def matrix_to_exposition(result: list[dict], name_as: str | None = None) -> str:
    """A ``query_range`` matrix as exposition lines ``name{labels} value ts_ms``.

    ``__name__`` becomes the metric name (``name_as`` where a series has none); values are
    kept as Prometheus wrote them (``NaN``, ``+Inf`` included); timestamps (float seconds)
    become integer milliseconds.
    """
    lines: list[str] = []
    for series in result:
        labels = dict(series.get("metric") or {})
        name = labels.pop("__name__", None) or name_as
        if name is None:
            raise CollectionError(
                f"a query_range series has no __name__ ({canonical(labels)}); "
                "pass name_as='…' to name the expression's result"
            )
        if series.get("histograms"):
            raise CollectionError(
                f"series {name}{canonical(labels)} holds native-histogram "
                "samples, which exposition text 0.0.4 cannot carry"
            )
        series_text = name + (canonical(labels) if labels else "")
        for ts, value in series.get("values") or []:
            lines.append(f"{series_text} {value} {round(float(ts) * 1000)}")
    return "".join(line + "\n" for line in lines)


def _epoch(moment: datetime) -> str:
    """Seconds since the epoch with millisecond precision, as Prometheus's API takes them."""
    return f"{aware(moment).timestamp():.3f}"
