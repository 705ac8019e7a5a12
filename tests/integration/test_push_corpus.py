"""Bad input on every push endpoint: never a 5xx, never an acknowledged body bronze rejects.

Each case is answered either 2xx, and the landed batch parses through the bronze parser
with no reject, or 4xx ``{"error", "fix"}`` with the body kept as a ``push_rejects``
quarantine row giving the reason. One service and lake serve the module (each case pushes
under its own batch id), so the corpus runs in seconds. Bombs (compressed bodies that expand far) are answered
within a second of CPU: that bounds the algorithm (refused from the snappy header, gzip
inflated only up to the bound), it is not a benchmark.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import cramjam
import numpy as np
import pytest
from fastapi.testclient import TestClient

from opslake.api.app import create_app
from opslake.api.ingest import BATCH_HEADER
from opslake.ingest.parsers import ParseResult, alert_webhook, alertmanager, prometheus
from opslake.lake import quarantine
from opslake.lake.landing import LandedBatch, LandingZone
from opslake.lake.storage import Lake
from opslake.settings import Settings
from tests.integration.test_alert_webhook import _zabbix
from tests.integration.test_push_api import AM, RW, RW_HEADERS, _body, _webhook
from tests.keys import bearer, ingest_key
from tests.unit.test_remote_write import _key, _len, _series, _uvarint, write_request

WH = "/v1/ingest/alerts/zabbix"
JSON = {"Content-Type": "application/json"}
#: The bronze parser and landing source behind each push endpoint.
BRONZE: dict[str, tuple[str, Callable[[bytes, LandedBatch], ParseResult]]] = {
    RW: ("prometheus", prometheus.parse),
    AM: ("alertmanager", alertmanager.parse),
    WH: (alert_webhook.SOURCE, alert_webhook.parse),
}
DEEP = b"[" * 10_000 + b"]" * 10_000
MiB = 2**20


def _alert(**fields: object) -> bytes:
    """An Alertmanager body whose one alert has ``fields`` changed (None drops a field)."""
    alert = {**_webhook()["alerts"][0], **fields}
    return _body({**_webhook(), "alerts": [{k: v for k, v in alert.items() if v is not None}]})


def _zabbix_body(**event: object) -> bytes:
    body = _zabbix("PROBLEM", "2026-03-02")
    body["event"] = {**body["event"], **event}
    return json.dumps(body).encode()


def _snappy_skip_fields(decoded: int, copies_per_literal: int) -> bytes:
    """Snappy block data of ``decoded`` bytes of protobuf skip fields (field 3, varint 0).

    Written element by element rather than compressed, so building a bomb costs nothing:
    a 64-byte literal, then ``copies_per_literal`` 3-byte copies of it (64 bytes each).
    """
    literal = b"\xf0\x3f" + b"\x18\x00" * 32  # literal of 64 bytes: tag 60, length - 1
    copy = b"\xfe\x40\x00"  # copy-2: 64 bytes from 64 back
    group = literal + copy * copies_per_literal
    groups, rest = divmod(decoded, 64 * (copies_per_literal + 1))
    assert rest % 64 == 0
    return _uvarint(decoded) + group * groups + (literal + copy * (rest // 64 - 1) if rest else b"")


def _rw_label_bytes(value: bytes) -> bytes:
    """A remote-write request with one series whose ``job`` label value is raw ``value``."""
    label = _len(1, b"job") + _len(2, value)
    name = _len(1, b"__name__") + _len(2, b"up")
    sample = _key(1, 1) + struct.pack("<d", 1.0) + _key(2, 0) + _uvarint(1764115200000)
    series = _len(1, name) + _len(1, label) + _len(2, sample)
    return bytes(cramjam.snappy.compress_raw(_len(1, series)))


def _cases() -> Iterator[tuple[str, str, bytes, dict[str, str], bool]]:
    """(id, endpoint, body, headers, is a bomb) for every bad input."""
    rw, am, wh = RW_HEADERS, {}, JSON
    # Nesting 10,000 deep: as the body, and inside a field no parser reads.
    yield "am-deep-body", AM, DEEP, am, False
    yield "am-deep-field", AM, _alert()[:-4] + b',"x":' + DEEP + b"}]}\n", am, False
    yield "am-deep-65", AM, _body({**_webhook(), "x": json.loads("[" * 65 + "]" * 65)}), am, False
    yield "wh-deep-body", WH, DEEP, wh, False
    # Times at the year limits with an offset: outside UTC's range once converted.
    for stamp in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"):
        yield f"am-startsAt-{stamp[:4]}", AM, _alert(startsAt=stamp), am, False
        yield f"am-endsAt-{stamp[:4]}", AM, _alert(endsAt=stamp), am, False
        day, clock = stamp.split("T")
        yield f"wh-time-{stamp[:4]}", WH, _zabbix_body(date=day, time=clock), wh, False
    yield "am-startsAt-max-utc", AM, _alert(startsAt="9999-12-31T23:59:59Z"), am, False
    # Snappy bombs: 16.7 MB of copies expanding 20x to 340 MiB, and one just under the
    # decoded cap (32 MiB) and the ratio bound (18), which is decoded in full.
    yield "rw-bomb-340MiB", RW, _snappy_skip_fields(340 * MiB, 340 * MiB // 64 - 1), rw, True
    yield "rw-bomb-under-cap", RW, _snappy_skip_fields(32 * MiB - 5248 * 8, 81), rw, True
    # 4 Mi empty series and unknown fields (2 bytes each, in random order so that snappy
    # cannot shrink them): each would cost a Python object.
    flood = np.zeros(8 * MiB, np.uint8)
    flood[::2] = np.where(np.random.default_rng(0).integers(0, 2, 4 * MiB) == 1, 0x0A, 0x12)
    yield "rw-empty-series-flood", RW, bytes(cramjam.snappy.compress_raw(flood.tobytes())), rw, True
    # 60,000 empty series among as many unknown fields: few fields, too many series.
    series = np.zeros(240_000, np.uint8)
    series[::2] = np.where(np.random.default_rng(2).permutation(120_000) < 60_000, 0x0A, 0x1A)
    yield "rw-series-flood", RW, bytes(cramjam.snappy.compress_raw(series.tobytes())), rw, True
    # Gzip bombs: 64 MiB in 64 KiB; and a good body gzipped.
    yield "am-gzip-bomb", AM, gzip.compress(b" " * 64 * MiB, 1), {"Content-Encoding": "gzip"}, True
    yield (
        "wh-gzip-bomb",
        WH,
        gzip.compress(b"[" * 64 * MiB, 1),
        {**wh, "Content-Encoding": "gzip"},
        True,
    )
    yield "am-gzip-good", AM, gzip.compress(_body(_webhook())), {"Content-Encoding": "gzip"}, False
    yield (
        "am-gzip-truncated",
        AM,
        gzip.compress(_body(_webhook()))[:-12],
        {"Content-Encoding": "gzip"},
        False,
    )
    yield "am-gzip-not-gzip", AM, _body(_webhook()), {"Content-Encoding": "gzip"}, False
    yield "am-brotli", AM, _body(_webhook()), {"Content-Encoding": "br"}, False
    # Missing and mistyped fields.
    yield "am-no-status", AM, _alert(status=None), am, False
    yield "am-no-fingerprint", AM, _alert(fingerprint=None), am, False
    yield "am-label-not-string", AM, _alert(labels={"alertname": 1}), am, False
    yield "am-startsAt-number", AM, _alert(startsAt=1764115200), am, False
    yield "am-alerts-not-list", AM, _body({**_webhook(), "alerts": {"a": 1}}), am, False
    yield "am-alert-not-object", AM, _body({**_webhook(), "alerts": ["x"]}), am, False
    yield "am-huge-int", AM, _body({**_webhook(), "truncatedAlerts": 10**30}), am, False
    yield "am-long-digits", AM, b'{"version":"4","alerts":[],"x":' + b"7" * 5000 + b"}", am, False
    yield "wh-no-fingerprint", WH, _zabbix_body(id=None), wh, False
    yield "wh-status-object", WH, _zabbix_body(status={"a": 1}), wh, False
    yield "wh-empty-list", WH, b"[]", wh, False
    # Huge labels (1 MiB values): stored as sent.
    yield "am-1MiB-label", AM, _alert(labels={"alertname": "x", "big": "v" * MiB}), am, False
    yield (
        "rw-1MiB-label",
        RW,
        _rw_label_bytes(np.random.default_rng(1).bytes(MiB // 2).hex().encode()),
        rw,
        False,
    )
    yield "am-1MiB-bad-status", AM, _alert(status="s" * MiB), am, False
    # Text that is not Unicode.
    yield "am-latin1", AM, _alert(labels={"alertname": "x"}).replace(b'"x"', b'"\xe9"'), am, False
    yield "am-utf16", AM, _body(_webhook()).decode().encode("utf-16"), am, False
    yield "am-lone-surrogate", AM, _alert(labels={"alertname": "\ud800"}), am, False
    yield (
        "wh-latin1",
        WH,
        _zabbix_body(name="caf\xe9").replace(b"caf\\u00e9", b"caf\xe9"),
        wh,
        False,
    )
    yield "rw-label-not-utf8", RW, _rw_label_bytes(b"\xff\xfe"), rw, False
    # Wrong content types.
    yield "am-text-plain", AM, _body(_webhook()), {"Content-Type": "text/plain"}, False
    yield (
        "am-json-utf16-charset",
        AM,
        _body(_webhook()),
        {"Content-Type": "application/json; charset=utf-16"},
        False,
    )
    yield (
        "am-json-utf8-charset",
        AM,
        _body(_webhook()),
        {"Content-Type": "application/json; charset=UTF-8"},
        False,
    )
    yield "wh-xml", WH, b"<alert/>", {"Content-Type": "application/xml"}, False
    yield (
        "rw-json",
        RW,
        write_request(_series({"__name__": "up"}, [(1.0, 1)])),
        {**rw, "Content-Type": "application/json"},
        False,
    )
    # Empty bodies.
    yield "am-empty", AM, b"", am, False
    yield "am-blank", AM, b" \n\n", am, False
    yield "wh-empty", WH, b"", wh, False
    yield "rw-empty", RW, b"", rw, False
    # Truncated protobuf, snappy that lies about its size.
    raw = _len(1, _series({"__name__": "up"}, [(1.0, 1000), (2.0, 2000)]))
    yield "rw-truncated", RW, bytes(cramjam.snappy.compress_raw(raw[:-4])), rw, False
    yield "rw-snappy-lies", RW, _uvarint(10) + b"\x00abc", rw, False
    # NaN and infinities: as JSON tokens, as strings, and as remote-write values.
    yield (
        "am-nan-token",
        AM,
        _body(_webhook()).replace(b'"truncatedAlerts":0', b'"truncatedAlerts":NaN'),
        am,
        False,
    )
    yield "am-startsAt-nan", AM, _alert(startsAt="NaN"), am, False
    yield "am-inf-string", AM, _alert(labels={"alertname": "x", "v": "Infinity"}), am, False
    yield "wh-time-inf", WH, _zabbix_body(date="inf", time="nan"), wh, False
    yield (
        "rw-nan-inf",
        RW,
        write_request(
            _series({"__name__": "up"}, [(float("nan"), 1), (float("inf"), 2), (float("-inf"), 3)])
        ),
        rw,
        False,
    )


CASES = list(_cases())


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Lake]]:
    """One data service (push-only key) and its lake for the whole corpus."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OPSLAKE_HOME", str(tmp_path_factory.mktemp("corpus") / "lake"))
        for name in (
            "OPSLAKE_STATE_DIR",
            "OPSLAKE_S3_ENDPOINT",
            "OPSLAKE_MAX_PUSH_BYTES",
            "OPSLAKE_MAX_DECODED_BYTES",
        ):
            env.delenv(name, raising=False)
        settings = Settings.from_env()
        with TestClient(create_app(settings), headers=bearer(ingest_key(settings))) as client:
            yield client, Lake.from_settings(settings)


