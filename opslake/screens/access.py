"""Who sees what (S5.4c): the ops, leadership and department roles, and row-level security.

Provisioned through Superset's REST API from the repository's definitions, idempotently: a
role's permission set, an RLS rule or a user is written only when it differs from what is
there. Roles are self-contained (Gamma's read permissions plus data access), so a user needs
exactly one:

- ``OpsLake 运维值班`` (ops): every screen dataset, SQL Lab on the warehouse;
- ``OpsLake 领导`` (leadership): every screen dataset, no SQL Lab;
- ``OpsLake 部门·<部门>`` (one per department in the ledger): only the datasets that carry a
  ``department`` column, filtered by a row-level security rule to that department's rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from opslake.errors import SupersetError
from opslake.screens.bundle import DATABASE_NAME
from opslake.screens.model import Dataset
from opslake.screens.rest import SupersetClient
from opslake.security.roles import Principal

OPS_ROLE = "OpsLake 运维值班"
LEADERSHIP_ROLE = "OpsLake 领导"
DEPARTMENT_ROLE_PREFIX = "OpsLake 部门·"
#: Superset's built-in roles the OpsLake roles copy permissions from.
READ_ONLY_BASE = "Gamma"
SQL_LAB_BASE = "sql_lab"
#: Superset's own administrator role.
ADMIN_ROLE = "Admin"


def department_role(department: str) -> str:
    """The role name of one department."""
    return f"{DEPARTMENT_ROLE_PREFIX}{department}"


#: The Superset role each OpsLake role signs in with through the door (``superset_roles``);
#: a department viewer gets one role per department instead, the push-only ``ingest`` none.
SUPERSET_ROLE_OF = {
    "admin": ADMIN_ROLE,
    "ops_engineer": OPS_ROLE,
    "data_engineer": OPS_ROLE,
    "leadership": LEADERSHIP_ROLE,
}


def superset_roles(principal: Principal) -> list[str]:
    """The Superset roles an OpsLake user is given at Superset's door (empty: none, refused)."""
    if principal.role == "dept_viewer":
        return [department_role(d) for d in sorted(principal.departments)]
    return [SUPERSET_ROLE_OF[principal.role]] if principal.role in SUPERSET_ROLE_OF else []


def department_clause(department: str) -> str:
    """The RLS clause that keeps one department's rows (quotes escaped)."""
    return "department = '{}'".format(department.replace("'", "''"))


