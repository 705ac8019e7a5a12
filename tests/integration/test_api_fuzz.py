"""Fuzzing the read API against its own OpenAPI description (schemathesis, in process).

A 40-object estate (one day) goes through the real pipeline and the serving build once; an
operations engineer, a department viewer and an administrator (with a TOTP authenticator)
get API keys. Schemathesis then generates requests for every read (GET) operation the app
describes — push ingestion and subscriptions are exercised elsewhere — valid ones and,
for the engineer, invalid ones too, and checks every answer:

- no 5xx (``not_a_server_error``);
- the status is one the description documents, and the body and media type match what it
  documents for that status (JSON ``{count, rows}``, CSV, Arrow; ``{error, fix}`` errors);
- invalid requests are refused with a 4xx.

Without a credential every operation but the health check must answer 401 with
``{error, fix}``, whatever the parameters; that includes the push (POST ``/v1/ingest/*``)
operations, whatever the body, and nothing they are sent lands or is quarantined. A second app over a warehouse built from an empty
lake checks that missing tables are a 404, not a crash. The number of cases is printed.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import get_client
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from opslake.api.app import create_app
from opslake.lake import quarantine
from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.lake.warehouse import build_warehouse, open_read_only
from opslake.orchestration import runner
from opslake.security.identity import IdentityStore
from opslake.security.totp import b32_key, totp
from opslake.settings import Settings
from opslake.simulate import SimulationConfig, simulate

DAY = date(2026, 3, 2)
PASSWORD = "Correct-Horse-42-Battery"
#: Cases per operation, per generation mode and principal (fewer for the other principals).
MAX_EXAMPLES = 30
FEWER = 15
#: Push ingestion and subscriptions have their own tests; only GETs are read operations.
EXCLUDED = r"^/v1/(ingest|subscriptions)"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@dataclass
class Estate:
    settings: Settings
    keys: dict[str, str]
    secret: str
    app: object
    metric: str = ""
    cases: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    operations: dict[str, int] = field(default_factory=dict)

    def headers(self, role: str | None) -> dict[str, str]:
        if role is None:
            return {}
        headers = {"Authorization": f"Bearer {self.keys[role]}"}
        if role == "admin":
            headers["X-OpsLake-TOTP"] = totp(b32_key(self.secret), datetime.now(UTC).timestamp())
        return headers


def _identities(settings: Settings) -> tuple[dict[str, str], str]:
    store = IdentityStore.sealed(settings)
    store.bootstrap_admin("root", PASSWORD)
    secret, _ = store.enrol_totp("root")
    store.add_user("alice", "ops_engineer", PASSWORD)
    store.add_user("dora", "dept_viewer", PASSWORD, departments=["finance"], businesses=["tax"])
    keys = {
        role: store.create_key(user, quota_per_day=10_000_000)[1]
        for user, role in (("root", "admin"), ("alice", "ops_engineer"), ("dora", "dept_viewer"))
    }
    return keys, secret


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Estate:
    home = tmp_path_factory.mktemp("fuzz-lake")
    settings = Settings.from_env({"OPSLAKE_HOME": str(home)})
    simulate(
        SimulationConfig(seed=11, entities=40, days=1, start=DAY, step_seconds=300),
        LandingZone.from_settings(settings),
    )
    runner.materialize(settings, [DAY.isoformat()])
    runner.refresh_serving(settings)
    keys, secret = _identities(settings)
    con = open_read_only(settings.warehouse_path)
    # The metric with the most breakdowns, so filters and scoping have most to do.
    metric = con.execute(
        "SELECT metric_id FROM metric_values GROUP BY 1 "
        "ORDER BY count(DISTINCT scope) DESC, 1 LIMIT 1"
    ).fetchone()[0]
    con.close()
    return Estate(settings, keys, secret, create_app(settings), metric)


@pytest.fixture(scope="module")
def empty(tmp_path_factory: pytest.TempPathFactory) -> Estate:
    """A service whose warehouse was built from a lake with nothing in gold yet."""
    settings = Settings.from_env({"OPSLAKE_HOME": str(tmp_path_factory.mktemp("empty-lake"))})
    build_warehouse(Lake.from_settings(settings), settings.warehouse_path)
    keys, secret = _identities(settings)
    return Estate(settings, keys, secret, create_app(settings))


def _operations(estate: Estate) -> list:
    schema = schemathesis.openapi.from_asgi("/openapi.json", estate.app)
    return [r.ok() for r in schema.get_all_operations()]


def _read_operations(estate: Estate, path_regex: str) -> list:
    """The GET operations the app describes whose path matches, less the excluded ones."""
    return [
        op
        for op in _operations(estate)
        if op.method.upper() == "GET"
        and re.match(path_regex, op.path)
        and not re.match(EXCLUDED, op.path)
    ]


def _push_operations(estate: Estate) -> list:
    """The push (POST ``/v1/ingest/…``) operations the app describes."""
    return [
        op
        for op in _operations(estate)
        if op.method.upper() == "POST" and op.path.startswith("/v1/ingest/")
    ]


def _only_401(ctx, response, case) -> bool | None:
    """Without a credential, nothing but the health check answers, and never with data."""
    if case.operation.path == "/healthz":
        return None
    body = response.json() if response.status_code == 401 else None
    assert response.status_code == 401 and set(body) == {"error", "fix"}, (
        f"{case.method} {case.formatted_path} without a credential answered "
        f"{response.status_code}: {response.content[:200]!r}"
    )
    return None


def _fuzz(
    estate: Estate,
    role: str | None,
    mode: GenerationMode,
    checks: list,
    label: str,
    path_regex: str = "",
    examples: int = MAX_EXAMPLES,
    path_parameters: dict[str, str] | None = None,
    operations: list | None = None,
) -> list[str]:
    """Run every selected operation (default: the read operations whose path matches
    ``path_regex``); the failures, one line each (after shrinking)."""
    if operations is None:
        operations = _read_operations(estate, path_regex)
    operations = [op for op in operations if mode is GenerationMode.POSITIVE or _has_parameters(op)]
    assert operations, f"no GET operation matches {path_regex!r}"
    estate.operations[label] = len(operations)
    failures = []
    with get_client(estate.app) as client:
        for operation in operations:
            failures += _fuzz_operation(
                estate, operation, client, role, mode, checks, label, examples, path_parameters
            )
    return failures


def _has_parameters(operation) -> bool:
    """Whether there is anything to make invalid (the health check takes nothing)."""
    return any(True for _ in operation.iter_parameters())


def _fuzz_operation(
    estate: Estate,
    operation,
    client,
    role: str | None,
    mode: GenerationMode,
    checks: list,
    label: str,
    examples: int,
    path_parameters: dict[str, str] | None,
) -> list[str]:
    """Up to ``examples`` cases of one operation; its (shrunk) failure, if any."""

    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
    @hypothesis.given(
        case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
    )
    def run(case) -> None:
        estate.cases[label] += 1
        headers = estate.headers(role)
        response = case.call(headers=headers, session=client)
        estate.statuses[(label, response.status_code)] += 1
        case.validate_response(response, checks=checks, headers=headers)

    try:
        run()
    except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - report them all
        return [f"[{label}] {operation.label}: {str(exc).strip()[:1500]}"]
    return []


def test_no_5xx_and_every_answer_matches_the_description(estate: Estate) -> None:
    failures = []
    failures += _fuzz(estate, "ops_engineer", GenerationMode.POSITIVE, CHECKS, "ops valid")
    failures += _fuzz(
        estate,
        "ops_engineer",
        GenerationMode.NEGATIVE,
        [*CHECKS, negative_data_rejection],
        "ops invalid",
    )
    # Random metric ids are almost all unknown (404): also fuzz the rest with a real one.
    failures += _fuzz(
        estate,
        "ops_engineer",
        GenerationMode.POSITIVE,
        CHECKS,
        "ops real metric",
        path_regex=r".*\{metric_id\}",
        path_parameters={"metric_id": estate.metric},
    )
    failures += _fuzz(
        estate, "dept_viewer", GenerationMode.POSITIVE, CHECKS, "viewer valid", examples=FEWER
    )
    failures += _fuzz(
        estate,
        "dept_viewer",
        GenerationMode.POSITIVE,
        CHECKS,
        "viewer real metric",
        path_regex=r".*\{metric_id\}",
        examples=FEWER,
        path_parameters={"metric_id": estate.metric},
    )
    failures += _fuzz(
        estate, "admin", GenerationMode.POSITIVE, CHECKS, "admin valid", examples=FEWER
    )
    print(
        f"\nschemathesis cases: {sum(estate.cases.values())} "
        f"({', '.join(f'{k}: {v}' for k, v in estate.cases.items())}); statuses: "
        f"{dict(sorted(estate.statuses.items()))}"
    )
    assert not failures, "\n\n".join(failures)
    assert all(n > 0 for n in estate.cases.values())


def test_incident_handling_never_answers_5xx(estate: Estate) -> None:
    """Handling actions (POST /v1/incidents/{id}/…), valid and invalid, on a real incident
    and on made-up ids: a refused transition is a 400 with the reason, never a 5xx."""
    operations = [
        op
        for op in _operations(estate)
        if op.method.upper() == "POST" and op.path.startswith("/v1/incidents/")
    ]
    assert len(operations) == 6, [op.path for op in operations]
    con = open_read_only(estate.settings.warehouse_path)
    (incident,) = con.execute("SELECT min(incident_id) FROM incidents_current").fetchone()
    con.close()
    real = {"incident_id": incident}
    failures = _fuzz(
        estate,
        "ops_engineer",
        GenerationMode.POSITIVE,
        CHECKS,
        "handle",
        examples=FEWER,
        operations=operations,
        path_parameters=real,
    )
    failures += _fuzz(
        estate,
        "ops_engineer",
        GenerationMode.NEGATIVE,
        [*CHECKS, negative_data_rejection],
        "handle invalid",
        examples=FEWER,
        operations=operations,
        path_parameters=real,
    )
    failures += _fuzz(
        estate,
        "dept_viewer",
        GenerationMode.POSITIVE,
        CHECKS,
        "viewer handle",
        examples=FEWER,
        operations=operations,
        path_parameters=real,
    )
    failures += _fuzz(
        estate,
        "ops_engineer",
        GenerationMode.POSITIVE,
        CHECKS,
        "handle unknown",
        examples=FEWER,
        operations=operations,
    )
    print(
        f"\nschemathesis handling cases: {dict(estate.cases)}; statuses: "
        f"{dict(sorted(estate.statuses.items()))}"
    )
    assert not failures, "\n\n".join(failures)
    assert ("handle", 200) in estate.statuses and ("handle", 400) in estate.statuses


def test_without_a_credential_every_operation_answers_401(estate: Estate) -> None:
    failures = _fuzz(
        estate,
        None,
        GenerationMode.POSITIVE,
        [not_a_server_error, response_schema_conformance, _only_401],
        "anonymous",
    )
    print(f"\nschemathesis cases without a credential: {estate.cases['anonymous']}")
    assert not failures, "\n\n".join(failures)


def test_without_a_credential_no_push_is_accepted_or_kept(estate: Estate) -> None:
    # Remote write bodies are bytes: send what schemathesis generates for binary as is.
    schemathesis.serializer.alias("application/x-protobuf", "application/octet-stream")
    operations = _push_operations(estate)
    assert len(operations) == 3, [op.path for op in operations]
    lake = Lake.from_settings(estate.settings)
    landing = LandingZone(lake)
    day = datetime.now(UTC).date().isoformat()
    before = {s: len(landing.batches(s, day)) for s in ("prometheus", "alertmanager", "webhook")}
    failures = _fuzz(
        estate,
        None,
        GenerationMode.POSITIVE,
        [not_a_server_error, response_schema_conformance, _only_401],
        "anonymous push",
        examples=FEWER,
        operations=operations,
    )
    print(f"\nschemathesis push cases without a credential: {estate.cases['anonymous push']}")
    assert not failures, "\n\n".join(failures)
    assert estate.cases["anonymous push"] >= len(operations)
    after = {s: len(landing.batches(s, day)) for s in before}
    assert after == before
    assert quarantine.read(lake, [day]).num_rows == 0


def test_a_warehouse_without_gold_tables_answers_404_not_500(empty: Estate) -> None:
    failures = _fuzz(
        empty,
        "ops_engineer",
        GenerationMode.POSITIVE,
        CHECKS,
        "empty warehouse",
        path_regex=r"^/v1/(?!admin)",
    )
    statuses = {s for (_, s) in empty.statuses}
    print(
        f"\nschemathesis cases on an empty warehouse: {empty.cases['empty warehouse']}; "
        f"statuses {sorted(statuses)}"
    )
    assert not failures, "\n\n".join(failures)
    assert 404 in statuses and not any(s >= 500 for s in statuses)
