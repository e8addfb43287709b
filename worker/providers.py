"""Clients for the model servers' wire protocols, with their errors classified.

One class per wire: ``OpenAIWire`` (OpenAI, vLLM, llama.cpp and every
OpenAI-compatible server) and ``OllamaWire`` (Ollama's native API), each with
the same three calls (``chat``, ``chat_stream``, ``embed``) on a ``Target``,
the server of one flavor. ``wire(provider)`` picks the class of a flavor's
provider.

Each error becomes a ``ProviderError`` carrying a CamelCase reason (as it will
appear in the job's Failed condition), the provider's own message, and whether
trying again could help.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from llmloom import httpio
from llmloom.httpio import Reply
from llmloom.resources import FlavorSpec, Message, Parameters, Provider


class ProviderError(Exception):
    """A provider call that did not produce a usable answer."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(f"{reason}: {message}")
        self.reason, self.message, self.retryable, self.status = reason, message, retryable, status
        self.retry_after = retry_after
        """Seconds the provider asked to wait (Retry-After), if it did."""


_CONTEXT_MARKERS = (
    "maximum context length",
    "context length",
    "context_length_exceeded",
    "exceeds the available context",
    "too many tokens",
)


def _error_text(resp: Reply) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:2000]
    err = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err)


def retry_after(value: str | None) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) as seconds from now."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def classify(resp: Reply) -> ProviderError:
    """The ProviderError for an HTTP error answer of an OpenAI-wire server."""
    text, code = _error_text(resp), resp.status
    if code == 400 and any(m in text.lower() for m in _CONTEXT_MARKERS):
        return ProviderError("ContextLengthExceeded", text, retryable=False, status=code)
    if code in (401, 403):
        return ProviderError("ProviderUnauthorized", text, retryable=False, status=code)
    if code == 404:
        return ProviderError("ModelNotFound", text, retryable=False, status=code)
    after = retry_after(resp.header("retry-after"))
    if code == 429:
        return ProviderError("RateLimited", text, retryable=True, status=code, retry_after=after)
    if code >= 500:
        return ProviderError(
            "ProviderUnavailable", text, retryable=True, status=code, retry_after=after
        )
    return ProviderError("ProviderRejected", text, retryable=False, status=code)


def chat_body(
    spec: FlavorSpec, messages: list[Message], params: Parameters | None
) -> dict[str, Any]:
    """The /chat/completions request body for a job."""
    body: dict[str, Any] = {
        "model": spec.model,
        "messages": [m.model_dump(exclude_none=True) for m in messages],
    }
    if params is not None:
        # Choices (OpenAI's n) are the worker's to make, one call each: not every server can.
        body.update(params.model_dump(exclude_none=True, exclude={"choices"}))
    if spec.max_output_tokens is not None:
        body["max_tokens"] = min(
            body.get("max_tokens", spec.max_output_tokens), spec.max_output_tokens
        )
    return body


