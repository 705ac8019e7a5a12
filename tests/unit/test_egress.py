"""The webhook egress policy (issue 16): internal ranges refused unless an address or CIDR
entry lists them, public addresses only when listed, every resolved address checked, at
creation and again at delivery (a fake resolver stands in for DNS)."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from opslake import subscriptions as subs
from opslake.errors import ConfigError, DeliveryError, EgressRefused, InputError, NotFoundError
from opslake.security.egress import EgressPolicy, Entry
from opslake.security.roles import ROLES, Principal
from opslake.settings import Settings

VIEWER = Principal(
    "dora", "dept_viewer", ROLES["dept_viewer"].scopes, departments=frozenset({"health"})
)
PUBLIC = "93.184.215.14"  # a public address (documentation ranges are not global)
INTERNAL = {
    "127.0.0.1": "loopback",
    "127.9.9.9": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "172.31.255.254": "private",
    "192.168.1.1": "private",
    "169.254.169.254": "link-local",
    "100.64.0.1": "CGNAT",
    "100.100.100.200": "CGNAT",
    "0.0.0.0": "unspecified",
    "224.0.0.1": "multicast",
    "240.0.0.1": "reserved",
    "::1": "loopback",
    "::": "unspecified",
    "fe80::1": "link-local",
    "fc00::1": "private",
    "fd00:ec2::254": "private",
    "ff02::1": "multicast",
    "fec0::1": "private",
    "::ffff:127.0.0.1": "loopback",
    "::ffff:10.0.0.1": "private",
    "::ffff:169.254.169.254": "link-local",
    "2002:7f00:1::": "loopback",
}


_FILES = itertools.count()


class Resolver:
    """DNS as the test says: ``answers[host]``, counting lookups."""

    def __init__(self, **answers: list[str]) -> None:
        self.answers = {h.replace("_", "."): a for h, a in answers.items()}
        self.lookups = 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.lookups += 1
        if host not in self.answers:
            raise OSError("Name or service not known")
        return self.answers[host]


def _policy(tmp_path: Path, *allow: str, resolver: Resolver | None = None) -> EgressPolicy:
    config = tmp_path / f"egress-{next(_FILES)}.yaml"  # policies read their file at each check
    config.write_text(json.dumps({"allow": list(allow)}))  # JSON is YAML
    return EgressPolicy(tmp_path / "state", config, resolve=resolver or Resolver())


def _url(address: str, port: int | None = None) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}{f':{port}' if port else ''}/hook"


@pytest.mark.parametrize("address", sorted(INTERNAL))
def test_each_internal_range_is_refused_unless_an_address_entry_covers_it(
    tmp_path: Path, address: str
) -> None:
    # As a literal (any entry list that could admit it), and as a name that an entry lists
    # but that resolves inside.
    for policy, url in (
        (_policy(tmp_path, "198.51.100.0/24"), _url(address)),
        (
            _policy(
                tmp_path,
                "hooks.example.com",
                "*.example.com",
                resolver=Resolver(hooks_example_com=[address]),
            ),
            "http://hooks.example.com/hook",
        ),
    ):
        with pytest.raises(EgressRefused, match="not allow-listed; ask an administrator") as e:
            policy.check(url)
        assert (
            f"a {INTERNAL[address]} address, which needs an address or CIDR entry" in e.value.reason
        )
        assert address not in str(e.value) or url == _url(address)
    wide = _policy(tmp_path, "0.0.0.0/0", "::/0")
    assert wide.check(_url(address, 8080)).port == 8080


def test_public_addresses_are_denied_by_default_and_allowed_when_listed(tmp_path: Path) -> None:
    dns = Resolver(
        hooks_example_com=[PUBLIC], a_b_ops_example_com=[PUBLIC], ops_example_com=[PUBLIC]
    )
    with pytest.raises(EgressRefused, match="POST /v1/admin/egress"):
        _policy(tmp_path, resolver=dns).check("https://hooks.example.com/hook")
    assert dns.lookups == 0  # nothing could admit it: not even looked up
    policy = _policy(tmp_path, "hooks.example.com:8443", "*.ops.example.com", resolver=dns)
    assert str(policy.check("https://hooks.example.com:8443/x").address) == PUBLIC
    with pytest.raises(EgressRefused):
        policy.check("https://hooks.example.com/x")  # port 443: not the listed port
    assert policy.check("http://a.b.ops.example.com/").host == "a.b.ops.example.com"
    with pytest.raises(EgressRefused):
        policy.check("http://ops.example.com/")  # *.suffix is not the suffix itself
    # An address or CIDR entry admits a public address whatever the name.
    assert (
        _policy(tmp_path, "93.184.215.0/24:443", resolver=dns)
        .check("https://hooks.example.com/")
        .port
        == 443
    )


def test_every_resolved_address_must_pass(tmp_path: Path) -> None:
    dns = Resolver(hooks_example_com=[PUBLIC, "10.0.0.5"], internal_example_com=["10.0.0.5"])
    policy = _policy(tmp_path, "hooks.example.com", "internal.example.com", resolver=dns)
    with pytest.raises(EgressRefused) as refused:
        policy.check("http://hooks.example.com/")
    assert "10.0.0.5: a private address" in refused.value.reason
    # The refusal does not tell a non-admin what the name resolved to.
    assert "10.0.0.5" not in str(refused.value)
    with pytest.raises(EgressRefused):
        policy.check("http://internal.example.com/")
    listed = _policy(tmp_path, "internal.example.com", "10.0.0.0/24", resolver=dns)
    assert str(listed.check("http://internal.example.com/").address) == "10.0.0.5"


def test_odd_spellings_of_loopback_resolve_and_are_refused(tmp_path: Path) -> None:
    policy = EgressPolicy(tmp_path, None)  # the real resolver: numeric forms need no DNS
    policy.add("192.0.2.0/24", by="root")  # a network entry, so names are looked up
    for url in (
        "http://127.1/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://[::ffff:7f00:1]/",
        "http://localhost/",
    ):
        with pytest.raises(EgressRefused):
            policy.check(url)


def test_metadata_names_need_their_exact_name_and_address(tmp_path: Path) -> None:
    dns = Resolver(metadata_google_internal=["169.254.169.254"])
    with pytest.raises(EgressRefused) as refused:
        _policy(tmp_path, "*.google.internal", "0.0.0.0/0", resolver=dns).check(
            "http://metadata.google.internal/computeMetadata/v1/"
        )
    assert "metadata name" in refused.value.reason
    with pytest.raises(EgressRefused):  # named, yet link-local without an address entry
        _policy(tmp_path, "metadata.google.internal", resolver=dns).check(
            "http://metadata.google.internal/"
        )
    assert (
        _policy(tmp_path, "metadata.google.internal", "169.254.169.254", resolver=dns)
        .check("http://metadata.google.internal/")
        .port
        == 80
    )


def test_urls_with_userinfo_or_other_schemes_are_refused(tmp_path: Path) -> None:
    policy = _policy(tmp_path, "0.0.0.0/0")
    for url, what in (
        ("http://user:pw@203.0.113.7/", "user:password"),
        ("ftp://203.0.113.7/", "http"),
        ("file:///etc/passwd", "http"),
        ("http:///nohost", "http"),
        ("gopher://127.0.0.1:6379/_x", "http"),
    ):
        with pytest.raises(InputError, match=what):
            policy.check(url)


def test_a_listed_name_that_does_not_resolve_says_so(tmp_path: Path) -> None:
    with pytest.raises(EgressRefused, match="does not resolve; check the host name"):
        _policy(tmp_path, "gone.example.com").check("http://gone.example.com/")


def test_delivery_is_pinned_to_the_checked_address(tmp_path: Path) -> None:
    dns = Resolver(hooks_example_com=["2001:db8::7", PUBLIC])
    target = _policy(tmp_path, "hooks.example.com", "2001:db8::/32", resolver=dns).check(
        "https://hooks.example.com:8443/a/b?c=1"
    )
    assert str(target.pinned_url) == "https://[2001:db8::7]:8443/a/b?c=1"
    assert target.host_header == "hooks.example.com:8443"
    assert target.extensions == {"sni_hostname": "hooks.example.com"}
    plain = _policy(tmp_path, "0.0.0.0/0").check("http://203.0.113.7/")
    assert (str(plain.pinned_url), plain.extensions) == ("http://203.0.113.7/", {})


def test_rebinding_between_creation_and_delivery_is_refused_at_delivery(tmp_path: Path) -> None:
    dns = Resolver(hooks_example_com=[PUBLIC])
    policy = _policy(tmp_path, "hooks.example.com", resolver=dns)
    now = datetime(2026, 3, 2, tzinfo=UTC)
    sub, secret = subs.new_subscription(
        VIEWER,
        {
            "condition": {"type": "quality_failed"},
            "delivery": {"type": "webhook", "url": "http://hooks.example.com/hook"},
        },
        now,
        egress=policy,
    )
    dns.answers["hooks.example.com"] = ["127.0.0.1"]  # the name now points inside
    with pytest.raises(DeliveryError) as failed:
        subs.Sender(policy).send(sub, secret, "quality:x", "{}")
    assert str(failed.value) == "refused: destination not allow-listed"
    with pytest.raises(EgressRefused, match="not allow-listed"):
        subs.new_subscription(
            VIEWER,
            {
                "condition": {"type": "quality_failed"},
                "delivery": {"type": "webhook", "url": "http://hooks.example.com/hook"},
            },
            now,
            egress=policy,
        )


def test_entries_parse_to_one_canonical_form_and_bad_ones_say_the_forms() -> None:
    for text, canonical in (
        ("Hooks.Example.com", "hooks.example.com"),
        ("hooks.example.com:8443", "hooks.example.com:8443"),
        ("*.ops.example.com", "*.ops.example.com"),
        ("10.1.2.3/24", "10.1.2.0/24"),
        ("10.1.2.3/32", "10.1.2.3"),
        ("10.0.0.0/8:443", "10.0.0.0/8:443"),
        ("FD00::/8", "fd00::/8"),
        ("[fd00::1]:8443", "[fd00::1]:8443"),
        ("::1", "::1"),
    ):
        assert Entry.parse(text).text == canonical
    for bad in (
        "",
        "*",
        "*.",
        "a..b",
        "127.1",
        "[hooks.example.com]:80",
        "[10.0.0.1]",
        "hooks.example.com:0",
        "hooks.example.com:70000",
        "10.0.0.1/33",
        "a b",
        8080,
        "http://hooks.example.com",
        "-bad.example.com",
    ):
        with pytest.raises(InputError, match="not an egress entry"):
            Entry.parse(bad)


def test_api_entries_are_kept_in_the_state_store_beside_the_file_entries(
    tmp_path: Path, database_url: str | None
) -> None:
    config = tmp_path / "egress.yaml"
    config.write_text(json.dumps({"allow": ["hooks.example.com"]}))
    policy = EgressPolicy(tmp_path / "state", config, database_url=database_url)
    row, added = policy.add("10.20.0.0/16", by="root", note="ITSM")
    assert added and row["origin"] == "api" and row["added_by"] == "root"
    assert policy.add("10.20.1.1/16", by="root") == (row, False)  # the same network
    assert policy.add("HOOKS.example.com", by="root")[0]["origin"] == "config"
    assert [(r["entry"], r["origin"]) for r in policy.listed()] == [
        ("hooks.example.com", "config"),
        ("10.20.0.0/16", "api"),
    ]
    with policy.db.connect() as conn:
        assert conn.execute("SELECT note FROM allowed").fetchone()[0] == "ITSM"
    # A new policy object (another process, another host on the database) sees them.
    elsewhere = EgressPolicy(tmp_path / "elsewhere", database_url=database_url)
    expected = [Entry.parse("10.20.0.0/16")]
    assert (elsewhere.entries() == expected) == (database_url is not None)
    assert EgressPolicy(tmp_path / "state", database_url=database_url).entries() == expected
    with pytest.raises(ConfigError, match="remove it from that file"):
        policy.remove("hooks.example.com")
    with pytest.raises(NotFoundError, match="GET /v1/admin/egress"):
        policy.remove("10.30.0.0/16")
    assert policy.remove("10.20.0.0/16") == "10.20.0.0/16"
    assert [r["origin"] for r in policy.listed()] == ["config"]


def test_an_egress_json_of_earlier_versions_is_imported_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    row = {"entry": "10.20.0.0/16", "added_by": "root", "added_at": "2026-01-02T03:04:05+00:00"}
    (state / "egress.json").write_text(json.dumps({"allow": [{**row, "note": "ITSM"}]}))
    assert EgressPolicy(state).listed() == [{**row, "note": "ITSM", "origin": "api"}]
    assert not (state / "egress.json").exists() and (state / "egress.json.imported").exists()
    assert EgressPolicy(state).entries() == [Entry.parse("10.20.0.0/16")]  # kept in the store
    (state / "egress.json").write_text('{"allow": [{"entry": "not an entry"}]}')
    with pytest.raises(ConfigError, match="egress.json is damaged"):
        EgressPolicy(state).entries()


def test_a_bad_egress_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "egress.yaml"
    for text in ("allow: [not an entry]", "hosts: []", "allow: 10.0.0.1", "allow: [a"):
        config.write_text(text)
        with pytest.raises(ConfigError, match="egress.yaml"):
            EgressPolicy(tmp_path, config).entries()
    config.write_text("# nothing listed yet\n")
    assert EgressPolicy(tmp_path, config).entries() == []


def test_the_shipped_file_lists_nothing_and_the_setting_moves_it(tmp_path: Path) -> None:
    shipped = Settings.from_env({})
    assert shipped.egress_file == Path(__file__).parents[2] / "config" / "egress.yaml"
    moved = Settings.from_env(
        {"OPSLAKE_EGRESS_FILE": str(tmp_path / "mine.yaml"), "OPSLAKE_HOME": str(tmp_path)}
    )
    assert moved.egress_file == tmp_path / "mine.yaml"
    assert EgressPolicy(tmp_path, shipped.egress_file).entries() == []
