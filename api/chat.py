"""POST /v1/chat/completions: a chat request as an LLMJob (the request stored by
reference), answered when it finishes, or streamed as server-sent events while the
model writes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Header, Query, Request
from fastapi.responses import Response

from llmloom import wire
from llmloom.api import serving
from llmloom.api.deps import ServicesDep, TenantDep
from llmloom.api.errors import responses
from llmloom.api.protocol import SSE_EVENT, ChatCompletion, ChatCompletionRequest, TaskQueued

router = APIRouter()


@router.post(
    "/v1/chat/completions",
    response_model=None,
    responses={
        200: {
            "description": "The completion; with stream: true, server-sent events of chunks",
            "content": {
                "application/json": {"schema": ChatCompletion.model_json_schema()},
                "text/event-stream": {"schema": SSE_EVENT},
            },
        },
        202: {"model": TaskQueued, "description": "Still running: poll the task"},
        **responses(400, 401, 404, 413, 429, 502, 503, 504),
    },
)
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    services: ServicesDep,
    tenant: TenantDep,
    wait_header: Annotated[str | None, Header(alias=serving.WAIT_HEADER)] = None,
    wait: Annotated[float | None, Query(ge=0)] = None,
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
        wait_seconds=serving.wait_limit(services, wait_header, wait),
    )


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
