"""Request and response models of the routes LLMLoom serves.

Requests are read for what LLMLoom acts on (the model, streaming, ``n``, the
token limits), refused at the door (400) where OpenAI would refuse them, and
otherwise forwarded whole: their models allow fields they do not name.
Responses are declared as they are answered, so that the document describes
the real API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

INT32_MAX = 2**31 - 1


class Forwarded(BaseModel):
    """A request body LLMLoom reads what it acts on from, and forwards whole: fields it does
    not know (a server's own, sent through the SDKs' ``extra_body``) are allowed."""

    model_config = ConfigDict(extra="allow")


class ContentPart(Forwarded):
    """One part of a message's content: text, an image, audio, a file."""

    type: str = Field(min_length=1, max_length=64)


class ChatMessage(Forwarded):
    """A chat message as OpenAI clients send it: text or content parts, tool calls, or a
    tool's answer."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(Forwarded):
    """Options of a streamed answer."""

    include_usage: bool = False
    """Send the token usage in a last chunk with no choices."""


class ResponseFormatRequest(Forwarded):
    """OpenAI's ``response_format``: text, a JSON object, or JSON following a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormatRequest:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is given exactly when type is 'json_schema'")
        return self


Stop = str | Annotated[list[str], Field(max_length=4)] | None


class ChatCompletionRequest(Forwarded):
    """The body of POST /v1/chat/completions. LLMLoom acts on ``model``, ``stream``,
    ``stream_options``, ``n`` and the token limits; every field goes to the model server
    as it is (the model's name mapped to the flavor's)."""

    model: str = Field(min_length=1, max_length=512)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=16)
    max_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    logit_bias: dict[str, float] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    stop: Stop = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormatRequest | None = None
    reasoning_effort: str | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    modalities: list[str] | None = None
    prediction: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_streamed_choice(self) -> ChatCompletionRequest:
        if self.stream and self.n != 1:
            raise ValueError("n must be 1 when the answer is streamed")
        return self


class CompletionRequest(Forwarded):
    """The body of POST /v1/completions (the legacy text completions)."""

    model: str = Field(min_length=1, max_length=512)
    prompt: str | list[str] | list[int] | list[list[int]]
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=16)
    max_tokens: int | None = Field(default=None, ge=0, le=INT32_MAX)
    echo: bool | None = None
    suffix: str | None = None
    logprobs: int | None = Field(default=None, ge=0, le=20)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: Stop = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    user: str | None = None

    @model_validator(mode="after")
    def _one_streamed_choice(self) -> CompletionRequest:
        if self.stream and self.n != 1:
            raise ValueError("n must be 1 when the answer is streamed")
        return self


class ResponsesRequest(Forwarded):
    """The body of POST /v1/responses."""

    model: str = Field(min_length=1, max_length=512)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    stream: bool = False
    max_output_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    previous_response_id: str | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None


MAX_INPUTS = 2048
"""Inputs one embeddings request may hold (as OpenAI allows)."""


class EmbeddingRequest(Forwarded):
    """The body of POST /v1/embeddings."""

    model: str = Field(min_length=1, max_length=512)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, le=65536)
    user: str | None = None

    @model_validator(mode="after")
    def _inputs(self) -> EmbeddingRequest:
        if isinstance(self.input, list):
            if not self.input:
                raise ValueError("input must not be empty")
            if len(self.input) > MAX_INPUTS and not isinstance(self.input[0], int):
                raise ValueError(f"at most {MAX_INPUTS} inputs per request")
            if any(isinstance(i, list) and not i for i in self.input):
                raise ValueError("a token array must not be empty")
        elif not self.input:
            raise ValueError("input must not be empty")
        return self

    def texts(self) -> list[str]:
        """The inputs as texts (a batch line becomes a job of them)."""
        items = [self.input] if isinstance(self.input, str) else list(self.input)
        if not all(isinstance(i, str) for i in items):
            raise ValueError("token arrays are taken by /v1/embeddings, not in batches")
        return [str(i) for i in items]


SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "description": "One server-sent event (the schema of a text/event-stream is its events')",
    "required": ["data"],
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string", "description": "JSON; a chat stream ends with [DONE]"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}


