"""TLS end to end: HTTPS from `opslake serve`, syslog over TLS from a real rsyslog (gtls),
MQTT with a password and client certificate against a real Mosquitto, and the errors each
misconfiguration gets."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
import warnings
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from opslake.ingest.listeners.mqtt import MqttAuth, MqttSubscriber
from opslake.lake.landing import LandingZone
from opslake.security import tls
from opslake.settings import Settings
from tests.integration.services import free_port, install_services, running

SERVE = [sys.executable, "-m", "opslake", "serve"]


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key made by `opslake tls self-signed`."""
    made = subprocess.run(
        [sys.executable, "-m", "opslake", "tls", "self-signed", "--out", str(tmp_path / "pki")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    cert, key = tmp_path / "pki" / "opslake.crt", tmp_path / "pki" / "opslake.key"
    assert f"OPSLAKE_TLS_CERT={cert}" in made.stdout
    assert key.stat().st_mode & 0o777 == 0o600
    return cert, key


def _env(
    tmp_path: Path, cert: Path | None = None, key: Path | None = None, **more: str
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPSLAKE_TLS_", "OPSLAKE_MQTT_PASSWORD"))
    }
    env |= {"OPSLAKE_HOME": str(tmp_path / "lake"), **more}
    if cert and key:
        env |= {"OPSLAKE_TLS_CERT": str(cert), "OPSLAKE_TLS_KEY": str(key)}
    return env


def _read(settings: Settings, source: str) -> bytes:
    """Every byte landed for ``source`` today."""
    zone = LandingZone.from_settings(settings)
    today = datetime.now(UTC).date().isoformat()
    return b"".join(zone.read(b) for b in zone.batches(source, today))


def _landed(settings: Settings, source: str, marker: str, also: str = "") -> bytes:
    """The landed bytes of ``source`` once they hold ``marker``; fails after 30 s."""
    deadline = time.monotonic() + 30
    while marker.encode() not in (landed := _read(settings, source)):
        assert time.monotonic() < deadline, f"{marker} never landed in {source}; {also}"
        time.sleep(0.5)
    return landed


def test_https_verified_and_old_or_plain_clients_refused(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    cert, key = pair
    port = free_port()
    with running(
        [*SERVE, "--port", str(port)], port, tmp_path / "serve.log", _env(tmp_path, cert, key)
    ):
        verified = tls.client_context(cert)
        for host in ("127.0.0.1", "localhost"):
            with urllib.request.urlopen(
                f"https://{host}:{port}/healthz", context=verified, timeout=10
            ) as answer:
                assert json.load(answer)["status"] == "ok"
        with (
            socket.create_connection(("127.0.0.1", port), 10) as raw,
            verified.wrap_socket(raw, server_hostname="127.0.0.1") as s,
        ):
            assert s.version() in ("TLSv1.2", "TLSv1.3")

        # A TLS 1.1 client (allowed every cipher, so only the server can refuse it): the
        # server answers its hello with an alert or by closing the connection.
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
        with warnings.catch_warnings():  # deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("ALL:@SECLEVEL=0")
        with (
            pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION|UNEXPECTED_EOF"),
            socket.create_connection(("127.0.0.1", port), 10) as raw,
        ):
            old.wrap_socket(raw, server_hostname="127.0.0.1")

        # Plain HTTP gets no HTTP answer.
        with socket.create_connection(("127.0.0.1", port), 10) as raw:
            raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            raw.settimeout(10)
            with contextlib.suppress(ConnectionError):
                assert not raw.recv(4096).startswith(b"HTTP/")


def test_misconfigurations_say_the_fix(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    cert, key = pair
    open_key = tmp_path / "open.key"
    open_key.write_bytes(key.read_bytes())
    open_key.chmod(0o644)
    _, other_key = tls.self_signed(tmp_path / "other")
    port = str(free_port())
    cases = [
        ({"OPSLAKE_TLS_CERT": str(cert)}, [], "OPSLAKE_TLS_KEY is not"),
        ({"OPSLAKE_TLS_CERT": str(cert), "OPSLAKE_TLS_KEY": str(open_key)}, [], "chmod 600"),
        (
            {"OPSLAKE_TLS_CERT": str(tmp_path / "missing.crt"), "OPSLAKE_TLS_KEY": str(key)},
            [],
            "does not exist",
        ),
        (
            {"OPSLAKE_TLS_CERT": str(cert), "OPSLAKE_TLS_KEY": str(other_key)},
            [],
            "do not load as a PEM pair",
        ),
        ({}, ["--syslog-tls-port", "16514"], "needs OPSLAKE_TLS_CERT"),
        ({}, ["--mqtt", "127.0.0.1:1883", "--mqtt-username", "u"], "OPSLAKE_MQTT_PASSWORD"),
        ({}, ["--mqtt", "127.0.0.1:1883", "--mqtt-cert", str(cert)], "needs its key"),
        ({}, ["--mqtt-tls"], "need --mqtt HOST:PORT"),
    ]
    for extra_env, args, says in cases:
        env = _env(tmp_path) | extra_env
        done = subprocess.run(
            [*SERVE, "--port", port, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, (args, extra_env, done.stdout, done.stderr)
        assert says in " ".join((done.stdout + done.stderr).split()), (says, done.stdout)


def test_rsyslog_forwards_over_tls_into_serve(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    install_services()
    cert, key = pair
    api_port, tls_port, rsyslog_port = free_port(), free_port(), free_port()
    env = _env(tmp_path, cert, key)
    settings = Settings.from_env({"OPSLAKE_HOME": env["OPSLAKE_HOME"]})
    work = tmp_path / "rsyslog"
    work.mkdir()
    # rsyslog's gtls driver checks the service's certificate against it as the CA (x509),
    # and frames each message with its length (RFC 5425).
    (work / "rsyslog.conf").write_text(f"""
global(workDirectory="{work}" DefaultNetstreamDriverCAFile="{cert}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{rsyslog_port}")
action(type="omfwd" target="127.0.0.1" port="{tls_port}" protocol="tcp"
       StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/certvalid"
       TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format"
       queue.type="LinkedList" action.resumeRetryCount="-1" action.resumeInterval="1")
""")
    marker = f"opslake-tls-{uuid.uuid4().hex[:12]}"
    serve = [*SERVE, "--port", str(api_port), "--syslog-tls-port", str(tls_port)]
    with (
        running(serve, api_port, tmp_path / "serve.log", env),
        running(
            ["rsyslogd", "-n", "-f", str(work / "rsyslog.conf"), "-i", str(work / "rsyslogd.pid")],
            rsyslog_port,
            tmp_path / "rsyslog.log",
        ),
    ):
        sent = subprocess.run(
            [
                "logger",
                "--rfc5424",
                "-T",
                "-n",
                "127.0.0.1",
                "-P",
                str(rsyslog_port),
                "-t",
                "opslake-tls",
                "-p",
                "auth.warning",
                f"login failed {marker}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert sent.returncode == 0, sent.stderr
        landed = _landed(
            settings, "syslog", marker, also=(tmp_path / "rsyslog.log").read_text()[-2000:]
        )
        # A sender without TLS reaches nothing on the TLS port.
        with socket.create_connection(("127.0.0.1", tls_port), 10) as raw:
            raw.sendall(f"30 <12>1 - h app - - - plain-{marker}".encode())
        time.sleep(2)
    [line] = [ln for ln in landed.splitlines() if marker.encode() in ln]
    assert line.startswith(b"<36>1 ") and b"opslake-tls" in line, line  # auth.warning, whole
    assert f"plain-{marker}".encode() not in _read(settings, "syslog")
    log = (tmp_path / "serve.log").read_text()
    assert "not octet-counted" not in log


def test_mqtt_with_password_and_client_certificate(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    install_services()
    cert, key = pair
    api_port, mqtt_port = free_port(), free_port()
    user, password = "opslake", f"pw-{uuid.uuid4().hex}"
    passwords = tmp_path / "mosquitto.passwd"
    made = subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwords), user, password],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    # Run as root, Mosquitto would drop to its own user, who cannot read the test's key.
    stay = "user root\n" if os.geteuid() == 0 else ""
    (tmp_path / "mosquitto.conf").write_text(f"""{stay}per_listener_settings false
allow_anonymous false
password_file {passwords}
persistence false
log_dest stderr
listener {mqtt_port} 127.0.0.1
cafile {cert}
certfile {cert}
keyfile {key}
require_certificate true
tls_version tlsv1.2
""")
    env = _env(tmp_path, OPSLAKE_MQTT_PASSWORD=password)
    settings = Settings.from_env({"OPSLAKE_HOME": env["OPSLAKE_HOME"]})
    marker = uuid.uuid4().hex[:12]
    serve = [
        *SERVE,
        "--port",
        str(api_port),
        "--mqtt",
        f"127.0.0.1:{mqtt_port}",
        "--mqtt-username",
        user,
        "--mqtt-ca",
        str(cert),
        "--mqtt-cert",
        str(cert),
        "--mqtt-key",
        str(key),
    ]
    with running(
        ["mosquitto", "-c", str(tmp_path / "mosquitto.conf")], mqtt_port, tmp_path / "mosquitto.log"
    ):
        with running(serve, api_port, tmp_path / "serve.log", env):
            publisher = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2, client_id=f"opslake-test-{marker[:8]}"
            )
            publisher.username_pw_set(user, password)
            publisher.tls_set_context(tls.client_context(cert, cert, key))
            publisher.connect("127.0.0.1", mqtt_port)
            publisher.loop_start()
            try:
                deadline = time.monotonic() + 30
                while f"pdu-{marker}".encode() not in _read(settings, "mqtt"):
                    info = publisher.publish(
                        "opslake/dc1/pdu",
                        json.dumps(
                            {
                                "metric": "pdu_power_watts",
                                "entity_id": f"pdu-{marker}",
                                "value": 1520.5,
                            }
                        ),
                        qos=1,
                    )
                    info.wait_for_publish(timeout=10)
                    assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                    time.sleep(1)
            finally:
                publisher.disconnect()
                publisher.loop_stop()
        assert "refused" not in (tmp_path / "serve.log").read_text()

        # Wrong credentials, an untrusted broker and a missing client certificate: refused,
        # each reported with what to fix.
        landing = LandingZone.from_settings(settings)
        other_ca, _ = tls.self_signed(tmp_path / "other")
        cases = [
            (
                MqttAuth(user, "wrong", tls.client_context(cert, cert, key)),
                "check --mqtt-username and OPSLAKE_MQTT_PASSWORD",
            ),
            (MqttAuth(user, password, tls.client_context(other_ca, cert, key)), "not trusted"),
            (MqttAuth(user, password, tls.client_context(cert)), "--mqtt-cert"),
            (MqttAuth(user, password), "pass --mqtt-tls"),
        ]
        for auth, says in cases:
            subscriber = MqttSubscriber(landing, "127.0.0.1", mqtt_port, ["opslake/#"], auth=auth)
            subscriber.start()
            try:
                deadline = time.monotonic() + 15
                while not subscriber.last_error:
                    assert not subscriber.connected.is_set(), f"{auth} was let in"
                    assert time.monotonic() < deadline, f"no error reported for {auth}"
                    time.sleep(0.2)
                assert says in subscriber.last_error, subscriber.last_error
                assert not subscriber.connected.is_set()
            finally:
                subscriber.stop()
