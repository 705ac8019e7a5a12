"""Roles, scopes and the principal a request acts as (S6.6a RBAC, S5.4c data by role).

A scope names what an endpoint does (``metrics:read``); a role is a set of scopes plus two
data rules: whether its rows are limited to the principal's departments and businesses (row
scoping, applied by every data endpoint) and whether it may see sensitive CMDB fields (owner
contacts, decrypted from SM4 only for such roles). API keys may narrow a role's scopes, never
widen them.

Pushing data in (``ingest:write``: Prometheus remote write, Alertmanager and JSON alert
webhooks) is a scope like any other. Administrators and operations engineers hold it; the
``ingest`` role holds nothing else, so the key a sender keeps in its config file can land
data but read none if it leaks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Every scope an endpoint can require.
SCOPES = (
    "catalog:read",
    "metrics:read",
    "incidents:read",
    "anomalies:read",
    "forecasts:read",
    "assets:read",
    "quality:read",
    "subscriptions:read",
    "subscriptions:write",
    "ingest:write",
    "admin:users",
    "admin:keys",
    "admin:audit",
    "admin:egress",
    "incidents:handle",
    "incidents:comment",
    # The data service's own metrics (GET /metrics): every reading role but a department's.
    "platform:read",
)
READ = frozenset(s for s in SCOPES if s.endswith(":read") and not s.startswith("admin"))


@dataclass(frozen=True)
class Role:
    """A named set of scopes and the data rules that come with it."""

    name: str
    scopes: frozenset[str]
    row_scoped: bool
    sees_sensitive: bool
    description: str


ROLES: dict[str, Role] = {
    r.name: r
    for r in (
        Role(
            "admin",
            frozenset(SCOPES),
            False,
            True,
            "platform administrators: everything, administrative actions need a TOTP code",
        ),
        Role(
            "ops_engineer",
            READ | {"subscriptions:write", "ingest:write", "incidents:handle", "incidents:comment"},
            False,
            False,
            "operations-centre engineers: every row, handle incidents, no personal contact data",
        ),
        Role(
            "data_engineer",
            READ | {"subscriptions:write"},
            False,
            False,
            "data engineers: every row, no personal contact data; the only role besides "
            "admin the Dagster UI's door admits",
        ),
        Role(
            "leadership",
            READ,
            False,
            False,
            "leadership: reads every row (the leadership screens in Superset), writes nothing",
        ),
        Role(
            "dept_viewer",
            frozenset(
                {
                    "catalog:read",
                    "metrics:read",
                    "incidents:read",
                    "assets:read",
                    "quality:read",
                    "subscriptions:read",
                    "subscriptions:write",
                    "incidents:comment",
                }
            ),
            True,
            False,
            "a department's staff: only rows of their departments and businesses, "
            "and comments on their incidents",
        ),
        Role(
            "ingest",
            frozenset({"ingest:write"}),
            False,
            False,
            "machine senders (Prometheus, Alertmanager, alert webhooks): push data, read none",
        ),
    )
}
ANONYMOUS_SCOPES: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the user, the role, the key used and the rows it may see."""

    user: str
    role: str
    scopes: frozenset[str]
    departments: frozenset[str] = field(default_factory=frozenset)
    businesses: frozenset[str] = field(default_factory=frozenset)
    key_id: str | None = None

    @property
    def row_scoped(self) -> bool:
        return ROLES[self.role].row_scoped if self.role in ROLES else True

    @property
    def sees_sensitive(self) -> bool:
        return ROLES[self.role].sees_sensitive if self.role in ROLES else False

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


ANONYMOUS = Principal("anonymous", "anonymous", ANONYMOUS_SCOPES)

#: Breakdowns whose rows belong to one department or business, with the columns that say which
#: (the only breakdowns a row-scoped principal may ask for).
SCOPED_BREAKDOWNS: dict[str, tuple[str | None, str | None]] = {
    "entity": ("department", "business"),
    "department": ("department", None),
    "business": (None, "business"),
}


def row_scope_sql(
    principal: Principal, department: str | None, business: str | None
) -> tuple[str, list[object]]:
    """SQL condition (``AND …``) and its parameters limiting rows to the principal's own.

    ``department`` and ``business`` name the columns to check (None: the rows have none);
    a principal that is not row-scoped gets no condition.
    """
    if not principal.row_scoped:
        return "", []
    parts, params = [], []
    if department:
        parts.append(f"list_contains(?::VARCHAR[], {department})")
        params.append(sorted(principal.departments))
    if business:
        parts.append(f"list_contains(?::VARCHAR[], {business})")
        params.append(sorted(principal.businesses))
    return " AND (" + " OR ".join(parts or ["false"]) + ")", params
