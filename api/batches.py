"""/v1/batches: the OpenAI Batch API over LLMBatch resources.

Creating a batch reads its input file and prepares every request the way the
single-request routes would: the same request models, the same model
resolution, capability and Ollama checks, so a line fails with exactly the
status and error that the same request to its endpoint would get. The
prepared lines (body as the client wrote it, and flavor) go to Redis
(``llmloom.batches``), then the LLMBatch is created; the operator queues its
lines and workers run them. The OpenAI Batch object is a view of the LLMBatch
(``batch_object``); cancelling sets ``spec.cancel``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmloom import API_VERSION, batches, files, ratelimit, timestamps, wire
from llmloom.api import admission, batchfile, serving
from llmloom.api.batchfile import InputLine
from llmloom.api.deps import ServicesDep, TenantDep
from llmloom.api.errors import APIError
from llmloom.api.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ResponsesRequest,
)
from llmloom.api.services import Services
from llmloom.batches import LineError, Prepared, PreparedHeader
from llmloom.kube import LLMBATCHES, KubeError, Obj, is_name
from llmloom.resources import Endpoint, Flavor, LLMBatch, RequestCounts

router = APIRouter()
CANCELLABLE = ("validating", "in_progress")


class BatchRequest(BaseModel):
    """The body of POST /v1/batches."""

    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(min_length=1, max_length=256)
    endpoint: str
    completion_window: str
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(
        default=None, max_length=16
    )


def _epoch(value: datetime | str | None) -> int | None:
    seconds = timestamps.epoch(value)
    return None if seconds is None else int(seconds)


def batch_object(obj: Obj) -> dict[str, Any]:
    """An LLMBatch as OpenAI's Batch object.

    A batch the operator has not started yet is ``validating``; one whose cancellation
    the operator has not taken up yet is already ``cancelling``."""
    batch = LLMBatch.model_validate(obj)
    spec, st = batch.spec, batch.status
    state = st.state or "validating"
    if spec.cancel and state in CANCELLABLE:
        state = "cancelling"
    created = _epoch(batch.metadata.creation_timestamp) or 0
    window = batches.COMPLETION_WINDOWS[spec.completion_window]
    counts = st.request_counts or RequestCounts()
    usage = None
    if st.usage is not None:
        usage = {
            "input_tokens": st.usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": st.usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": st.usage.total_tokens,
        }
    errors = None
    if st.errors:
        data = [
            {"code": e.code, "line": e.line, "message": e.message, "param": e.param}
            for e in st.errors
        ]
        errors = {"object": "list", "data": data}
    return {
        "id": batches.batch_id(batch.metadata.name),
        "object": "batch",
        "endpoint": spec.endpoint,
        "errors": errors,
        "input_file_id": spec.input_file_id,
        "completion_window": spec.completion_window,
        "status": state,
        "output_file_id": st.output_file_id,
        "error_file_id": st.error_file_id,
        "created_at": created,
        "in_progress_at": _epoch(st.in_progress_at),
        "expires_at": _epoch(st.expires_at) or created + window,
        "finalizing_at": _epoch(st.finalizing_at),
        "completed_at": _epoch(st.completed_at),
        "failed_at": _epoch(st.failed_at),
        "expired_at": _epoch(st.expired_at),
        "cancelling_at": _epoch(st.cancelling_at),
        "cancelled_at": _epoch(st.cancelled_at),
        "request_counts": counts.model_dump(include={"total", "completed", "failed"}),
        "metadata": spec.metadata or None,
        "usage": usage,
    }


# --------------------------------------------------------------------------- preparing


def _invalid(exc: ValidationError) -> LineError:
    """A body's validation error as the API's 400 for the same request."""
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    message = f"{param}: {first['msg']}" if param else str(first["msg"])
    return LineError(status_code=400, message=message, param=param, code="invalid_request")


def _api_error(exc: APIError) -> LineError:
    return LineError(
        status_code=exc.status, message=exc.message, type=exc.type, param=exc.param, code=exc.code
    )


def _unsupported(model: str, what: str) -> LineError:
    return LineError(
        status_code=400,
        message=f"The model '{model}' does not {what}.",
        param="model",
        code="model_not_supported",
    )


Resolved = Mapping[str, Flavor | APIError]


REQUEST_MODELS: dict[str, type[BaseModel]] = {
    wire.CHAT: ChatCompletionRequest,
    wire.COMPLETIONS: CompletionRequest,
    wire.RESPONSES: ResponsesRequest,
    wire.EMBEDDINGS: EmbeddingRequest,
}
"""What a line's body is checked as: the request model of its endpoint."""


