"""POST /v1/chat/completions: a chat request as an LLMJob (the request stored by
reference), answered when it finishes, or streamed as server-sent events while the
model writes."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from llmloom import wire
from llmloom.api import serving
from llmloom.api.deps import ServicesDep, TenantDep
from llmloom.api.protocol import ChatCompletion, ChatCompletionRequest

router = APIRouter()


@router.post(
    "/v1/chat/completions",
    response_model=None,
    responses=serving.documented(ChatCompletion, "The completion"),
)
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    services: ServicesDep,
    tenant: TenantDep,
    wait: serving.WaitDep,
) -> Response:
    """Create a chat completion; past the wait limit, answer 202 with a task to poll."""
    return await serving.serve(
        services,
        tenant,
        wire.CHAT,
        body.model,
        await request.body(),
        stream=body.stream,
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        wait_seconds=wait,
    )


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