def _target(endpoint: str, path: str, api_key: str | None) -> tuple[str, dict[str, str]]:
    """The URL of a provider route, and the headers that carry the key."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return endpoint.rstrip("/") + path, headers


@contextlib.contextmanager
def _transport_errors(url: str, seconds: float) -> Iterator[None]:
    """Raise transport failures as retryable ProviderErrors."""
    try:
        yield
    except httpio.TIMEOUT_ERRORS as exc:  # before the transport errors: these are OSErrors
        raise ProviderError(
            "ProviderTimeout", f"no answer from {url} within {seconds:g}s", retryable=True
        ) from exc
    except httpio.TRANSPORT_ERRORS as exc:
        raise ProviderError("EndpointUnreachable", f"{url}: {exc!r}", retryable=True) from exc


async def _post(
    http: aiohttp.ClientSession,
    endpoint: str,
    path: str,
    body: dict[str, Any],
    api_key: str | None,
    seconds: float,
) -> Reply:
    """POST to the provider, with its key; transport failures and error answers raised
    as classified ProviderErrors."""
    url, headers = _target(endpoint, path, api_key)
    with _transport_errors(url, seconds):
        async with http.post(
            url, json=body, headers=headers, timeout=httpio.timeout(seconds)
        ) as resp:
            reply = await httpio.read(resp)
    if reply.status >= 400:
        raise classify(reply)
    return reply


def _malformed(resp: Reply, what: str) -> ProviderError:
    return ProviderError("MalformedResponse", f"not {what}: {resp.text[:500]}", retryable=True)


def ollama_body(
    spec: FlavorSpec, messages: list[Message], params: Parameters | None
) -> dict[str, Any]:
    """The native /api/chat request body for a job (sampling parameters go in options)."""
    wire = chat_body(spec, messages, params)
    options: dict[str, Any] = {}
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("seed", "seed"),
        ("stop", "stop"),
        ("max_tokens", "num_predict"),
    ):
        if ours in wire:
            options[theirs] = wire[ours]
    body: dict[str, Any] = {"model": spec.model, "messages": wire["messages"], "stream": False}
    if options:
        body["options"] = options
    form = wire.get("response_format") or {}
    if form.get("type") == "json_object":
        body["format"] = "json"
    elif form.get("type") == "json_schema":
        body["format"] = (form.get("json_schema") or {}).get("schema", "json")
    return body


def _ollama_usage(data: dict[str, Any]) -> dict[str, int]:
    prompt, completion = int(data.get("prompt_eval_count") or 0), int(data.get("eval_count") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _ollama_finish(data: dict[str, Any]) -> str:
    return "length" if data.get("done_reason") == "length" else "stop"


def from_ollama(data: dict[str, Any], model: str) -> dict[str, Any]:
    """An Ollama /api/chat answer as an OpenAI ChatCompletion."""
    return _assembled(
        {"model": data.get("model")},
        model,
        [data["message"]["content"]],
        _ollama_finish(data),
        _ollama_usage(data),
    )


def _check_embeddings(resp: Reply, count: int) -> dict[str, Any]:
    """The answer, if it holds one vector of floats per text (checked, not asserted:
    ``python -O`` drops asserts)."""
    try:
        data: dict[str, Any] = resp.json()
        vectors = data["data"]
        whole = len(vectors) == count and all(isinstance(v["embedding"], list) for v in vectors)
    except (ValueError, KeyError, TypeError) as exc:
        raise _malformed(resp, f"{count} embeddings") from exc
    if not whole:
        raise _malformed(resp, f"{count} embeddings")
    return data


def embed_body(spec: FlavorSpec, texts: list[str], params: Parameters | None) -> dict[str, Any]:
    """The embeddings request body both wires share."""
    body: dict[str, Any] = {"model": spec.model, "input": texts}
    if params is not None and params.dimensions is not None:
        body["dimensions"] = params.dimensions
    return body


Emit = Callable[[dict[str, Any]], Awaitable[None]]
"""Publishes one chat.completion.chunk as it arrives."""


def _assembled(
    first: dict[str, Any] | None,
    model: str,
    content: list[str],
    finish: str | None,
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    """The chat completion that a stream of chunks amounts to."""
    answer: dict[str, Any] = {
        "id": (first or {}).get("id") or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": (first or {}).get("created") or int(time.time()),
        "model": (first or {}).get("model") or model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(content)},
                "finish_reason": finish or "stop",
            }
        ],
    }
    if usage:
        answer["usage"] = usage
    return answer


async def _stream_lines(
    http: aiohttp.ClientSession,
    endpoint: str,
    path: str,
    body: dict[str, Any],
    api_key: str | None,
    seconds: float,
) -> AsyncIterator[str]:
    """POST and yield the answer's non-empty lines as they arrive (SSE or NDJSON)."""
    url, headers = _target(endpoint, path, api_key)
    with _transport_errors(url, seconds):
        async with http.post(
            url, json=body, headers=headers, timeout=httpio.timeout(seconds)
        ) as resp:
            if resp.status >= 400:
                raise classify(await httpio.read(resp))
            async for line in httpio.lines(resp):
                yield line


@dataclass(frozen=True)
class Target:
    """The model server of one flavor, as a call reaches it."""

    http: aiohttp.ClientSession
    endpoint: str
    """Base URL, up to the API prefix (``http://vllm:8000/v1``, ``http://ollama:11434``)."""
    spec: FlavorSpec
    api_key: str | None = None

    async def post(self, path: str, body: dict[str, Any]) -> Reply:
        return await _post(
            self.http, self.endpoint, path, body, self.api_key, self.spec.timeout_seconds
        )

    def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[str]:
        return _stream_lines(
            self.http, self.endpoint, path, body, self.api_key, self.spec.timeout_seconds
        )


class Wire:
    """How to speak to one kind of model server: a chat answer, a streamed one, vectors."""

    async def chat(
        self, to: Target, messages: list[Message], params: Parameters | None
    ) -> dict[str, Any]:
        """One chat completion, answered as an OpenAI ChatCompletion."""
        raise NotImplementedError

    async def chat_stream(
        self, to: Target, messages: list[Message], params: Parameters | None, emit: Emit
    ) -> dict[str, Any]:
        """A chat completion whose OpenAI chunks are emitted as they come; returns the
        whole answer."""
        raise NotImplementedError

    async def embed(
        self, to: Target, texts: list[str], params: Parameters | None
    ) -> dict[str, Any]:
        """One vector per text, in order, in the OpenAI shape."""
        raise NotImplementedError


