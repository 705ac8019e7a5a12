"""``opslake serve`` (the data service, its listeners and doors), ``ui`` (Dagster) and
``tls``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from opslake.cli._common import console, current_settings, stdout
from opslake.errors import ConfigError
from opslake.settings import host_port


def ui(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the Dagster UI.")] = 3000,
    cluster: Annotated[
        bool,
        typer.Option(
            "--cluster",
            help="Show the instance of `opslake cluster up` (its PostgreSQL, the "
            "lake on its S3): the runs of `materialize --cluster`.",
        ),
    ] = False,
) -> None:
    """Serve the Dagster UI (webserver + daemon) until Ctrl-C, then stop both cleanly."""
    from opslake.orchestration.ui import serve

    serve(current_settings(), host=host, port=port, console=console, cluster=cluster)


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            help="Port of the data service (HTTPS when "
            "OPSLAKE_TLS_CERT and OPSLAKE_TLS_KEY are set)."
        ),
    ] = 8700,
    syslog_port: Annotated[
        int | None,
        typer.Option(help="Also receive syslog (RFC 5424/3164, UDP and TCP) on this port."),
    ] = None,
    syslog_tls_port: Annotated[
        int | None,
        typer.Option(
            help="Also receive syslog over TLS (RFC 5425: TLS 1.2+, octet-counted) on this TCP "
            "port, with OPSLAKE_TLS_CERT and OPSLAKE_TLS_KEY."
        ),
    ] = None,
    mqtt: Annotated[
        str | None,
        typer.Option(
            "--mqtt",
            metavar="HOST:PORT",
            help="Also subscribe to this MQTT broker (QoS 1) and land metric/event messages.",
        ),
    ] = None,
    mqtt_topic: Annotated[
        list[str] | None,
        typer.Option(
            "--mqtt-topic", help="Topic filter to subscribe to (repeatable) [default: opslake/#]."
        ),
    ] = None,
    mqtt_username: Annotated[
        str | None,
        typer.Option(
            help="Sign in to the broker as this user; the password comes from the environment "
            "variable OPSLAKE_MQTT_PASSWORD, never the command line."
        ),
    ] = None,
    mqtt_tls: Annotated[
        bool,
        typer.Option(
            "--mqtt-tls",
            help="Speak TLS 1.2+ to the broker, verified against --mqtt-ca (or the system's CAs).",
        ),
    ] = False,
    mqtt_ca: Annotated[
        Path | None,
        typer.Option(
            help="CA certificate (PEM) the broker's certificate must chain to; implies --mqtt-tls."
        ),
    ] = None,
    mqtt_cert: Annotated[
        Path | None,
        typer.Option(
            help="Client certificate (PEM) to present to the broker, with --mqtt-key; implies "
            "--mqtt-tls."
        ),
    ] = None,
    mqtt_key: Annotated[
        Path | None, typer.Option(help="Private key (PEM, mode 600) of --mqtt-cert.")
    ] = None,
    dagster_door: Annotated[
        int | None,
        typer.Option(
            help="Open the Dagster UI's door on this port: sign-in required, data engineers and "
            "administrators only, proxied to OPSLAKE_DAGSTER_UPSTREAM [default: "
            "OPSLAKE_DAGSTER_DOOR_PORT, else shut]."
        ),
    ] = None,
    superset_door: Annotated[
        int | None,
        typer.Option(
            help="Open Superset's door on this port: sign-in required, roles mapped, proxied to "
            "OPSLAKE_SUPERSET_UPSTREAM [default: OPSLAKE_SUPERSET_DOOR_PORT, else shut]; "
            "Superset must run with OPSLAKE_SUPERSET_DOOR_PORT set."
        ),
    ] = None,
) -> None:
    """Serve the data service (push ingestion, /docs, /login) and its doors until Ctrl-C or
    SIGTERM."""
    import dataclasses

    from opslake.api import gateway
    from opslake.api.app import Listeners, create_app
    from opslake.ingest.listeners import mqtt as mqtt_listener
    from opslake.security import tls

    settings = current_settings()
    settings = dataclasses.replace(
        settings,
        dagster_door_port=dagster_door or settings.dagster_door_port,
        superset_door_port=superset_door or settings.superset_door_port,
    )
    door_list = gateway.doors(settings)
    gateway.check_ports(port, door_list)
    broker = host_port(mqtt, "--mqtt") if mqtt else None
    mqtt_tls = mqtt_tls or any((mqtt_ca, mqtt_cert, mqtt_key))
    if broker is None and (mqtt_topic or mqtt_username or mqtt_tls):
        raise ConfigError(
            "--mqtt-topic, --mqtt-username and --mqtt-tls/-ca/-cert/-key need "
            "--mqtt HOST:PORT (the broker to subscribe to)"
        )
    if broker is not None and (mqtt_username is None) != (settings.mqtt_password is None):
        raise ConfigError(
            "--mqtt-username needs its password in OPSLAKE_MQTT_PASSWORD, and "
            "OPSLAKE_MQTT_PASSWORD needs --mqtt-username; set both or neither"
        )
    topics = mqtt_topic or ["opslake/#"]
    auth = mqtt_listener.MqttAuth(
        mqtt_username,
        settings.mqtt_password,
        tls.client_context(mqtt_ca, mqtt_cert, mqtt_key, what="MQTT TLS") if mqtt_tls else None,
    )
    server_tls = (
        tls.server_context(
            settings.tls_cert, settings.tls_key, what="OPSLAKE_TLS_CERT/OPSLAKE_TLS_KEY"
        )
        if settings.tls_cert and settings.tls_key
        else None
    )
    if syslog_tls_port is not None and server_tls is None:
        raise ConfigError(
            "--syslog-tls-port needs OPSLAKE_TLS_CERT and OPSLAKE_TLS_KEY (the "
            "service's certificate and key); `opslake tls self-signed --out DIR` "
            "makes a pair"
        )
    if syslog_tls_port is not None and syslog_tls_port in (syslog_port, port):
        raise ConfigError(
            f"--syslog-tls-port {syslog_tls_port} is already the data service's "
            "or plain syslog's port; give it a port of its own (6514 is RFC 5425's)"
        )

    api = create_app(
        settings,
        Listeners(
            host=host,
            syslog_port=syslog_port,
            syslog_tls_port=syslog_tls_port,
            tls=server_tls if syslog_tls_port is not None else None,
            mqtt=broker,
            mqtt_topics=topics,
            mqtt_auth=auth,
        ),
    )
    scheme = "https" if server_tls else "http"
    door_apps = [
        gateway.DoorApp(
            door, api.state.sessions, api.state.security.audit, login_port=port, scheme=scheme
        )
        for door in door_list
    ]
    console.print(
        f"data service on {scheme}://{host}:{port} (API docs: /docs, sign-in: /login)"
        + (f"; syslog on {host}:{syslog_port} UDP/TCP" if syslog_port else "")
        + (f"; syslog over TLS on {host}:{syslog_tls_port}" if syslog_tls_port else "")
        + (
            f"; MQTT {mqtt}{' (TLS)' if mqtt_tls else ''} topics {', '.join(topics)}"
            if broker
            else ""
        )
        + "".join(
            f"; {d.door.name} door on {scheme}://{host}:{d.door.port} → {d.door.upstream}"
            for d in door_apps
        )
    )
    gateway.run_servers([(api, port), *((d, d.door.port) for d in door_apps)], host, server_tls)


tls_app = typer.Typer(
    help="TLS certificates for `opslake serve` (HTTPS, syslog over TLS, MQTT).",
    no_args_is_help=True,
)


@tls_app.command("self-signed")
def tls_self_signed(
    out: Annotated[
        Path, typer.Option(help="Directory to write opslake.crt and opslake.key (mode 600) into.")
    ],
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            help="IP address or DNS name the certificate is for (repeatable) "
            "[default: 127.0.0.1 and localhost].",
        ),
    ] = None,
    days: Annotated[int, typer.Option(min=1, help="Days the certificate is valid.")] = 825,
) -> None:
    """Make a self-signed certificate and key for `opslake serve` (loopback and tests)."""
    from opslake.security import tls

    cert, key = tls.self_signed(out, host or tls.DEFAULT_HOSTS, days=days)
    console.print(f"wrote {cert} and {key} (mode 600); serve with TLS:")
    stdout.print(f"export OPSLAKE_TLS_CERT={cert} OPSLAKE_TLS_KEY={key}")
