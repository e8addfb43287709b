"""POST /v1/embeddings: texts (or token ids) embedded by an LLMJob, the request stored by
reference and forwarded as it is; the vectors come back as floats or base64, as asked."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from llmloom import wire
from llmloom.api import serving
from llmloom.api.deps import ServicesDep, TenantDep
from llmloom.api.protocol import EmbeddingList, EmbeddingRequest
from llmloom.embeddings import encoded

router = APIRouter()


@router.post(
    "/v1/embeddings",
    response_model=None,
    responses=serving.documented(EmbeddingList, "One vector per input, in order", streamed=False),
)
async def create_embeddings(
    body: EmbeddingRequest,
    request: Request,
    services: ServicesDep,
    tenant: TenantDep,
    wait: serving.WaitDep,
) -> Response:
    """Embed the input; past the wait limit, answer 202 with a task to poll."""

    def shape(response: dict[str, Any]) -> dict[str, Any]:
        return encoded(response, body.encoding_format)

    return await serving.serve(
        services,
        tenant,
        wire.EMBEDDINGS,
        body.model,
        await request.body(),
        wait_seconds=wait,
        shape=shape,
    )


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
