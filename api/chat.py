"""POST /v1/chat/completions: a chat request as an LLMJob, answered when it finishes
(or streamed as server-sent events while the model writes)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, FastAPI, Header, Query
from fastapi.responses import Response, StreamingResponse

from llmloom import streams
from llmloom.api import admission, serving
from llmloom.api.deps import ServicesDep, TenantDep
from llmloom.api.errors import APIError, envelope, invalid_as_400, responses
from llmloom.api.protocol import SSE_EVENT, ChatCompletion, ChatCompletionRequest, TaskQueued
from llmloom.api.services import Services
from llmloom.resources import LLMJob, LLMJobSpec

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
    request: ChatCompletionRequest,
    services: ServicesDep,
    tenant: TenantDep,
    wait_header: Annotated[str | None, Header(alias=serving.WAIT_HEADER)] = None,
    wait: Annotated[float | None, Query(ge=0)] = None,
) -> Response:
    """Create a chat completion; past the wait limit, answer 202 with a task to poll."""
    wait_seconds = serving.wait_limit(services, wait_header, wait)
    flavor = await serving.resolve_flavor(services, tenant, request.model)
    if "chat" not in flavor.spec.capabilities:
        raise APIError(
            400,
            f"The model '{request.model}' does not support chat.",
            param="model",
            code="model_not_supported",
        )
    await serving.ensure_available(services, tenant, flavor)
    with invalid_as_400():
        params = request.parameters()
        spec = LLMJobSpec(
            flavor=flavor.metadata.name,
            task="chat",
            messages=[m.to_resource() for m in request.messages],
            parameters=params,
            stream=request.stream,
        )
    admitted = await admission.admit(
        services,
        tenant,
        flavor,
        lambda: admission.chat_estimate(
            flavor, [m.content for m in request.messages], params.max_tokens if params else None
        ),
    )
    job = await serving.submit(services, tenant, flavor, spec, prefix="chat-", admission=admitted)
    if request.stream:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        events = relay(services, job, include_usage)
        return StreamingResponse(
            events,
            media_type="text/event-stream",
            headers={**admitted.headers, serving.TASK_HEADER: job.metadata.name},
        )
    return await serving.respond(services, job, wait_seconds, headers=admitted.headers)


def _sse(data: object) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


async def relay(services: Services, job: LLMJob, include_usage: bool) -> AsyncIterator[bytes]:
    """The job's deltas as server-sent events, as OpenAI streams them, ending with [DONE]."""
    key = streams.stream_key(job.metadata.uid, job.metadata.generation)
    idle = services.settings.max_wait_seconds
    async for kind, item in streams.read(services.redis, key, idle):
        if kind == "chunk" and item is not None:
            if not include_usage:
                if not item.get("choices"):
                    continue  # the usage chunk the client did not ask for
                item = {k: v for k, v in item.items() if k != "usage"}
            yield _sse(item)
        elif kind == "end" and item:
            message = item.get("message", "the job failed")
            code = item.get("reason")
            yield _sse(envelope(message, item.get("type", "upstream_error"), code=code))
        elif kind == "idle":
            yield _sse(envelope(f"no answer within {idle:g}s", "timeout", code="timeout"))
    yield _sse("[DONE]")


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