@dataclass
class AccessReport:
    """What provisioning created or changed (empty lists: nothing to do)."""

    roles_created: list[str] = field(default_factory=list)
    roles_updated: list[str] = field(default_factory=list)
    rules_created: list[str] = field(default_factory=list)
    rules_updated: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True when anything was written."""
        return bool(
            self.roles_created or self.roles_updated or self.rules_created or self.rules_updated
        )


class Access:
    """Roles, permissions and RLS rules of one Superset, read once and written as needed."""

    def __init__(self, client: SupersetClient) -> None:
        self.client = client
        self.roles = {r["name"]: r["id"] for r in client.list_all("security/roles")}
        self.pvms = {
            (p["permission"]["name"], p["view_menu"]["name"]): p["id"]
            for p in client.list_all("security/permissions-resources")
        }

    def role_permissions(self, role: str) -> set[int]:
        """Permission ids held by ``role``."""
        if role not in self.roles:
            raise SupersetError(
                f"Superset has no role {role!r}; run `superset init` (a fresh "
                "`opslake screens start` does)"
            )
        result = self.client.get(f"/api/v1/security/roles/{self.roles[role]}/permissions/")
        return {p["id"] for p in result["result"]}

    def permission(self, permission: str, view_menu: str) -> int:
        """The id of one permission on one view menu."""
        try:
            return self.pvms[(permission, view_menu)]
        except KeyError:
            raise SupersetError(
                f"Superset has no permission {permission} on {view_menu}; "
                "import the screens first (`opslake screens start`)"
            ) from None

    def ensure_role(self, name: str, permissions: set[int], report: AccessReport) -> int:
        """Create ``name`` if missing and give it exactly ``permissions``."""
        if name not in self.roles:
            self.roles[name] = self.client.post("/api/v1/security/roles/", {"name": name})["id"]
            report.roles_created.append(name)
        elif self.role_permissions(name) == permissions:
            return self.roles[name]
        else:
            report.roles_updated.append(name)
        self.client.post(
            f"/api/v1/security/roles/{self.roles[name]}/permissions",
            {"permission_view_menu_ids": sorted(permissions)},
        )
        return self.roles[name]

    def ensure_rule(
        self,
        name: str,
        tables: list[int],
        roles: list[int],
        clause: str,
        existing: dict[str, dict[str, Any]],
        report: AccessReport,
    ) -> None:
        """Create or correct one regular RLS rule."""
        body = {
            "name": name,
            "filter_type": "Regular",
            "tables": sorted(tables),
            "roles": sorted(roles),
            "clause": clause,
            "group_key": "department",
            "description": "OpsLake: a department sees only its own rows.",
        }
        rule = existing.get(name)
        if rule is None:
            self.client.post("/api/v1/rowlevelsecurity/", body)
            report.rules_created.append(name)
            return
        same = (
            rule["filter_type"] == "Regular"
            and rule["clause"] == clause
            and rule.get("group_key") == "department"
            and sorted(t["id"] for t in rule["tables"]) == body["tables"]
            and sorted(r["id"] for r in rule["roles"]) == body["roles"]
        )
        if not same:
            self.client.put(f"/api/v1/rowlevelsecurity/{rule['id']}", body)
            report.rules_updated.append(name)


def provision_access(
    client: SupersetClient, datasets: list[Dataset], departments: Iterable[str]
) -> AccessReport:
    """Create or correct the ops, leadership and department roles and their RLS rules."""
    report = AccessReport()
    access = Access(client)
    by_uuid = {d["uuid"]: d for d in client.list_all("dataset", ["id", "uuid", "table_name"])}
    missing = [d.key for d in datasets if d.uuid not in by_uuid]
    if missing:
        raise SupersetError(
            f"datasets {', '.join(missing)} are not in Superset; import the "
            "screens first (`opslake screens start`)"
        )
    databases = client.list_all("database", ["id", "database_name"])
    db_id = next((d["id"] for d in databases if d["database_name"] == DATABASE_NAME), None)
    if db_id is None:
        raise SupersetError(
            f"Superset has no database {DATABASE_NAME!r}; import the screens "
            "first (`opslake screens start`)"
        )

    def dataset_access(d: Dataset) -> int:
        row = by_uuid[d.uuid]
        return access.permission(
            "datasource_access", f"[{DATABASE_NAME}].[{row['table_name']}](id:{row['id']})"
        )

    read_only = access.role_permissions(READ_ONLY_BASE)
    every_dataset = {dataset_access(d) for d in datasets}
    database = access.permission("database_access", f"[{DATABASE_NAME}].(id:{db_id})")
    access.ensure_role(
        OPS_ROLE,
        read_only | access.role_permissions(SQL_LAB_BASE) | every_dataset | {database},
        report,
    )
    access.ensure_role(LEADERSHIP_ROLE, read_only | every_dataset, report)

    scoped = [d for d in datasets if d.by_department]
    scoped_access = {dataset_access(d) for d in scoped}
    tables = [by_uuid[d.uuid]["id"] for d in scoped]
    rules = {
        r["name"]: r
        for r in client.list_all(
            "rowlevelsecurity",
            ["id", "name", "filter_type", "tables.id", "roles.id", "clause", "group_key"],
        )
    }
    for department in sorted(set(departments)):
        role_id = access.ensure_role(department_role(department), read_only | scoped_access, report)
        access.ensure_rule(
            department_role(department),
            tables,
            [role_id],
            department_clause(department),
            rules,
            report,
        )
    return report


def ensure_user(
    client: SupersetClient,
    username: str,
    password: str,
    roles: list[str],
    first_name: str = "OpsLake",
    last_name: str = "User",
) -> int:
    """Create ``username`` with ``roles`` (or set its roles and password); returns its id."""
    access = Access(client)
    unknown = [r for r in roles if r not in access.roles]
    if unknown:
        raise SupersetError(
            f"no role {', '.join(unknown)} in Superset; provision the roles "
            "first (`opslake screens start`) or pick one of: " + ", ".join(sorted(access.roles))
        )
    role_ids = [access.roles[r] for r in roles]
    users = client.list_all(
        "security/users",
        ["id", "username"],
        filters=[{"col": "username", "opr": "eq", "value": username}],
    )
    body = {
        "username": username,
        "first_name": first_name,
        "last_name": last_name,
        "email": f"{username}@opslake.invalid",
        "active": True,
        "roles": role_ids,
        "password": password,
    }
    if users:
        client.put(f"/api/v1/security/users/{users[0]['id']}", body)
        return users[0]["id"]
    return client.post("/api/v1/security/users/", body)["id"]
