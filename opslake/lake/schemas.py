"""The silver contract: every later capability reads these columns (docs/silver-contract.md).

Change a schema here only with a migration note in that document.
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")
LABELS = pa.map_(pa.string(), pa.string())

#: The five kinds of managed object of the standard (S4), as stored in ``assets.kind``.
OBJECT_KINDS = ("facility", "cloud", "application", "platform", "security")

RELATIONS = ("runs_on", "depends_on", "belongs_to", "located_in", "powered_by")

METRIC_POINTS = pa.schema(
    [
        ("ts", TS),
        ("metric", pa.string()),
        ("entity_id", pa.string()),
        ("value", pa.float64()),
        ("labels", LABELS),
        ("source", pa.string()),
        ("batch_id", pa.string()),
    ]
)

EVENTS = pa.schema(
    [
        ("event_id", pa.string()),
        ("fingerprint", pa.string()),
        ("source", pa.string()),
        ("status", pa.string()),
        ("severity", pa.string()),
        ("title", pa.string()),
        ("description", pa.string()),
        ("entity_id", pa.string()),
        ("labels", LABELS),
        ("starts_at", TS),
        ("ends_at", TS),
        ("received_at", TS),
        ("batch_id", pa.string()),
    ]
)

LOGS = pa.schema(
    [
        ("ts", TS),
        ("entity_id", pa.string()),
        ("host", pa.string()),
        ("app", pa.string()),
        ("severity", pa.int8()),
        ("facility", pa.int8()),
        ("message", pa.string()),
        ("structured_data", pa.string()),
        ("source", pa.string()),
        ("batch_id", pa.string()),
    ]
)

TICKETS = pa.schema(
    [
        ("ticket_id", pa.string()),
        ("type", pa.string()),
        ("status", pa.string()),
        ("priority", pa.string()),
        ("business", pa.string()),
        ("entity_id", pa.string()),
        ("title", pa.string()),
        ("opened_at", TS),
        ("acknowledged_at", TS),
        ("resolved_at", TS),
        ("closed_at", TS),
        ("assignee_group", pa.string()),
        ("sla_target_minutes", pa.int32()),
        ("alert_fingerprint", pa.string()),
        ("change_window_start", TS),
        ("change_window_end", TS),
        ("change_result", pa.string()),
        ("source", pa.string()),
        ("batch_id", pa.string()),
    ]
)

ASSETS = pa.schema(
    [
        ("entity_id", pa.string()),
        ("kind", pa.string()),
        ("type", pa.string()),
        ("name", pa.string()),
        ("department", pa.string()),
        ("business", pa.string()),
        ("region", pa.string()),
        ("location", pa.string()),
        ("vendor", pa.string()),
        ("model", pa.string()),
        ("serial", pa.string()),
        ("ip", pa.string()),
        ("lifecycle_state", pa.string()),
        ("purchase_date", pa.date32()),
        ("warranty_end", pa.date32()),
        ("contract_end", pa.date32()),
        ("licence_end", pa.date32()),
        ("owner", pa.string()),
        # SM4 token of the owner's contact (opslake.security.fields), never the clear value.
        ("owner_contact_sm4", pa.string()),
        ("valid_from", TS),
        ("valid_to", TS),
    ]
)

RELATIONS_SCHEMA = pa.schema(
    [
        ("src_entity_id", pa.string()),
        ("relation", pa.string()),
        ("dst_entity_id", pa.string()),
        ("valid_from", TS),
        ("valid_to", TS),
    ]
)

PROBES = pa.schema(
    [
        ("ts", TS),
        ("probe_id", pa.string()),
        ("target", pa.string()),
        ("entity_id", pa.string()),
        ("kind", pa.string()),
        ("ok", pa.bool_()),
        ("latency_ms", pa.float64()),
        ("status_code", pa.int32()),
        ("error", pa.string()),
        ("source", pa.string()),
        ("batch_id", pa.string()),
    ]
)

QUARANTINE = pa.schema(
    [
        ("source", pa.string()),
        ("batch_id", pa.string()),
        ("line_no", pa.int64()),
        ("raw", pa.string()),
        ("reason", pa.string()),
        ("received_at", TS),
        # Who delivered the line (landing.sender_of). Null in files written before it was
        # recorded: readers pass this schema, so those files read with null senders.
        ("sender", pa.string()),
    ]
)

SILVER: dict[str, pa.Schema] = {
    "metric_points": METRIC_POINTS,
    "events": EVENTS,
    "logs": LOGS,
    "tickets": TICKETS,
    "assets": ASSETS,
    "relations": RELATIONS_SCHEMA,
    "probes": PROBES,
}
