"""The read statements shared by the API and ``Lake.local``: placeholders match parameters,
row scope goes last, and spliced names come only from closed lists."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from opslake.api import statements as st
from opslake.errors import InputError

T0, T1 = datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC)
EVERY = [
    st.catalog("cpu", None, "active"),
    st.metric("m"),
    st.versions("m"),
    st.lineage("m"),
    st.data_statement("m", "1h", "department", T0, T1, {"department": "d"}),
    st.newest_dt("anomalies"),
    st.incidents("2026-03-02", "firing", None),
    st.incidents("2026-03-02", None, None, frozenset({"b", "a"})),
    st.incident_exists("INC-0123456789ab"),
    st.incident_exists("INC-0", {"a"}),
    st.incident_alerts("INC-0"),
    st.anomalies("2026-03-02", None, "cpu", True),
    st.forecasts("2026-03-02", "e", None),
    st.capacity("2026-03-02", None, None),
    st.assets("2026-03-02", None, "d", None, 30),
    st.assets("2026-03-02", None, None, None, None, (" AND department = ?", ["x"])),
    st.newest_quality_day(),
    st.quality(date(2026, 3, 2), True),
    st.quality(None, False),
]


@pytest.mark.parametrize(("sql", "params"), EVERY)
def test_every_placeholder_has_its_parameter(sql: str, params: list[object]) -> None:
    assert sql.count("?") == len(params), sql


def test_scope_conditions_and_their_parameters_go_last() -> None:
    sql, params = st.incidents("2026-03-02", None, None, frozenset({"b", "a"}))
    assert "list_has_all(?::VARCHAR[], departments)" in sql
    assert params[-1] == ["a", "b"]
    unscoped, plain = st.incidents("2026-03-02", None, None)
    assert "list_has_all" not in unscoped and len(plain) == len(params) - 1
    sql, params = st.assets("2026-03-02", None, None, None, 5, (" AND department = ?", ["x"]))
    assert sql.index("AND department = ?") < sql.index("ORDER BY") and params[-1] == "x"


def test_only_known_tables_are_spliced() -> None:
    with pytest.raises(InputError, match="use one of"):
        st.newest_dt('anomalies"; DROP TABLE x; --')
    assert st.quality(date(2026, 3, 2), False)[1] == ["2026-03-02", False]