class TaskQueued(BaseModel):
    """202: the request outlived its wait; its task is polled at ``location``."""

    id: str
    object: Literal["llmloom.task"] = "llmloom.task"
    status: Literal["queued"] = "queued"
    location: str


class ChatCompletion(BaseModel):
    """A chat completion as OpenAI answers it (the provider's answer, passed through)."""

    id: str
    object: str
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None = None


class TextCompletion(BaseModel):
    """A text completion as OpenAI answers it (the provider's answer, passed through)."""

    id: str
    object: str
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None = None


class ResponseObject(BaseModel):
    """A Response of the Responses API (the provider's answer, passed through)."""

    id: str
    object: str
    created_at: float
    model: str
    output: list[dict[str, Any]]
    status: str | None = None
    usage: dict[str, Any] | None = None


class Embedding(BaseModel):
    """One input's vector: floats, or base64 of little-endian float32."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingList(BaseModel):
    """The vectors of POST /v1/embeddings, in input order."""

    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: dict[str, Any] | None = None


class ModelDetails(BaseModel):
    """LLMLoom's own fields of a model: the flavor behind it."""

    provider: str
    model: str
    capabilities: list[str]
    context_window: int | None


class ModelEntry(BaseModel):
    """A flavor, as an OpenAI model object."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    llmloom: ModelDetails


class ModelList(BaseModel):
    """GET /v1/models."""

    object: Literal["list"] = "list"
    data: list[ModelEntry]


class JobView(BaseModel):
    """An LLMJob as /v1/jobs shows it: its spec and status as in the manifest."""

    id: str
    object: Literal["llmloom.job"] = "llmloom.job"
    uid: str
    generation: int
    created_at: str | None
    spec: dict[str, Any]
    status: dict[str, Any]


class JobList(BaseModel):
    """GET /v1/jobs."""

    object: Literal["list"] = "list"
    data: list[JobView]


class JobDeleted(BaseModel):
    """DELETE /v1/jobs/{job_id}."""

    id: str
    object: Literal["llmloom.job"] = "llmloom.job"
    deleted: bool


class JobResult(BaseModel):
    """A stored result version of a job: its response, or its error."""

    id: str
    object: Literal["llmloom.result"] = "llmloom.result"
    version: int
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class TaskInfo(BaseModel):
    """A durable task: the state of the LLMJob behind a request, and its answer once done."""

    id: str
    object: Literal["llmloom.task"] = "llmloom.task"
    status: str
    created_at: str | None = None
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class UsageLimits(BaseModel):
    """The limits that hold the tenant (null: none)."""

    requests_per_minute: int | None
    tokens_per_minute: int | None
    token_budget: int | None


class UsageTotals(BaseModel):
    """Requests and tokens in a budget period."""

    requests: int
    """Requests admitted."""
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float | None = None
    """What the tokens cost at the answering flavors' pricing; null: no priced flavor."""


class FlavorUsage(UsageTotals):
    """One flavor's part: requests by the flavor asked for, tokens by the one that answered.
    On a shared model (a ClusterFlavor), the tenant's own terms on it too."""

    flavor: str
    shared: bool = False
    limits: UsageLimits | None = None
    """The tenant's limits on the shared model (its ClusterFlavor's terms)."""
    budget_remaining: int | None = None
    """Tokens left of the tenant's budget on the shared model; null: none."""


class UsagePeriod(BaseModel):
    """The calendar period (UTC) of the tenant's token budget."""

    type: Literal["month", "day"]
    id: str
    """``2026-11`` or ``2026-11-22``."""
    start: datetime
    end: datetime


class UsageResponse(UsageTotals):
    """GET /v1/usage: the tenant's usage in the current budget period (LLMLoom's own)."""

    object: Literal["llmloom.usage"] = "llmloom.usage"
    tenant: str
    period: UsagePeriod
    pending_tokens: int
    """Estimated tokens of requests still running (settled when they finish)."""
    budget_remaining: int | None
    """Tokens left in the budget (estimates of running requests count); null: no budget."""
    limits: UsageLimits
    flavors: list[FlavorUsage]
