"""Generic JSON alert webhooks (Zabbix-style sources, S5.5a): ``POST /v1/ingest/alerts/{name}``.

The body (an alert object or a list of them; plain or ``Content-Encoding: gzip``) must map
through the configured mapping ``<name>``: it is validated by the bronze parser
(``opslake.ingest.parsers.alert_webhook``), and a body with any alert that does not map is
answered 422 ``{"error", "fix"}`` and kept in quarantine (``push_rejects``). A body that
maps is landed as sent (source ``webhook``, connector ``alert-webhook/<name>``) and
acknowledged only once durable, like the other push endpoints (same batch id rules and the
same credential: an API key with ``ingest:write``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from opslake.api.ingest import PUSH_AUTH_RESPONSES, Pusher, PushService, push_sender, pushed
from opslake.errors import ConfigError
from opslake.ingest.parsers import alert_webhook

router = APIRouter(prefix="/v1/ingest", tags=["ingest"])

_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}],
                    "description": "one alert object, or a list of them, in the sender's own "
                    "shape; config/alert_webhooks/<name>.yaml maps its fields",
                }
            }
        },
    }
}


@router.post(
    "/alerts/{name}",
    summary="Generic JSON alert webhook (e.g. Zabbix), mapped by config/alert_webhooks/<name>",
    openapi_extra=_BODY,
    responses={
        200: {"description": "landed durably: {batch_id, duplicate}"},
        404: {"description": "no mapping called <name>; lists the configured ones"},
        413: {
            "description": "body over OPSLAKE_MAX_PUSH_BYTES, or gzip expanding past "
            "OPSLAKE_MAX_DECODED_BYTES or 400 times its size"
        },
        415: {"description": "not application/json, or an encoding other than gzip"},
        422: {"description": "the body does not map: {error, fix}"},
        503: {"description": "the lake cannot be written, or the mapping is broken"},
        **PUSH_AUTH_RESPONSES,
    },
)
async def alert_webhook_push(name: str, request: Request, pusher: Pusher) -> Any:
    """Map the alerts in the body with mapping ``name``, land the body, answer with its batch."""
    service: PushService = request.app.state.push
    try:
        mapping = await run_in_threadpool(alert_webhook.load, name)
    except ConfigError as exc:
        return JSONResponse(
            {"error": str(exc), "fix": "the operator should fix the mapping file; retry later"},
            status_code=503,
        )
    if mapping is None:
        names = alert_webhook.configured()
        return JSONResponse(
            {
                "error": f"no alert webhook mapping called {name!r}",
                "fix": f"post to one of {', '.join(names) or '(none configured)'}, or add "
                f"{alert_webhook.mappings_dir()}/{name}.yaml",
                "configured": names,
            },
            status_code=404,
        )
    result = await service.accept(
        request,
        alert_webhook.SOURCE,
        fmt="json",
        connector=f"{alert_webhook.CONNECTOR_PREFIX}{name}",
        status=422,
        parse=alert_webhook.parse,
        what=f"the body does not map through {name!r}",
        fix=f"send the JSON body that {alert_webhook.mappings_dir()}/{name}.yaml describes, "
        "or fix the mapping",
        sender=push_sender(pusher),
    )
    return pushed(result)
