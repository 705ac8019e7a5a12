"""Where outbound webhooks may go: an allow-list an administrator keeps, deny by default.

A webhook subscription makes the service POST, every evaluator pass and from inside the
operations network, to an address its owner chose. Unchecked, any role holding
``subscriptions:write`` could reach loopback services, internal ranges and cloud metadata
(server-side request forgery, issue 16). So a webhook destination must be allow-listed:

- an entry is an exact host name (``hooks.example.gov.cn``), ``*.suffix`` (any name under
  the suffix, not the suffix itself), an address or a CIDR (``10.20.0.0/16``,
  ``fd00:12::/64``), each optionally with a port (``hooks.example.gov.cn:8443``,
  ``10.20.0.0/16:8443``, ``[fd00:12::/64]:8443``);
- entries come from ``Settings.egress_file`` (``config/egress.yaml``, key ``allow``;
  ``OPSLAKE_EGRESS_FILE`` moves it) and from ``POST /v1/admin/egress``, which keeps them in
  the state store (``state_dir/egress.db``, or schema ``egress`` of ``OPSLAKE_DATABASE_URL``,
  shared by every API host; an ``egress.json`` of earlier versions is imported once); both
  are read at every check, so a change applies at once;
- every address the host resolves to (``socket.getaddrinfo``) must pass, judged with the
  standard library's :mod:`ipaddress`. An internal address (loopback, link-local with the
  169.254.169.254 metadata service, private, CGNAT 100.64/10, unspecified, multicast,
  reserved, or one of these inside an IPv4-mapped or 6to4 IPv6 address) passes only when an
  address or CIDR entry covers it: a host name entry is not enough, as whoever controls a
  name's DNS could point it inside. Any other address passes when a host entry names the
  host or an address/CIDR entry covers it. Well-known cloud metadata names pass only when
  listed by exactly that name.
- Nothing else passes: public addresses are denied by default too, because a government
  operations centre names the receivers its data may go to.

The check runs when a subscription is created and again at every delivery, and a delivery
connects to the address the check passed (:class:`Destination`), so a name that resolves
elsewhere in between (DNS rebinding) cannot move it.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import httpx
import yaml

from opslake.errors import ConfigError, EgressRefused, InputError, NotFoundError
from opslake.lake.state_db import PostgresStateDB, StateDB, open_store
from opslake.settings import Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: ``(host, port)`` → every address the host resolves to, as text.
Resolver = Callable[[str, int], list[str]]

#: Where earlier versions kept the API's entries (imported into the store once).
LEGACY_FILE = "egress.json"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS allowed (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, entry TEXT NOT NULL UNIQUE, added_by TEXT NOT NULL,
    added_at TEXT NOT NULL, note TEXT NOT NULL DEFAULT '');
"""
SCHEMES = {"http": 80, "https": 443}
#: Names that reach a cloud's instance metadata (and its credentials) from inside a VM.
METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
    }
)
CGNAT = ipaddress.ip_network("100.64.0.0/10")
HOW_TO_LIST = (
    'ask an administrator to allow-list it with POST /v1/admin/egress {"entry": '
    '"host[:port]"} or under allow: in config/egress.yaml (an internal address, such as '
    "loopback, private, link-local or CGNAT, needs an address or CIDR entry; a host name "
    "entry is not enough)"
)
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"^(?:\*\.)?{_LABEL}(?:\.{_LABEL})*$")


def _bad_entry(text: object) -> InputError:
    return InputError(
        f"{text!r} is not an egress entry; use a host (hooks.example.gov.cn), "
        "*.suffix, an address or a CIDR (10.20.0.0/16, fd00::/8), optionally "
        "with :port (IPv6 in brackets: [fd00::/8]:8443)"
    )


def _port(text: object, raw: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise _bad_entry(text)
    return int(raw)


@dataclass(frozen=True)
class Entry:
    """One allow-list entry: a host name, ``*.suffix``, an address or a CIDR; one port or any."""

    host: str | None = None
    network: Network | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: object) -> Entry:
        """An entry from its text form; InputError saying the accepted forms otherwise."""
        if not isinstance(text, str):
            raise _bad_entry(text)
        raw = text.strip().lower()
        body, port, bracketed = raw, None, raw.startswith("[")
        if bracketed:
            body, closed, rest = raw[1:].partition("]")
            if not closed or (rest and not rest.startswith(":")):
                raise _bad_entry(text)
            port = _port(text, rest[1:]) if rest else None
        elif raw.count(":") == 1:
            body, _, rest = raw.partition(":")
            port = _port(text, rest)
        try:
            network = ipaddress.ip_network(body, strict=False)
        except ValueError:
            network = None
        if network is not None and (network.version == 6 or not bracketed):
            return cls(network=network, port=port)
        # A name whose last label is a number is an address in disguise (127.1): list the
        # address instead, so it is judged as one.
        if (
            bracketed
            or len(body) > 253
            or not _HOST.match(body)
            or body.rsplit(".", 1)[-1].isdigit()
        ):
            raise _bad_entry(text)
        return cls(host=body, port=port)

    @property
    def text(self) -> str:
        """The entry as listed, and as ``DELETE /v1/admin/egress/{entry}`` names it."""
        if self.network is None:
            body = str(self.host)
        elif self.network.prefixlen == self.network.max_prefixlen:
            body = str(self.network.network_address)
        else:
            body = str(self.network)
        if self.port is None:
            return body
        if self.network is not None and self.network.version == 6:
            body = f"[{body}]"
        return f"{body}:{self.port}"

    def admits_name(self, name: str, port: int) -> bool:
        """Whether this host entry names ``name`` at ``port``."""
        if self.host is None or self.port not in (None, port):
            return False
        return name == self.host or (self.host.startswith("*.") and name.endswith(self.host[1:]))

    def admits_address(self, address: Address, port: int) -> bool:
        """Whether this address/CIDR entry covers ``address`` at ``port``."""
        # ipaddress compares across versions by integer value: check the version first.
        return (
            self.network is not None
            and self.port in (None, port)
            and address.version == self.network.version
            and address in self.network
        )


