"""Generic JSON alert webhooks (Zabbix-style sources, S5.5a): ``POST /v1/ingest/alerts/{name}``.

The body (an alert object or a list of them) must map through the configured mapping
``<name>`` (``opslake.ingest.parsers.alert_webhook``); a body that does not is answered
422 ``{"error", "fix"}`` and kept in quarantine (``push_rejects``). A body that maps is
landed exactly as sent (source ``webhook``, connector ``alert-webhook/<name>``) and
acknowledged only once durable, like the other push endpoints (same batch id rules and the
same credential: an API key with ``ingest:write``).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from opslake.api.ingest import PUSH_AUTH_RESPONSES, Pusher, PushService, pushed
from opslake.errors import ConfigError
from opslake.ingest.parsers import alert_webhook
from opslake.ingest.parsers._text import RecordError

router = APIRouter(prefix="/v1/ingest", tags=["ingest"])

_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}],
               "description": "one alert object, or a list of them, in the sender's own "
                              "shape; config/alert_webhooks/<name>.yaml maps its fields"}}}}}


def check(mapping: alert_webhook.WebhookMapping, body: bytes) -> int:
    """Number of alerts in ``body``; raises ``RecordError`` unless every one maps."""
    try:
        document = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RecordError(f"body is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise RecordError(f"body is not JSON: {exc}") from None
    alerts = alert_webhook.alerts_of(document)
    for index, alert in enumerate(alerts, start=1):
        try:
            mapping.apply(alert)
        except RecordError as exc:
            raise RecordError(f"alert {index}: {exc}") from None
    return len(alerts)


@router.post(
    "/alerts/{name}",
    summary="Generic JSON alert webhook (e.g. Zabbix), mapped by config/alert_webhooks/<name>",
    openapi_extra=_BODY,
    responses={200: {"description": "landed durably: {batch_id, duplicate}"},
               404: {"description": "no mapping called <name>; lists the configured ones"},
               413: {"description": "body over OPSLAKE_MAX_PUSH_BYTES"},
               422: {"description": "the body does not map: {error, fix}"},
               503: {"description": "the lake cannot be written, or the mapping is broken"},
               **PUSH_AUTH_RESPONSES},
)
async def alert_webhook_push(name: str, request: Request, _p: Pusher) -> Any:
    """Map the alerts in the body with mapping ``name``, land the body, answer with its batch."""
    service: PushService = request.app.state.push
    try:
        mapping = await run_in_threadpool(alert_webhook.load, name)
    except ConfigError as exc:
        return JSONResponse({"error": str(exc), "fix": "the operator should fix the mapping "
                             "file; retry later"}, status_code=503)
    if mapping is None:
        names = alert_webhook.configured()
        return JSONResponse({
            "error": f"no alert webhook mapping called {name!r}",
            "fix": f"post to one of {', '.join(names) or '(none configured)'}, or add "
                   f"{alert_webhook.mappings_dir()}/{name}.yaml",
            "configured": names}, status_code=404)
    result = await service.accept(
        request, alert_webhook.SOURCE, fmt="json",
        connector=f"{alert_webhook.CONNECTOR_PREFIX}{name}", status=422,
        validate=lambda body: check(mapping, body), errors=(RecordError,),
        what=f"the body does not map through {name!r}",
        fix=f"send the JSON body that {alert_webhook.mappings_dir()}/{name}.yaml describes, "
            "or fix the mapping")
    return pushed(result)
