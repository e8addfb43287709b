"""POST /v1/completions: a text completion (the legacy completions API) as an LLMJob,
forwarded to the flavor's server as it is."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from llmloom import wire
from llmloom.api import serving
from llmloom.api.deps import ServicesDep, TenantDep
from llmloom.api.protocol import CompletionRequest, TextCompletion

router = APIRouter()


@router.post(
    "/v1/completions",
    response_model=None,
    responses=serving.documented(TextCompletion, "The completion"),
)
async def create_completion(
    body: CompletionRequest,
    request: Request,
    services: ServicesDep,
    tenant: TenantDep,
    wait: serving.WaitDep,
) -> Response:
    """Complete a prompt; past the wait limit, answer 202 with a task to poll."""
    return await serving.serve(
        services,
        tenant,
        wire.COMPLETIONS,
        body.model,
        await request.body(),
        stream=body.stream,
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        wait_seconds=wait,
    )


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