def internal(address: Address) -> str | None:
    """What kind of non-public address ``address`` is; None for a public one."""
    kinds = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("CGNAT", address in CGNAT if address.version == 4 else False),
        ("reserved", address.is_reserved),
        ("private", address.is_private or getattr(address, "is_site_local", False)),
        ("non-global", not address.is_global),
    )
    return next((kind for kind, hit in kinds if hit), None)


def _embedded(address: Address) -> Address:
    """The IPv4 address inside an IPv4-mapped or 6to4 IPv6 address; else ``address``."""
    if isinstance(address, ipaddress.IPv6Address):
        return address.ipv4_mapped or address.sixtofour or address
    return address


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (``socket.getaddrinfo``), in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # A link-local IPv6 answer carries its interface (%eth0); the address is what is judged.
    return list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))


@dataclass(frozen=True)
class Destination:
    """A webhook URL that passed the check, pinned to the address it passed with."""

    url: httpx.URL
    host: str
    port: int
    address: Address

    @property
    def pinned_url(self) -> httpx.URL:
        """The URL with its host replaced by the checked address: what is connected to."""
        return self.url.copy_with(host=str(self.address))

    @property
    def host_header(self) -> str:
        """``Host`` as the URL names it (the receiver routes on it)."""
        return self.url.netloc.decode("ascii")

    @property
    def extensions(self) -> dict[str, str]:
        """For https to a name: that name for SNI and the certificate check, not the address."""
        if self.url.scheme == "https" and _literal(self.host) is None:
            return {"sni_hostname": self.host}
        return {}


