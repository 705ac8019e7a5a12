"""Local stand-ins for the systems OpsLake notifies, each checking what it receives.

- :class:`RobotServer`: an HTTP server answering like DingTalk's and WeCom's robot APIs
  (``{"errcode": 0, "errmsg": "ok"}``); for DingTalk it checks ``timestamp`` and ``sign`` as
  DingTalk documents (Base64 HMAC-SHA256 of "timestamp\\nsecret", at most an hour old) and
  answers errcode 310000 when they are wrong.
- :class:`WebhookServer`: accepts JSON posts whose ``X-OpsLake-Signature`` verifies.
- :func:`smtp_server`: a real SMTP server (aiosmtpd) keeping the messages it receives.
"""

from __future__ import annotations

import base64
import contextlib
import email
import email.policy
import hashlib
import hmac
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

from aiosmtpd.controller import Controller

from opslake.delivery import verify
from tests.integration.services import free_port


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int | None = None) -> None:
        self.port = port or free_port()
        self.received: list[dict] = []
        self.refused = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, code: int, doc: dict) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))


class RobotServer(_Server):
    """DingTalk (``/robot/send``) and WeCom (``/cgi-bin/webhook/send``) robot endpoints."""

    def __init__(self, dingtalk_secret: str) -> None:
        self.secret = dingtalk_secret

        class Handler(_Handler):
            def do_POST(self) -> None:
                owner: RobotServer = self.server.owner  # type: ignore[attr-defined]
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                body = json.loads(self._body())
                if url.path == "/robot/send" and not owner.dingtalk_ok(query):
                    owner.refused += 1
                    self._reply(200, {"errcode": 310000, "errmsg": "sign not match"})
                    return
                owner.received.append(
                    {"path": url.path, "query": query, "body": body, "at": time.time()}
                )
                self._reply(200, {"errcode": 0, "errmsg": "ok"})

        super().__init__(Handler)

    def dingtalk_ok(self, query: dict[str, str]) -> bool:
        ts = query.get("timestamp", "")
        if not ts.isdigit() or abs(time.time() * 1000 - int(ts)) > 3_600_000:
            return False
        want = base64.b64encode(
            hmac.new(self.secret.encode(), f"{ts}\n{self.secret}".encode(), hashlib.sha256).digest()
        ).decode()
        return hmac.compare_digest(query.get("sign", ""), want)

    def bodies(self, path: str) -> list[dict]:
        return [r["body"] for r in self.received if r["path"] == path]


class WebhookServer(_Server):
    """A signed-webhook receiver (SMS gateway, ITSM): checks the signature, answers a ticket id."""

    def __init__(self, secret: str, port: int | None = None) -> None:
        self.secret = secret

        class Handler(_Handler):
            def do_POST(self) -> None:
                owner: WebhookServer = self.server.owner  # type: ignore[attr-defined]
                body = self._body()
                if not verify(
                    owner.secret,
                    self.headers.get("X-OpsLake-Timestamp", ""),
                    body,
                    self.headers.get("X-OpsLake-Signature", ""),
                ):
                    owner.refused += 1
                    self._reply(401, {"error": "bad signature"})
                    return
                doc = json.loads(body)
                owner.received.append(doc)
                self._reply(201, {"ticket_id": f"INC{len(owner.received):06d}"})

        super().__init__(Handler, port)


class _Keep:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)
        )
        return "250 OK"


@contextlib.contextmanager
def smtp_server() -> Iterator[tuple[int, list[Message]]]:
    """A real SMTP server on loopback; yields its port and the messages received."""
    keep = _Keep()
    controller = Controller(keep, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port, keep.messages
    finally:
        controller.stop()
