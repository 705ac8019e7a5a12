"""Pushed bodies the service refused, kept in the quarantine table beside parse rejects.

Each rejection is one small Parquet file under
``bronze/quarantine/dt=D/table=push_rejects/`` with a unique name, so a rejection is never
overwritten, and re-parsing a bronze table (which replaces only ``table=<its name>``) never
removes them. ``opslake.lake.quarantine.read`` reads every file of the quarantine table,
so these rows show up in ``opslake quarantine`` with the parse rejects.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from opslake.lake import quarantine
from opslake.lake.schemas import QUARANTINE
from opslake.lake.storage import Lake

#: The quarantine "table" partition that holds refused pushes.
TABLE = quarantine.PUSH_REJECTS
#: Most characters of a refused body kept in the ``raw`` column.
MAX_RAW_CHARS = 64 * 1024


def append_push_reject(
    lake: Lake,
    source: str,
    body: bytes,
    reason: str,
    received_at: datetime | None = None,
    *,
    sender: str = "",
) -> str:
    """Write one refused push as a quarantine row in its own file; returns the file's path.

    ``sender`` is the pusher's API key id: the parse-rate contract counts refused pushes
    against their sender.
    """
    received = (received_at or datetime.now(UTC)).astimezone(UTC)
    table = pa.table(
        {
            "source": [source],
            "batch_id": [hashlib.sha256(body).hexdigest()[:32]],
            "line_no": [0],
            "raw": [body[: MAX_RAW_CHARS * 4].decode("utf-8", errors="replace")[:MAX_RAW_CHARS]],
            "reason": [reason],
            "received_at": pa.array([received], QUARANTINE.field("received_at").type),
            "sender": [sender or None],
        },
        schema=QUARANTINE,
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", coerce_timestamps="us")
    # Time first so a directory listing reads in arrival order; the uuid keeps names unique.
    name = f"{received.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:12]}.parquet"
    path = lake.table_path(
        "bronze", quarantine.TABLE, {"dt": received.date().isoformat(), "table": TABLE}
    )
    target = f"{path}/{name}"
    lake.put_atomic(target, [sink.getvalue().to_pybytes()])
    return target
