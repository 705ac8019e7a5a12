"""Self-signed pairs and TLS contexts (opslake.security.tls) without a server."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from opslake.errors import ConfigError
from opslake.security import tls


def test_self_signed_pair_names_loopback_and_is_private(tmp_path: Path) -> None:
    cert_path, key_path = tls.self_signed(tmp_path)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert key_path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ConfigError, match="already exist"):
        tls.self_signed(tmp_path)


def test_contexts_are_tls12_or_later_and_checked(tmp_path: Path) -> None:
    cert, key = tls.self_signed(tmp_path)
    assert tls.server_context(cert, key).minimum_version == ssl.TLSVersion.TLSv1_2
    assert tls.client_context(cert, cert, key).minimum_version == ssl.TLSVersion.TLSv1_2
    with pytest.raises(ConfigError, match="needs its key"):
        tls.client_context(cert, cert)
    with pytest.raises(ConfigError, match="holds no PEM certificate"):
        tls.client_context(key)
