"""What every pull connector is: a name, a version, a landing source and format, ``collect``.

The connector string ``"{name}/{version}"`` is recorded in the manifest row of every batch
a connector lands, so a batch can always be traced to the code that collected it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import ClassVar

import httpx

from opslake.errors import CollectionError
from opslake.lake.landing import LandedBatch, LandingZone

#: Connect / read timeouts for every HTTP request a connector makes (seconds).
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=3.0)


class Connector(ABC):
    """A pull connector: ``collect`` fetches from its source and lands what it got."""

    name: ClassVar[str]
    version: ClassVar[str]
    #: Landing source (``landing/source=…``) and format (file extension) of its batches.
    source: ClassVar[str]
    fmt: ClassVar[str]

    @property
    def connector(self) -> str:
        """The connector string recorded in the manifest of every batch this one lands."""
        return f"{self.name}/{self.version}"

    @abstractmethod
    def collect(self, landing: LandingZone, now: datetime) -> list[LandedBatch]:
        """Collect once and land the result; ``now`` is the collection time (aware)."""

    def land(self, landing: LandingZone, data: bytes, now: datetime) -> LandedBatch:
        """Land ``data`` as one batch of this connector's source, received at ``now``."""
        return landing.write(
            self.source, data, fmt=self.fmt, received_at=aware(now), connector=self.connector
        )


def aware(now: datetime) -> datetime:
    """``now`` in UTC; a naive datetime is refused (it would land on the wrong day)."""
    if now.tzinfo is None:
        raise CollectionError(
            f"collection time {now.isoformat()} has no time zone; pass an "
            "aware datetime such as datetime.now(UTC)"
        )
    return now.astimezone(UTC)


def http_get(
    url: str,
    *,
    params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
) -> httpx.Response:
    """GET ``url``; any transport failure or non-2xx status is a ``CollectionError``."""
    try:
        response = httpx.get(
            url, params=params, headers=headers, timeout=timeout, follow_redirects=True
        )
    except httpx.HTTPError as exc:
        raise CollectionError(
            f"GET {url} failed: {type(exc).__name__}: {exc}; check that the "
            "source runs and the URL is right"
        ) from exc
    if not response.is_success:
        body = response.text[:300].strip()
        raise CollectionError(
            f"GET {response.request.url} answered HTTP "
            f"{response.status_code} {response.reason_phrase}" + (f": {body}" if body else "")
        )
    return response
