"""The asset ledger (资源台账): the CMDB as known at the end of a day, with expiry in days.

One row per configuration item valid at the end of the day (retired ones are left out), its
lifecycle state, department, business, location, vendor and model, and the days
left until its warranty, support contract and licence end (negative once past). The owner's
contact is personal data: the ledger carries on the SM4 token sealed when bronze parsed the
CMDB export (opslake.security.fields), so the gold layer never holds it in clear; the API
decrypts it for roles allowed to see it.
"""

from __future__ import annotations

from datetime import date, datetime

import pyarrow as pa

from opslake.metrics_catalog.models import current_rows
from opslake.security.fields import OWNER_CONTACT

LEDGER = pa.schema(
    [
        ("entity_id", pa.string()),
        ("name", pa.string()),
        ("kind", pa.string()),
        ("type", pa.string()),
        ("department", pa.string()),
        ("business", pa.string()),
        ("region", pa.string()),
        ("location", pa.string()),
        ("vendor", pa.string()),
        ("model", pa.string()),
        ("lifecycle_state", pa.string()),
        ("purchase_date", pa.date32()),
        ("warranty_end", pa.date32()),
        ("contract_end", pa.date32()),
        ("licence_end", pa.date32()),
        ("days_to_warranty_end", pa.int32()),
        ("days_to_contract_end", pa.int32()),
        ("days_to_licence_end", pa.int32()),
        ("owner", pa.string()),
        ("owner_contact_sm4", pa.string()),
    ]
)
#: Field context of ``owner_contact_sm4``: the token is silver's, sealed once in bronze.
CONTACT_CONTEXT = OWNER_CONTACT


def ledger(cmdb_history: pa.Table, as_of: datetime) -> pa.Table:
    """The ledger at ``as_of``; the owner contact stays the SM4 token of ``cmdb_history``."""
    today: date = as_of.date()
    rows = []
    for r in sorted(current_rows(cmdb_history, as_of).to_pylist(), key=lambda r: r["entity_id"]):
        out = {k: r[k] for k in LEDGER.names if k in r}
        for what in ("warranty", "contract", "licence"):
            end = r[f"{what}_end"]
            out[f"days_to_{what}_end"] = (end - today).days if end else None
        rows.append(out)
    return pa.Table.from_pylist(rows, schema=LEDGER)