class OpenAIWire(Wire):
    """The OpenAI wire: OpenAI, vLLM, llama.cpp and other compatible servers."""

    async def chat(
        self, to: Target, messages: list[Message], params: Parameters | None
    ) -> dict[str, Any]:
        resp = await to.post("/chat/completions", chat_body(to.spec, messages, params))
        try:
            data: dict[str, Any] = resp.json()
            data["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise _malformed(resp, "a chat completion") from exc
        return data

    async def chat_stream(
        self, to: Target, messages: list[Message], params: Parameters | None, emit: Emit
    ) -> dict[str, Any]:
        body = {
            **chat_body(to.spec, messages, params),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        first: dict[str, Any] | None = None
        content: list[str] = []
        finish: str | None = None
        usage: dict[str, Any] | None = None
        async for line in to.stream("/chat/completions", body):
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            try:
                chunk = json.loads(data)
            except ValueError as exc:
                raise ProviderError(
                    "MalformedResponse", f"not a chunk: {data[:300]}", retryable=True
                ) from exc
            first = first or chunk
            for choice in chunk.get("choices") or []:
                content.append((choice.get("delta") or {}).get("content") or "")
                finish = choice.get("finish_reason") or finish
            usage = chunk.get("usage") or usage
            await emit(chunk)
        return _assembled(first, to.spec.model, content, finish, usage)

    async def embed(
        self, to: Target, texts: list[str], params: Parameters | None
    ) -> dict[str, Any]:
        body = {**embed_body(to.spec, texts, params), "encoding_format": "float"}
        return _check_embeddings(await to.post("/embeddings", body), len(texts))


class OllamaWire(Wire):
    """Ollama's native API (``/api/chat``, ``/api/embed``), answered in OpenAI's shapes."""

    async def chat(
        self, to: Target, messages: list[Message], params: Parameters | None
    ) -> dict[str, Any]:
        resp = await to.post("/api/chat", ollama_body(to.spec, messages, params))
        try:
            return from_ollama(resp.json(), to.spec.model)
        except (ValueError, KeyError, TypeError) as exc:
            raise _malformed(resp, "an Ollama chat answer") from exc

    async def chat_stream(
        self, to: Target, messages: list[Message], params: Parameters | None, emit: Emit
    ) -> dict[str, Any]:
        body = {**ollama_body(to.spec, messages, params), "stream": True}
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        content: list[str] = []
        finish: str | None = None
        usage: dict[str, Any] | None = None
        async for line in to.stream("/api/chat", body):
            try:
                part = json.loads(line)
                text = (part.get("message") or {}).get("content") or ""
            except (ValueError, AttributeError) as exc:
                raise ProviderError(
                    "MalformedResponse", f"not an Ollama chunk: {line[:300]}", retryable=True
                ) from exc
            if "error" in part:  # Ollama reports a failure after the 200 as a line of its own
                raise ProviderError("ProviderUnavailable", str(part["error"]), retryable=True)
            if part.get("done"):
                finish, usage = _ollama_finish(part), _ollama_usage(part)
            content.append(text)
            chunk = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": to.spec.model,
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
            }
            await emit(chunk)
            if usage:
                await emit({**chunk, "choices": [], "usage": usage})
        if finish is None:  # every Ollama stream ends with a done line
            raise ProviderError(
                "MalformedResponse",
                "the Ollama stream ended without its done line",
                retryable=True,
            )
        return _assembled({"id": ident, "created": created}, to.spec.model, content, finish, usage)

    async def embed(
        self, to: Target, texts: list[str], params: Parameters | None
    ) -> dict[str, Any]:
        resp = await to.post("/api/embed", embed_body(to.spec, texts, params))
        try:
            data = resp.json()
            vectors = data["embeddings"]
            tokens = int(data.get("prompt_eval_count") or 0)
            mapped = {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": v}
                    for i, v in enumerate(vectors)
                ],
                "model": data.get("model") or to.spec.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        except (ValueError, KeyError, TypeError) as exc:
            raise _malformed(resp, "an Ollama embed answer") from exc
        return _check_embeddings(Reply.of_json(200, mapped), len(texts))


_WIRES: dict[str, Wire] = {"openai": OpenAIWire(), "vllm": OpenAIWire(), "ollama": OllamaWire()}


def wire(provider: Provider) -> Wire:
    """The wire a flavor's provider speaks (vLLM speaks OpenAI's)."""
    return _WIRES[provider]
