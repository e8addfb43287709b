"""POST /v1/responses: OpenAI's Responses API as an LLMJob. Forwarded to servers that
serve it (OpenAI, vLLM, llama.cpp); for Ollama, the stateless part of it is served
through chat completions (``llmloom.responses``)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from llmloom import wire
from llmloom.api import serving
from llmloom.api.deps import ServicesDep, TenantDep
from llmloom.api.protocol import ResponseObject, ResponsesRequest

router = APIRouter()


@router.post(
    "/v1/responses",
    response_model=None,
    responses=serving.documented(ResponseObject, "The response"),
)
async def create_response(
    body: ResponsesRequest,
    request: Request,
    services: ServicesDep,
    tenant: TenantDep,
    wait: serving.WaitDep,
) -> Response:
    """Create a model response; past the wait limit, answer 202 with a task to poll."""
    return await serving.serve(
        services,
        tenant,
        wire.RESPONSES,
        body.model,
        await request.body(),
        stream=body.stream,
        wait_seconds=wait,
    )


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
