"""POST /v1/responses: OpenAI's Responses API as an LLMJob. Forwarded to servers that
serve it (OpenAI, vLLM, llama.cpp); for Ollama, the stateless part of it is served
through chat completions (``llmloom.responses``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Header, Query, Request
from fastapi.responses import Response

from llmloom import wire
from llmloom.api import serving
from llmloom.api.deps import ServicesDep, TenantDep
from llmloom.api.errors import responses
from llmloom.api.protocol import SSE_EVENT, ResponseObject, ResponsesRequest, TaskQueued

router = APIRouter()


@router.post(
    "/v1/responses",
    response_model=None,
    responses={
        200: {
            "description": "The response; with stream: true, server-sent events",
            "content": {
                "application/json": {"schema": ResponseObject.model_json_schema()},
                "text/event-stream": {"schema": SSE_EVENT},
            },
        },
        202: {"model": TaskQueued, "description": "Still running: poll the task"},
        **responses(400, 401, 404, 413, 429, 502, 503, 504),
    },
)
async def create_response(
    body: ResponsesRequest,
    request: Request,
    services: ServicesDep,
    tenant: TenantDep,
    wait_header: Annotated[str | None, Header(alias=serving.WAIT_HEADER)] = None,
    wait: Annotated[float | None, Query(ge=0)] = None,
) -> Response:
    """Create a model response; past the wait limit, answer 202 with a task to poll."""
    return await serving.serve(
        services,
        tenant,
        wire.RESPONSES,
        body.model,
        await request.body(),
        stream=body.stream,
        wait_seconds=serving.wait_limit(services, wait_header, wait),
    )


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