def prepare_line(line: InputLine, endpoint: Endpoint, flavors: Resolved) -> Prepared:
    """One line as the request it stands for would be taken: its body and flavor, or the
    error that request would get."""

    def refused(error: LineError) -> Prepared:
        return Prepared(line=line.line, custom_id=line.custom_id, error=error)

    try:
        checked = REQUEST_MODELS[endpoint].model_validate(line.body)
        if getattr(checked, "stream", False):
            raise APIError(400, "A batch's requests cannot stream.", param="stream")
        model = str(getattr(checked, "model", ""))
        flavor = flavors[model]
        if isinstance(flavor, APIError):
            raise flavor
        needed = "embeddings" if endpoint == wire.EMBEDDINGS else "chat"
        if needed not in flavor.spec.capabilities:
            does = "do embeddings" if needed == "embeddings" else "support chat"
            return refused(_unsupported(model, does))
        serving.check_wire(flavor, endpoint, lambda: line.body)
    except ValidationError as exc:
        return refused(_invalid(exc))
    except APIError as exc:
        return refused(_api_error(exc))
    encoding = line.body.get("encoding_format")
    return Prepared(
        line=line.line,
        custom_id=line.custom_id,
        flavor=flavor.metadata.name,
        body=line.body,
        encoding_format="base64" if encoding == "base64" else "float",
    )


async def prepare(
    services: Services, tenant: str, endpoint: Endpoint, lines: list[InputLine]
) -> list[Prepared]:
    """Every line prepared; each distinct model is resolved to a flavor once."""
    models = {m for line in lines if isinstance(m := line.body.get("model"), str) and m}
    flavors: dict[str, Flavor | APIError] = {}
    for model in models:
        try:
            flavors[model] = serving.resolve_flavor(services, tenant, model)
        except APIError as exc:
            flavors[model] = exc
    # Validating tens of thousands of bodies is CPU work: off the event loop.
    return await asyncio.to_thread(
        lambda: [prepare_line(line, endpoint, flavors) for line in lines]
    )


# --------------------------------------------------------------------------- routes


def _not_found(batch_id: str) -> APIError:
    return APIError(
        404, f"No batch found with id '{batch_id}'.", param="batch_id", code="batch_not_found"
    )


async def _get(services: Services, tenant: str, batch_id: str) -> Obj:
    name = batches.batch_name(batch_id)
    # An id that cannot be a name ("..", upper case) would address another path.
    obj = (
        await services.kube.find(LLMBATCHES, tenant, name)
        if is_name(name, batches.MAX_NAME_LENGTH)
        else None
    )
    if obj is None:
        raise _not_found(batch_id)
    return obj


def check_request(request: BatchRequest) -> Endpoint:
    """400s for what OpenAI refuses before a batch exists; the batch's endpoint."""
    endpoint = next((e for e in batches.ENDPOINTS if e == request.endpoint), None)
    if endpoint is None:
        raise APIError(
            400,
            f"LLMLoom runs batches of {', '.join(batches.ENDPOINTS)}, not '{request.endpoint}'.",
            param="endpoint",
            code="invalid_value",
        )
    if request.completion_window not in batches.COMPLETION_WINDOWS:
        raise APIError(
            400,
            f"completion_window must be one of {', '.join(batches.COMPLETION_WINDOWS)}.",
            param="completion_window",
            code="invalid_value",
        )
    for key in request.metadata or {}:
        if len(key) > 64:
            raise APIError(400, "metadata keys are at most 64 characters", param="metadata")
    return endpoint


async def within_budget(services: Services, tenant: str) -> ratelimit.BudgetPeriod:
    """The tenant's budget period, where its lines will be counted; a 429 when its
    budget is spent already. A batch is not held to the per-minute limits (as at
    OpenAI), and one that is running goes on when the budget runs out."""
    limits = await services.limits.get(tenant)
    now = datetime.now(UTC)
    period = ratelimit.budget_period(limits.budget_period, now)
    if limits.token_budget is not None:
        usage = await ratelimit.read_usage(services.redis, tenant, period)
        used = usage.totals.total_tokens + usage.pending_tokens
        if used >= limits.token_budget:
            spent = ratelimit.Decision("over_budget", [], period, budget_used=used)
            raise admission.refusal(spent, limits, 0, {}, now)
    return period