def _push(client: TestClient, case: str) -> tuple[str, bytes, object, float]:
    """Push ``case`` under its own batch id: (endpoint, body, answer, CPU seconds)."""
    _, path, body, headers, _ = next(c for c in CASES if c[0] == case)
    started = time.process_time()
    answer = client.post(path, content=body, headers={**headers, BATCH_HEADER: case})
    return path, body, answer, time.process_time() - started


@pytest.mark.parametrize(("case", "bomb"), [(c[0], c[4]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_push_is_refused_or_parses(
    service: tuple[TestClient, Lake], case: str, bomb: bool
) -> None:
    client, lake = service
    path, body, answer, cpu = _push(client, case)
    source, parse = BRONZE[path]
    assert answer.status_code < 500, answer.text
    if bomb:
        assert cpu < 1.0, f"{cpu:.2f} s of CPU"
    landing = LandingZone(lake)
    landed = [
        b
        for b in landing.batches(source, datetime.now(UTC).date().isoformat())
        if b.batch_id == case
    ]
    if answer.status_code < 300:
        [batch] = landed
        assert parse(landing.read(batch), batch).rejects == []
        return
    assert 400 <= answer.status_code < 500 and landed == []
    refusal = answer.json()
    assert set(refusal) == {"error", "fix"} and refusal["error"] and refusal["fix"]
    assert len(refusal["error"]) < 1000  # a reason, never the body
    kept = {(r["source"], r["batch_id"], r["reason"]) for r in quarantine.read(lake).to_pylist()}
    reason = f"HTTP {answer.status_code}: {refusal['error']}"
    assert (source, hashlib.sha256(body).hexdigest()[:32], reason) in kept or any(
        s == source and r == reason for s, _, r in kept
    )  # 413/415 keep the body's start


@pytest.mark.parametrize(
    ("case", "status", "needle"),
    [
        ("am-deep-body", 422, "nested deeper than 64"),
        ("wh-deep-body", 422, "nested deeper"),
        ("am-deep-field", 422, "nested deeper"),
        ("am-deep-65", 422, "nested deeper"),
        ("am-startsAt-9999", 422, "years 1 to 9999"),
        ("am-endsAt-0001", 422, "years 1 to 9999"),
        ("wh-time-9999", 422, "years 1 to 9999"),
        ("rw-bomb-340MiB", 413, "33,554,432"),
        ("rw-empty-series-flood", 400, "1,000,000"),
        ("rw-series-flood", 400, "50,000"),
        ("am-gzip-bomb", 413, "expands past"),
        ("wh-gzip-bomb", 413, "expands past"),
        ("am-brotli", 415, "'br'"),
        ("am-no-status", 422, "'status'"),
        ("am-text-plain", 415, "text/plain"),
        ("rw-json", 415, "application/json"),
        ("am-empty", 422, "empty"),
        ("rw-truncated", 400, "truncated"),
        ("rw-snappy-lies", 400, "snappy"),
        ("am-lone-surrogate", 422, "surrogate"),
        ("am-huge-int", 422, "64-bit"),
        ("rw-label-not-utf8", 400, "UTF-8"),
        ("am-1MiB-bad-status", 422, "'status'"),
    ],
)
def test_refusals_say_why(
    service: tuple[TestClient, Lake], case: str, status: int, needle: str
) -> None:
    _, _, answer, _ = _push(service[0], case)
    assert answer.status_code == status and needle in answer.json()["error"], answer.text


@pytest.mark.parametrize(
    "case",
    [
        "am-startsAt-max-utc",
        "rw-bomb-under-cap",
        "am-gzip-good",
        "am-1MiB-label",
        "rw-1MiB-label",
        "am-inf-string",
        "rw-nan-inf",
        "am-json-utf8-charset",
    ],
)
def test_good_but_odd_bodies_are_accepted(service: tuple[TestClient, Lake], case: str) -> None:
    assert _push(service[0], case)[2].status_code in (200, 204)
