"""The workbench store: pins and languages per user, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from opslake.api.workbench import DEFAULT_LANGUAGE, MAX_PINS, Workbench
from opslake.errors import InputError


def test_pins_are_per_user_kept_once_and_survive_a_new_store(
    tmp_path: Path, database_url: str | None
) -> None:
    bench = Workbench(tmp_path, database_url)
    assert bench.pin("ann", "metric", "service.sla.attainment")
    assert not bench.pin("ann", "metric", "service.sla.attainment")  # already pinned
    assert bench.pin("ann", "screen", "leadership")
    assert bench.pins("bob") == []
    again = Workbench(tmp_path, database_url)
    assert [(p.kind, p.ref) for p in again.pins("ann")] == [
        ("metric", "service.sla.attainment"),
        ("screen", "leadership"),
    ]
    assert again.unpin("ann", "screen", "leadership")
    assert not again.unpin("ann", "screen", "leadership")
    assert [p.ref for p in bench.pins("ann")] == ["service.sla.attainment"]
    if database_url is None:  # the SQLite file is its owner's alone
        assert (tmp_path / "workbench.db").stat().st_mode & 0o777 == 0o600


def test_unknown_kinds_and_too_many_pins_are_refused(
    tmp_path: Path, database_url: str | None
) -> None:
    bench = Workbench(tmp_path, database_url)
    with pytest.raises(InputError, match="cannot pin a 'chart'"):
        bench.pin("ann", "chart", "x")
    for n in range(MAX_PINS):
        bench.pin("ann", "metric", f"m{n}")
    with pytest.raises(InputError, match="unpin one first"):
        bench.pin("ann", "metric", "one.more")
    assert len(bench.pins("ann")) == MAX_PINS


def test_a_language_is_kept_per_user_and_zh_cn_is_the_default(
    tmp_path: Path, database_url: str | None
) -> None:
    bench = Workbench(tmp_path, database_url)
    assert bench.language("ann") == DEFAULT_LANGUAGE == "zh-CN"
    bench.set_language("ann", "en")
    bench.set_language("ann", "zh-TW")  # changed, not added
    assert Workbench(tmp_path, database_url).language("ann") == "zh-TW"
    assert bench.language("bob") == "zh-CN"
    with pytest.raises(InputError, match="choose one of zh-CN, zh-TW, en"):
        bench.set_language("ann", "fr")
    assert bench.language("ann") == "zh-TW"