def _parse(url: str) -> tuple[httpx.URL, str, int]:
    """The URL, its host (ASCII, lower case, no trailing dot) and port."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise EgressRefused(
            f"webhook url {url!r} is not a URL ({exc}); use http(s)://host[:port]/path", "not a URL"
        ) from exc
    if parsed.scheme not in SCHEMES or not parsed.raw_host:
        raise EgressRefused(
            "a webhook url is http(s)://host[:port]/path; other schemes are not delivered to",
            "not http(s)",
        )
    if parsed.userinfo:
        raise EgressRefused(
            "a webhook url carries no user:password@; receivers authenticate "
            "deliveries by their X-OpsLake-Signature",
            "userinfo in the URL",
        )
    host = parsed.raw_host.decode("ascii").rstrip(".").lower()
    return parsed, host, parsed.port or SCHEMES[parsed.scheme]


class EgressPolicy:
    """The allow-list (the config file's entries and the admin API's) and the check."""

    def __init__(
        self,
        state_dir: Path,
        config_file: Path | None = None,
        *,
        resolve: Resolver = resolve_host,
        database_url: str | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.config_file = config_file
        self.resolve = resolve
        self._database_url = database_url

    @classmethod
    def from_settings(cls, settings: Settings) -> EgressPolicy:
        """The policy of ``settings``: its egress file and its state store."""
        return cls(settings.state_dir, settings.egress_file, database_url=settings.database_url)

    @cached_property
    def db(self) -> StateDB | PostgresStateDB:
        """The store of the API's entries, opened on first use (a check may never need it)."""
        db = open_store(
            self.state_dir, self._database_url, "egress.db", "egress", _SCHEMA, "the egress list"
        )
        legacy = self.state_dir / LEGACY_FILE
        if legacy.exists():
            self._import(db, legacy)
        return db

    @staticmethod
    def _import(db: StateDB | PostgresStateDB, legacy: Path) -> None:
        """Move an earlier version's ``egress.json`` into the store, once."""
        try:
            rows = json.loads(legacy.read_text(encoding="utf-8"))["allow"]
            for row in rows:
                Entry.parse(row["entry"])
        except (OSError, ValueError, KeyError, TypeError, InputError) as exc:
            raise ConfigError(
                f"{legacy} is damaged ({exc}); restore it from a backup, or delete it and "
                "add the entries again with POST /v1/admin/egress"
            ) from exc
        with db.tx() as conn:
            conn.executemany(
                "INSERT INTO allowed (entry, added_by, added_at, note) VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                [(r["entry"], r["added_by"], r["added_at"], r.get("note", "")) for r in rows],
            )
        legacy.rename(legacy.with_name(LEGACY_FILE + ".imported"))

    # the entries

    def _configured(self) -> list[Entry]:
        if self.config_file is None or not self.config_file.exists():
            return []
        try:
            doc = yaml.safe_load(self.config_file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(
                f"{self.config_file} cannot be read as YAML ({exc}); fix it, or "
                "point OPSLAKE_EGRESS_FILE at another file"
            ) from exc
        if (
            not isinstance(doc, dict)
            or set(doc) - {"allow"}
            or not isinstance(doc.get("allow") or [], list)
        ):
            raise ConfigError(
                f"{self.config_file} must hold one key, allow, a list of "
                "entries; see the comments in the repository's "
                "config/egress.yaml"
            )
        try:
            return [Entry.parse(item) for item in doc.get("allow") or []]
        except InputError as exc:
            raise ConfigError(f"{self.config_file}: {exc}") from exc

    def _added(self) -> list[dict[str, str]]:
        with self.db.connect() as conn:
            return [
                dict(row)
                for row in conn.execute(
                    "SELECT entry, added_by, added_at, note FROM allowed ORDER BY seq"
                ).fetchall()
            ]

    def listed(self) -> list[dict[str, str]]:
        """Every entry with its origin: ``config`` (the file) or ``api`` (who added it, when)."""
        return [
            {"entry": e.text, "origin": "config", "source": str(self.config_file)}
            for e in self._configured()
        ] + [{**row, "origin": "api"} for row in self._added()]

    def entries(self) -> list[Entry]:
        """Every entry, parsed."""
        return [*self._configured(), *(Entry.parse(row["entry"]) for row in self._added())]

    def add(self, text: str, by: str, note: str = "") -> tuple[dict[str, str], bool]:
        """Allow-list ``text`` in the state dir; its row, and False when already listed."""
        entry = Entry.parse(text)
        found = next((r for r in self.listed() if r["entry"] == entry.text), None)
        if found is not None:
            return found, False
        row = {
            "entry": entry.text,
            "added_by": by,
            "added_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "note": note,
        }
        with self.db.tx() as conn:
            added = conn.execute(
                "INSERT INTO allowed (entry, added_by, added_at, note) VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                tuple(row.values()),
            ).rowcount
        if not added:  # another host added it a moment ago
            return next(r for r in self.listed() if r["entry"] == entry.text), False
        return {**row, "origin": "api"}, True

    def remove(self, text: str) -> str:
        """Take an entry added through the API off the list; its text as listed."""
        entry = Entry.parse(text)
        with self.db.tx() as conn:
            removed = conn.execute("DELETE FROM allowed WHERE entry = ?", (entry.text,)).rowcount
        if not removed:
            if entry in self._configured():
                raise ConfigError(
                    f"{entry.text} is listed in {self.config_file}; remove "
                    "it from that file (it is read at every check)"
                )
            raise NotFoundError(
                f"{entry.text} is not allow-listed through the API; list "
                "the entries with GET /v1/admin/egress"
            )
        return entry.text

    # the check

    def check(self, url: str) -> Destination:
        """``url`` pinned to a checked address when every address it reaches is allowed;
        EgressRefused (an InputError saying how to list it) otherwise."""
        parsed, host, port = _parse(url)
        entries = self.entries()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        refused = f"webhook destination {where} is not allow-listed; {HOW_TO_LIST}"
        literal = _literal(host)
        named = literal is None and any(e.admits_name(host, port) for e in entries)
        if literal is not None:
            addresses = [literal]
        elif host in METADATA_NAMES and not any(e.host == host for e in entries):
            raise EgressRefused(refused, f"{host} is a cloud metadata name")
        elif not named and all(e.network is None for e in entries):
            # Nothing could admit it: not even looked up, so a refusal tells nothing about
            # which internal names exist.
            raise EgressRefused(refused, f"no entry names {host}")
        else:
            try:
                addresses = [ipaddress.ip_address(a) for a in self.resolve(host, port)]
            except (OSError, ValueError) as exc:
                addresses, reason = [], f"{host} does not resolve ({exc})"
            else:
                reason = f"{host} resolves to nothing"
            if not addresses:
                raise EgressRefused(
                    f"webhook destination {host} does not resolve; check the host name"
                    if named
                    else refused,
                    reason,
                )
        for address in addresses:
            if why := _refusal(address, port, named, entries):
                raise EgressRefused(refused, f"{where} → {address}: {why}")
        return Destination(parsed, host, port, addresses[0])


def _refusal(address: Address, port: int, named: bool, entries: list[Entry]) -> str | None:
    """Why ``address`` may not be reached at ``port``; None when it may."""
    inner = _embedded(address)
    if any(e.admits_address(a, port) for e in entries for a in (address, inner)):
        return None
    if kind := internal(inner) or internal(address):
        return f"a {kind} address, which needs an address or CIDR entry"
    return None if named else "no entry names the host or covers the address"
