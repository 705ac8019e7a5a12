"""The portal's words: every key in all three languages, every key the pages use is in the
table, and screens link to their version in the user's language or fall back to zh-CN."""

from __future__ import annotations

import re
import string
from pathlib import Path

import yaml

from opslake.api.i18n import LABELS, LANGUAGE_NAMES, translator
from opslake.api.portal import screens
from opslake.api.workbench import LANGUAGES

TEMPLATES = Path(__file__).resolve().parents[2] / "opslake" / "api" / "templates"


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_key_has_all_three_languages_with_the_same_placeholders() -> None:
    assert set(LANGUAGE_NAMES) == set(LANGUAGES)
    for key, words in LABELS.items():
        assert len(words) == len(LANGUAGES), key
        assert all(w.strip() for w in words), key
        assert len({frozenset(_fields(w)) for w in words}) == 1, key
    # zh-TW is not zh-CN copied: most labels differ in traditional characters.
    differ = sum(1 for zh_cn, zh_tw, _ in LABELS.values() if zh_cn != zh_tw)
    assert differ > len(LABELS) // 2


def test_every_key_the_pages_use_is_in_the_table() -> None:
    used = set()
    for page in TEMPLATES.glob("*.html"):
        used |= set(
            re.findall(r"""\bt\(["']([a-z_]+)["']\s*[,)]""", page.read_text(encoding="utf-8"))
        )
    # Keys built in a page: a role, an action, a handling state.
    used |= {
        f"role_{r}" for r in ("ops_engineer", "leadership", "data_engineer", "dept_viewer", "admin")
    }
    used |= {
        f"act_{a}" for a in ("acknowledge", "assign", "comment", "severity", "resolve", "reopen")
    }
    used |= {f"state_{s}" for s in ("open", "acknowledged", "resolved")}
    assert len(used) > 50
    assert used <= set(LABELS), used - set(LABELS)


def test_translator_fills_values_and_defaults_to_zh_cn() -> None:
    assert translator("en")("more", n=3) == "3 more"
    assert translator("zh-TW")("more", n=3) == "還有 3 筆"
    assert translator("xx")("sign_out") == translator("zh-CN")("sign_out") == "退出"


def test_screens_link_their_language_version_or_fall_back_to_zh_cn(tmp_path: Path) -> None:
    for slug, title in (
        ("ops", "运维总览"),
        ("ops-en", "Operations overview"),
        ("ops-zh-tw", "維運總覽"),
        ("leadership", "领导驾驶舱"),
        ("leadership-en", "Leadership cockpit"),
    ):
        (tmp_path / f"{slug}.yaml").write_text(
            yaml.safe_dump({"slug": slug, "dashboard_title": title}, allow_unicode=True),
            encoding="utf-8",
        )
    found = screens(tmp_path)
    assert set(found) == {"ops", "leadership"}  # language versions are not screens of their own
    assert found["ops"].version("en") == ("ops-en", "Operations overview")
    assert found["ops"].version("zh-TW") == ("ops-zh-tw", "維運總覽")
    assert found["leadership"].version("zh-TW") == ("leadership", "领导驾驶舱")  # fallback
    assert found["leadership"].version("zh-CN") == ("leadership", "领导驾驶舱")
