"""``GET /v1/models`` and ``GET /v1/models/{id}``; ids may contain ``/``.

The listing names agent models once, as ``agent/<m>`` (both spellings would
double it, and the clients that cannot send ``/`` do not pick from it);
``GET /v1/models/agent:<m>`` finds the same model and echoes the id asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import orjson
from litestar import Request, get
from litestar.response import Response

from toolrelay.app.errors import error_response
from toolrelay.app.middleware import request_info
from toolrelay.app.model_ids import AGENT_PREFIX, canonical_model_id
from toolrelay.app.routes.openapi_docs import ModelListOperation, ModelOperation

if TYPE_CHECKING:
    from toolrelay.app.services import Services


def _model_object(model_id: str, owner: str, created: int) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owner}


def build_model_handlers(services: Services) -> list[Any]:
    def listing(info: Any) -> list[dict[str, Any]]:
        created = services.started_at
        data = []
        for model_id, owner in services.router.served_models():
            data.append(_model_object(model_id, owner, created))
        if services.agent is not None:
            for model_id, _owner in services.router.served_models():
                data.append(_model_object(AGENT_PREFIX + model_id, "toolrelay-agent", created))
        return [item for item in data if services.gate.allows_model(info, item["id"])]

    @get(["/v1/models", "/models"], summary="List models", tags=["models"], operation_class=ModelListOperation)
    async def list_models(request: Request[Any, Any, Any]) -> Response[bytes]:
        info = request_info(request.scope)
        await services.gate.authenticate(request, info)
        return Response(content=orjson.dumps({"object": "list", "data": listing(info)}), media_type="application/json")

    @get(["/v1/models/{model_id:path}", "/models/{model_id:path}"], summary="Retrieve a model", tags=["models"], operation_class=ModelOperation)
    async def retrieve_model(request: Request[Any, Any, Any]) -> Response[bytes]:
        model_id = str(request.path_params.get("model_id", ""))
        info = request_info(request.scope)
        await services.gate.authenticate(request, info)
        # Clients send "agent/x" raw or as "agent%2Fx"; some proxies double-encode.
        wanted = unquote(model_id.lstrip("/"))
        listed = canonical_model_id(wanted)
        for item in listing(info):
            if item["id"] == listed:
                return Response(content=orjson.dumps({**item, "id": wanted}), media_type="application/json")
        return error_response(services.model_not_found(info, wanted), info)

    return [list_models, retrieve_model]
