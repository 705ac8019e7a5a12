"""TLS for the data service: contexts (TLS 1.2 and later only) and self-signed pairs."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import stat
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from opslake.errors import ConfigError

#: Older versions have known weaknesses (BEAST, SHA-1 handshakes); RFC 8996 deprecates them.
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
#: Names a generated pair is valid for: the loopback service of the demo and the tests.
DEFAULT_HOSTS = ("127.0.0.1", "localhost")
CERT_NAME, KEY_NAME = "opslake.crt", "opslake.key"
MAKE_PAIR = "`opslake tls self-signed --out DIR` makes a self-signed pair"


def _readable(path: Path, what: str) -> Path:
    """``path`` when it is a readable file; a ConfigError saying what to fix otherwise."""
    if not path.is_file():
        raise ConfigError(
            f"{what} {path} does not exist or is not a file; point it at a PEM file ({MAKE_PAIR})"
        )
    if not os.access(path, os.R_OK):
        raise ConfigError(
            f"{what} {path} is not readable by this user; make it so "
            "(chown it to the service's user)"
        )
    return path


def _private(key: Path, what: str) -> Path:
    """``key`` when other users cannot read it; a private key they can read is refused."""
    _readable(key, what)
    if key.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{what} {key} can be read by other users; run `chmod 600 {key}`")
    return key


def _load_chain(context: ssl.SSLContext, cert: Path, key: Path, what: str) -> None:
    """Load ``cert`` and ``key`` into ``context``; a clear error when they are no pair."""
    try:
        context.load_cert_chain(
            _readable(cert, f"{what} certificate"), _private(key, f"{what} key")
        )
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{what} certificate {cert} and key {key} do not load as a PEM pair "
            f"({exc.reason or exc}); give the key that belongs to the "
            f"certificate ({MAKE_PAIR})"
        ) from exc


def server_context(cert: Path, key: Path, *, what: str = "TLS") -> ssl.SSLContext:
    """A server context for ``cert`` and ``key`` that speaks TLS 1.2 and later only."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    _load_chain(context, cert, key, what)
    return context


def client_context(
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    *,
    what: str = "TLS client",
) -> ssl.SSLContext:
    """A verifying client context (TLS 1.2+): ``ca`` or the system's CAs, optionally a cert."""
    if (cert is None) != (key is None):
        raise ConfigError(
            f"{what}: a client certificate needs its key and a key its "
            "certificate; give both or neither"
        )
    ca_file = str(_readable(ca, f"{what} CA file")) if ca else None
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{what} CA file {ca} holds no PEM certificate ({exc.reason or exc});"
            " give the CA (or self-signed) certificate the server presents"
        ) from exc
    context.minimum_version = MINIMUM_VERSION
    if cert is not None and key is not None:
        _load_chain(context, cert, key, what)
    return context


def self_signed(
    out: Path, hosts: Sequence[str] = DEFAULT_HOSTS, *, days: int = 825
) -> tuple[Path, Path]:
    """Write a self-signed certificate and its key (mode 600) to ``out``; their paths.

    The certificate names ``hosts`` (IP addresses and DNS names) as subject alternative
    names and may serve and authenticate clients, so one pair covers HTTPS, syslog over TLS
    and an MQTT client certificate; it is its own CA, so clients trust it as their CA file.
    """
    cert_path, key_path = out / CERT_NAME, out / KEY_NAME
    if existing := [p for p in (cert_path, key_path) if p.exists()]:
        raise ConfigError(
            f"{', '.join(map(str, existing))} already exist(s); remove them or "
            "choose another --out, so a key in use is never overwritten"
        )
    if not hosts:
        raise ConfigError("name at least one host (an IP address or DNS name) to certify")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, hosts[0]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "OpsLake"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate clocks a little behind
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([_general_name(h) for h in hosts]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Created with mode 600 rather than chmod-ed after, so the key is never readable by others.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _general_name(host: str) -> x509.GeneralName:
    """An IP address SAN for an address, a DNS SAN for anything else."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)
