"""Notification channels: e-mail (SMTP), DingTalk and WeCom group robots, signed webhooks (S5.5b).

Each channel turns a :class:`Message` into one request in the receiving system's own format:

- **e-mail**: a multipart (plain + HTML) message over SMTP, STARTTLS and login when set;
- **DingTalk robot**: ``{"msgtype": "markdown", ...}`` POSTed to the robot's webhook URL with
  ``timestamp`` and ``sign`` query parameters, the sign being Base64(HMAC-SHA256(secret,
  "timestamp\\nsecret")) as DingTalk's "加签" security setting checks it; ``errcode`` 0 is success;
- **WeCom robot**: ``{"msgtype": "markdown", "markdown": {"content": ...}}`` POSTed to the
  robot's webhook URL (WeCom robots are secured by the key in the URL; they have no signature);
  ``errcode`` 0 is success;
- **webhook** (SMS or phone gateways, ITSM ticket creation): the JSON document POSTed with
  ``X-OpsLake-Timestamp`` and ``X-OpsLake-Signature: sha256=<hex HMAC-SHA256(secret,
  "timestamp.body")>`` (the ``sha256`` scheme of :mod:`opslake.delivery`) so the receiver can
  check origin and freshness.

Signing, the 2xx check, SMTP and the DeliveryError every channel raises are the delivery
engine's (:mod:`opslake.delivery`); only the DingTalk signature, DingTalk's own, lives here.

Endpoints and secrets come from environment variables named in the routing file, never from
the repository.
"""

from __future__ import annotations

import abc
import base64
import hashlib
import hmac
import json
import time
import urllib.parse
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import httpx

from opslake.delivery import require_2xx, send_mail, signed_headers
from opslake.errors import DeliveryError

TIMEOUT_S = 10.0
#: The webhook signing scheme of alert receivers (their gateways check HMAC-SHA256).
WEBHOOK_SCHEME = "sha256"


@dataclass(frozen=True)
class Message:
    """What one notification says, rendered per channel."""

    subject: str
    lines: tuple[str, ...]
    document: dict[str, object]
    mobiles: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()

    def markdown(self) -> str:
        """Markdown as DingTalk and WeCom render it."""
        return f"### {self.subject}\n\n" + "\n".join(f"- {line}" for line in self.lines)

    def plain(self) -> str:
        return self.subject + "\n\n" + "\n".join(self.lines)


@dataclass(frozen=True)
class Receipt:
    """What the receiver answered (a ticket id for ITSM, a message id for e-mail)."""

    detail: str = ""


def sign_dingtalk(secret: str, timestamp_ms: int) -> str:
    """DingTalk's robot signature for ``timestamp_ms`` (URL-encoded Base64 HMAC-SHA256)."""
    digest = hmac.new(
        secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256
    ).digest()
    return urllib.parse.quote_plus(base64.b64encode(digest).decode())


@dataclass
class Channel(abc.ABC):
    """One configured receiver endpoint."""

    name: str
    settings: dict[str, str] = field(default_factory=dict)

    @abc.abstractmethod
    def send(self, message: Message) -> Receipt:
        """Deliver ``message``; raise DeliveryError when the receiver did not take it."""


def _post(url: str, data: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    """POST JSON ``data``; DeliveryError unless the receiver answers 2xx."""
    try:
        response = httpx.post(
            url,
            content=data,
            timeout=TIMEOUT_S,
            headers={"Content-Type": "application/json; charset=utf-8", **(headers or {})},
        )
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{url}: {exc.__class__.__name__}: {exc}") from exc
    require_2xx(response.status_code, url, response.text)
    return response


def _post_json(url: str, body: dict[str, object]) -> httpx.Response:
    return _post(url, json.dumps(body, ensure_ascii=False).encode())


def _robot_ok(response: httpx.Response, what: str) -> Receipt:
    try:
        answer = response.json()
    except ValueError as exc:
        raise DeliveryError(f"{what} answered non-JSON: {response.text[:200]}") from exc
    if answer.get("errcode") != 0:
        raise DeliveryError(
            f"{what} refused: errcode {answer.get('errcode')} {answer.get('errmsg')}"
        )
    return Receipt(str(answer.get("errmsg", "ok")))


class DingTalk(Channel):
    """A DingTalk group robot with the signing ("加签") security setting."""

    def send(self, message: Message) -> Receipt:
        ts = int(time.time() * 1000)
        url = self.settings["url"]
        if self.settings.get("secret"):
            url += (
                "&" if "?" in url else "?"
            ) + f"timestamp={ts}&sign={sign_dingtalk(self.settings['secret'], ts)}"
        body = {
            "msgtype": "markdown",
            "markdown": {"title": message.subject, "text": message.markdown()},
            "at": {"atMobiles": list(message.mobiles), "isAtAll": False},
        }
        return _robot_ok(_post_json(url, body), f"DingTalk robot {self.name}")


class WeCom(Channel):
    """A WeCom (企业微信) group robot."""

    def send(self, message: Message) -> Receipt:
        text = message.markdown()
        if message.mobiles:
            text += "\n" + " ".join(f"<@{m}>" for m in message.mobiles)
        body = {"msgtype": "markdown", "markdown": {"content": text}}
        return _robot_ok(_post_json(self.settings["url"], body), f"WeCom robot {self.name}")


class Webhook(Channel):
    """A signed JSON webhook (SMS / phone gateways, ITSM ticket creation)."""

    def send(self, message: Message) -> Receipt:
        doc = {
            **message.document,
            "subject": message.subject,
            "text": message.plain(),
            "mobiles": list(message.mobiles),
        }
        body = json.dumps(doc, ensure_ascii=False, sort_keys=True).encode()
        headers = signed_headers(
            self.settings.get("secret"), int(time.time()), body, WEBHOOK_SCHEME
        )
        response = _post(self.settings["url"], body, headers)
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        ticket = answer.get("ticket_id") or answer.get("id") if isinstance(answer, dict) else None
        return Receipt(str(ticket) if ticket else f"HTTP {response.status_code}")


class Email(Channel):
    """E-mail through an SMTP server."""

    def send(self, message: Message) -> Receipt:
        to = [a for a in self.settings.get("to", "").split(",") if a] + list(message.emails)
        if not to:
            raise DeliveryError(f"e-mail receiver {self.name} has no recipients")
        mail = EmailMessage()
        mail["Subject"] = message.subject
        mail["From"] = self.settings.get("from", "opslake@localhost")
        mail["To"] = ", ".join(to)
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = msgid = make_msgid(domain="opslake")
        mail.set_content(message.plain())
        html = "".join(f"<li>{_escape(line)}</li>" for line in message.lines)
        mail.add_alternative(f"<h3>{_escape(message.subject)}</h3><ul>{html}</ul>", subtype="html")
        send_mail(self.settings, mail)
        return Receipt(msgid)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


CHANNELS: dict[str, type[Channel]] = {
    "email": Email,
    "dingtalk": DingTalk,
    "wecom": WeCom,
    "webhook": Webhook,
}
