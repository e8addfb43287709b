"""What a job sends to its model server: a ``Call``, an endpoint of the OpenAI API and
the body for it.

A request the API took is sent as the client sent it (``spec.request``, stored
beside the results; only its ``model`` is the flavor's, set by the wire). A job
written by a person (kubectl, GitOps, ``/v1/jobs``) says the same things in the
LLMJob's own fields (messages with content parts and tool calls, tools,
parameters and ``parameters.extra``), turned here into the body the OpenAI API
would have been sent. A document job's calls are bodies of plain messages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llmloom import bodies, wire
from llmloom.resources import (
    ContentPart,
    Endpoint,
    LLMJob,
    LLMJobSpec,
    Message,
    Parameters,
    Tool,
    ToolChoice,
)
from llmloom.worker.deps import Deps, JobFailed


@dataclass(frozen=True)
class Call:
    """One call to make: the endpoint and the body (without the model's name)."""

    endpoint: Endpoint
    body: dict[str, Any]

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    def but(self, **changes: Any) -> Call:
        """The same call with some fields of the body changed (None removes one)."""
        body = {**self.body, **changes}
        return Call(self.endpoint, {k: v for k, v in body.items() if v is not None})


def _part(part: ContentPart) -> dict[str, Any]:
    out: dict[str, Any] = {"type": part.type}
    if part.type == "text":
        out["text"] = part.text or ""
    elif part.image_url is not None:
        out["image_url"] = part.image_url.model_dump(exclude_none=True)
    elif part.input_audio is not None:
        out["input_audio"] = part.input_audio.model_dump(exclude_none=True)
    elif part.file is not None:
        out["file"] = part.file.model_dump(exclude_none=True)
    return out


def openai_message(message: Message) -> dict[str, Any]:
    """A message of the spec as the OpenAI API writes it."""
    out: dict[str, Any] = {"role": message.role}
    if message.parts is not None:
        out["content"] = [_part(p) for p in message.parts]
    else:
        out["content"] = message.content  # null: an assistant message with tool calls
    if message.name is not None:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [c.model_dump(exclude_none=True) for c in message.tool_calls]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def _tool_choice(choice: ToolChoice) -> Any:
    if choice.function is not None:
        return {"type": "function", "function": {"name": choice.function}}
    return choice.mode


def parameters_body(params: Parameters | None) -> dict[str, Any]:
    """The parameters as the OpenAI API's fields (``choices`` is its ``n``; ``extra`` goes
    as it is)."""
    if params is None:
        return {}
    body = params.model_dump(exclude_none=True, exclude={"choices", "extra", "response_format"})
    if params.choices is not None:
        body["n"] = params.choices
    if params.response_format is not None:
        body["response_format"] = params.response_format.model_dump(exclude_none=True)
    return {**(params.extra or {}), **body}


def chat_body(
    messages: list[Message],
    params: Parameters | None = None,
    tools: list[Tool] | None = None,
    tool_choice: ToolChoice | None = None,
) -> dict[str, Any]:
    """A /v1/chat/completions body."""
    body: dict[str, Any] = {"messages": [openai_message(m) for m in messages]}
    body.update({k: v for k, v in parameters_body(params).items() if k != "dimensions"})
    if tools:
        body["tools"] = [t.model_dump(exclude_none=True) for t in tools]
    if tool_choice is not None:
        body["tool_choice"] = _tool_choice(tool_choice)
    return body


def messages_call(messages: list[Message], params: Parameters | None = None) -> Call:
    """A chat call of plain messages (a document job's calls)."""
    return Call(wire.CHAT, chat_body(messages, params))


def spec_call(spec: LLMJobSpec) -> Call:
    """The call a job written by a person asks for."""
    if spec.task == "embeddings":
        extra = spec.parameters.extra if spec.parameters is not None else None
        body: dict[str, Any] = {**(extra or {}), "input": list(spec.texts or [])}
        if spec.parameters is not None and spec.parameters.dimensions is not None:
            body["dimensions"] = spec.parameters.dimensions
        if spec.parameters is not None and spec.parameters.user is not None:
            body["user"] = spec.parameters.user
        return Call(wire.EMBEDDINGS, body)
    body = chat_body(spec.messages or [], spec.parameters, spec.tools, spec.tool_choice)
    if spec.stream:
        body["stream"] = True
    return Call(wire.CHAT, body)


async def job_call(deps: Deps, job: LLMJob) -> Call:
    """The call a chat or embeddings job makes: its stored request, or its spec's."""
    ref = job.spec.request
    if ref is None:
        return spec_call(job.spec)
    raw = await bodies.load(deps.redis, ref)
    if raw is None:
        raise JobFailed(
            "RequestLost",
            "the request's stored body is gone (Redis lost its data, or it expired): "
            "send the request again",
            410,
        )
    try:
        body = json.loads(raw)
    except ValueError as exc:  # the API stores only bodies it parsed
        raise JobFailed("RequestInvalid", f"the stored request is not JSON: {exc}", 400) from exc
    if not isinstance(body, dict):
        raise JobFailed("RequestInvalid", "the stored request is not a JSON object", 400)
    body.pop("model", None)  # the wire names the flavor's model
    return Call(ref.endpoint, body)