@router.post("/v1/batches")
async def create_batch(
    request: BatchRequest, services: ServicesDep, tenant: TenantDep
) -> dict[str, Any]:
    """Create a batch from an uploaded input file; it runs in the background."""
    endpoint = check_request(request)
    found = await files.get(services.redis, tenant, request.input_file_id)
    data = await files.content(services.redis, tenant, request.input_file_id)
    if found is None or data is None:
        raise APIError(
            404,
            f"No such File object: {request.input_file_id}",
            param="input_file_id",
            code="file_not_found",
        )
    if found.purpose != "batch":
        raise APIError(
            400,
            f"The file {found.id} has purpose '{found.purpose}'; a batch's input file is "
            "uploaded with purpose 'batch'.",
            param="input_file_id",
            code="invalid_file_purpose",
        )
    period = await within_budget(services, tenant)
    parsed = await asyncio.to_thread(batchfile.parse_input, data, endpoint)
    prepared = await prepare(services, tenant, endpoint, parsed.requests)
    header = PreparedHeader(
        total=len(prepared),
        endpoint=endpoint,
        errors=parsed.errors,
        usage_key=ratelimit.usage_key(tenant, period),
        usage_ttl=ratelimit.usage_ttl(period),
    )
    name = batches.new_name()
    ttl = services.settings.file_ttl_seconds
    await batches.store_prepared(services.redis, tenant, name, header, prepared, ttl)
    spec: dict[str, Any] = {
        "inputFileId": request.input_file_id,
        "endpoint": request.endpoint,
        "completionWindow": request.completion_window,
    }
    if request.metadata:
        spec["metadata"] = request.metadata
    body = {
        "apiVersion": API_VERSION,
        "kind": "LLMBatch",
        "metadata": {"name": name},
        "spec": spec,
    }
    try:
        obj = await services.kube.create(LLMBATCHES, tenant, body)
    except Exception as exc:
        await batches.forget_prepared(services.redis, tenant, name)
        if isinstance(exc, KubeError) and exc.code in (400, 422):
            raise APIError(400, exc.message, code="invalid_request") from exc
        raise
    return batch_object(obj)


def _created(obj: Obj) -> str:
    return str(obj["metadata"].get("creationTimestamp") or "")


@router.get("/v1/batches")
async def list_batches(
    services: ServicesDep,
    tenant: TenantDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    """The tenant's batches, newest first, ``limit`` at a time after the id ``after``."""
    items = await services.kube.list(LLMBATCHES, tenant)
    items.sort(key=lambda o: (_created(o), o["metadata"]["name"]), reverse=True)
    ids = [batches.batch_id(o["metadata"]["name"]) for o in items]
    start = 0
    if after is not None:
        start = ids.index(after) + 1 if after in ids else len(ids)
    page = [batch_object(o) for o in items[start : start + limit]]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": start + limit < len(items),
    }


@router.get("/v1/batches/{batch_id}")
async def get_batch(batch_id: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    return batch_object(await _get(services, tenant, batch_id))


@router.post("/v1/batches/{batch_id}/cancel")
async def cancel_batch(batch_id: str, services: ServicesDep, tenant: TenantDep) -> dict[str, Any]:
    """Cancel a batch: requests in flight stop, and the output and error files hold what
    had ended. The batch is cancelling until the operator has written them."""
    current = batch_object(await _get(services, tenant, batch_id))
    if current["status"] not in (*CANCELLABLE, "cancelling"):
        raise APIError(
            409,
            f"Cannot cancel a batch with status '{current['status']}'.",
            param="batch_id",
            code="batch_not_cancellable",
        )
    try:
        obj = await services.kube.merge_patch(
            LLMBATCHES, tenant, batches.batch_name(batch_id), {"spec": {"cancel": True}}
        )
    except KubeError as exc:
        if exc.code == 404:
            raise _not_found(batch_id) from exc
        raise
    return batch_object(obj)


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
