"""Clients for the model servers' wire protocols, with their errors classified.

One class per wire, with one call, ``Wire.call``: a ``Call`` (an endpoint of
the OpenAI API and its body) to the server of one flavor (a ``Target``),
answered in the OpenAI API's shape, streamed chunk by chunk to ``emit`` when
the call streams.

- ``OpenAIWire`` (OpenAI, vLLM, llama.cpp and every OpenAI-compatible server):
  the body goes as it is, with the flavor's model and at most its
  ``maxOutputTokens``; the answer comes back whole (tool calls, logprobs,
  refusals, reasoning, usage details), and a stream's chunks or events are
  relayed as the server sends them.
- ``OllamaWire`` (Ollama's native API): chat and embeddings translated both
  ways (``llmloom.ollama``), completions through Ollama's own OpenAI route,
  and the Responses API over chat (``llmloom.responses``).

Each error becomes a ``ProviderError`` carrying a CamelCase reason (as it will
appear in the job's Failed condition), the provider's own message, the status
the client is answered with, and whether trying again could help.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from llmloom import httpio, ollama, responses, wire
from llmloom.httpio import Reply
from llmloom.resources import FlavorSpec, Provider
from llmloom.worker.bodies import Call


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

    @property
    def client_status(self) -> int:
        """The status the client is answered with: a request the server refused is the
        client's to fix (400, as OpenAI answers it); the rest is a bad gateway."""
        if self.reason in ("ProviderRejected", "ContextLengthExceeded", "UnsupportedByProvider"):
            return 413 if self.status == 413 else 400
        return 502


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
        return str(err.get("message") or err.get("detail") or err)
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
    """The ProviderError for an HTTP error answer of a model server."""
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


def _unsupported(exc: ollama.Untranslatable | responses.Unsupported) -> ProviderError:
    return ProviderError(
        "UnsupportedByProvider", f"{exc.param}: {exc.message}", retryable=False, status=400
    )


def _url(endpoint: str, path: str) -> str:
    return endpoint.rstrip("/") + path


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


def _malformed(text: str, what: str) -> ProviderError:
    return ProviderError("MalformedResponse", f"not {what}: {text[:500]}", retryable=True)


Emit = Callable[[dict[str, Any]], Awaitable[None]]
"""Publishes one chunk (or Responses event) of a streamed answer as it arrives."""


@dataclass(frozen=True)
class Target:
    """The model server of one flavor, as a call reaches it."""

    http: aiohttp.ClientSession
    endpoint: str
    """Base URL, up to the API prefix (``http://vllm:8000/v1``, ``http://ollama:11434``)."""
    spec: FlavorSpec
    api_key: str | None = None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def at(self, endpoint: str) -> Target:
        """The same server, under another base URL."""
        return Target(self.http, endpoint, self.spec, self.api_key)

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST a JSON body; the JSON answer, or the classified ProviderError."""
        url, seconds = _url(self.endpoint, path), self.spec.timeout_seconds
        with _transport_errors(url, seconds):
            async with self.http.post(
                url, json=body, headers=self._headers(), timeout=httpio.timeout(seconds)
            ) as resp:
                reply = await httpio.read(resp)
        if reply.status >= 400:
            raise classify(reply)
        try:
            return reply.json()
        except ValueError as exc:
            raise _malformed(reply.text, "JSON") from exc

    async def lines(self, path: str, body: dict[str, Any]) -> AsyncIterator[str]:
        """POST and yield the answer's non-empty lines as they arrive (SSE or NDJSON)."""
        url, seconds = _url(self.endpoint, path), self.spec.timeout_seconds
        with _transport_errors(url, seconds):
            async with self.http.post(
                url, json=body, headers=self._headers(), timeout=httpio.timeout(seconds)
            ) as resp:
                if resp.status >= 400:
                    raise classify(await httpio.read(resp))
                async for line in httpio.lines(resp):
                    yield line

    async def events(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """POST and yield the JSON of each server-sent event's data until ``[DONE]``; an
        error event raises (a server fails a stream after its 200 that way)."""
        async for line in self.lines(path, body):
            if not line.startswith("data:"):
                continue  # event: names, comments (keep-alives), ids
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                event = json.loads(data)
            except ValueError as exc:
                raise _malformed(data, "a server-sent event") from exc
            if not isinstance(event, dict):
                raise _malformed(data, "an event object")
            if "error" in event and "choices" not in event and "type" not in event:
                err = event["error"]
                message = err.get("message") if isinstance(err, dict) else err
                raise ProviderError("ProviderUnavailable", str(message), retryable=True)
            yield event


# --------------------------------------------------------------------------- answers


def _checked(endpoint: str, data: Any, count: int = 0) -> dict[str, Any]:
    """A whole answer of the endpoint's shape (checked, not asserted: ``python -O`` drops
    asserts), or MalformedResponse."""
    text = json.dumps(data)[:500]
    if not isinstance(data, dict):
        raise _malformed(text, "an answer object")
    if endpoint in (wire.CHAT, wire.COMPLETIONS):
        if not isinstance(data.get("choices"), list) or not data["choices"]:
            raise _malformed(text, "a completion")
    elif endpoint == wire.RESPONSES:
        if not isinstance(data.get("output"), list):
            raise _malformed(text, "a response")
    elif endpoint == wire.EMBEDDINGS:
        vectors = data.get("data")
        if not (
            isinstance(vectors, list)
            and len(vectors) == count
            and all(isinstance(v, dict) and isinstance(v.get("embedding"), list) for v in vectors)
        ):
            raise _malformed(text, f"{count} embeddings")
    return data


def inputs(body: dict[str, Any]) -> int:
    """How many vectors an embeddings request asks for."""
    value = body.get("input")
    if isinstance(value, list) and value and not isinstance(value[0], int):
        return len(value)
    return 1


def _append(into: dict[str, Any], key: str, piece: Any) -> None:
    if isinstance(piece, str) and piece:
        into[key] = (into.get(key) or "") + piece


class ChatAnswer:
    """A chat completion assembled from its chunks: content, reasoning, refusal, tool
    calls (by index) and logprobs of every choice, usage and the server's details."""

    def __init__(self) -> None:
        self.head: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}

    def add(self, chunk: dict[str, Any]) -> None:
        for key, value in chunk.items():
            if key not in ("choices", "object") and value is not None:
                self.head[key] = value
        for choice in chunk.get("choices") or []:
            index = int(choice.get("index") or 0)
            into = self.choices.setdefault(
                index,
                {
                    "index": index,
                    "message": {"role": "assistant"},
                    "logprobs": None,
                    "finish_reason": None,
                },
            )
            message, delta = into["message"], choice.get("delta") or {}
            for key in ("content", "reasoning_content", "reasoning", "refusal"):
                _append(message, key, delta.get(key))
            if delta.get("role"):
                message["role"] = delta["role"]
            for call in delta.get("tool_calls") or []:
                calls = message.setdefault("tool_calls", [])
                at = int(call.get("index") or 0)
                while len(calls) <= at:
                    calls.append({"id": "", "type": "function", "function": {"name": ""}})
                known, function = calls[at], call.get("function") or {}
                known["id"] = call.get("id") or known["id"]
                known["type"] = call.get("type") or known["type"]
                _append(known["function"], "name", function.get("name"))
                known["function"].setdefault("arguments", "")
                _append(known["function"], "arguments", function.get("arguments"))
            logprobs = choice.get("logprobs")
            if isinstance(logprobs, dict):
                merged = into["logprobs"] = into["logprobs"] or {}
                for key, value in logprobs.items():
                    if isinstance(value, list):
                        merged[key] = (merged.get(key) or []) + value
            if choice.get("finish_reason"):
                into["finish_reason"] = choice["finish_reason"]

    def result(self, model: str) -> dict[str, Any]:
        choices = [self.choices[i] for i in sorted(self.choices)]
        for choice in choices:
            message = choice["message"]
            message.setdefault("content", None if message.get("tool_calls") else "")
            choice["finish_reason"] = choice["finish_reason"] or "stop"
        answer = {**self.head, "object": "chat.completion", "choices": choices}
        answer.setdefault("id", f"chatcmpl-{int(time.time() * 1000)}")
        answer.setdefault("created", int(time.time()))
        answer["model"] = answer.get("model") or model
        return answer


class CompletionAnswer:
    """A text completion assembled from its chunks."""

    def __init__(self) -> None:
        self.head: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}

    def add(self, chunk: dict[str, Any]) -> None:
        for key, value in chunk.items():
            if key not in ("choices", "object") and value is not None:
                self.head[key] = value
        for choice in chunk.get("choices") or []:
            index = int(choice.get("index") or 0)
            into = self.choices.setdefault(
                index, {"index": index, "text": "", "logprobs": None, "finish_reason": None}
            )
            into["text"] += str(choice.get("text") or "")
            logprobs = choice.get("logprobs")
            if isinstance(logprobs, dict):
                merged = into["logprobs"] = into["logprobs"] or {}
                for key, value in logprobs.items():
                    if isinstance(value, list):
                        merged[key] = (merged.get(key) or []) + value
                    else:
                        merged[key] = value
            if choice.get("finish_reason"):
                into["finish_reason"] = choice["finish_reason"]

    def result(self, model: str) -> dict[str, Any]:
        choices = [self.choices[i] for i in sorted(self.choices)]
        answer = {**self.head, "object": "text_completion", "choices": choices}
        answer["model"] = answer.get("model") or model
        return answer


# --------------------------------------------------------------------------- wires


def limited(spec: FlavorSpec, call: Call) -> dict[str, Any]:
    """The body with the flavor's model, and its output held to ``maxOutputTokens``."""
    body = {**call.body, "model": spec.model}
    limit = spec.max_output_tokens
    if limit is None or call.endpoint == wire.EMBEDDINGS:
        return body
    keys = {
        wire.CHAT: ("max_completion_tokens", "max_tokens"),
        wire.COMPLETIONS: ("max_tokens",),
        wire.RESPONSES: ("max_output_tokens",),
    }[call.endpoint]
    asked = [k for k in keys if isinstance(body.get(k), int)]
    for key in asked:
        body[key] = min(body[key], limit)
    if not asked:
        body[keys[-1]] = limit
    return body


class Wire:
    """How to speak to one kind of model server."""

    async def call(self, to: Target, call: Call, emit: Emit | None = None) -> dict[str, Any]:
        """The answer to one call, in the OpenAI API's shape; streamed to ``emit`` too
        when it is given (the call streams)."""
        raise NotImplementedError


class OpenAIWire(Wire):
    """The OpenAI wire: OpenAI, vLLM, llama.cpp and other compatible servers."""

    async def call(self, to: Target, call: Call, emit: Emit | None = None) -> dict[str, Any]:
        body, path = limited(to.spec, call), wire.path(call.endpoint)
        if emit is None:
            body.pop("stream", None)
            body.pop("stream_options", None)
            count = inputs(body) if call.endpoint == wire.EMBEDDINGS else 0
            return _checked(call.endpoint, await to.post(path, body), count)
        body["stream"] = True
        if call.endpoint in (wire.CHAT, wire.COMPLETIONS):
            # The usage chunk settles the tokens; the API leaves it out for a client
            # that did not ask for it.
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        if call.endpoint == wire.RESPONSES:
            final: dict[str, Any] | None = None
            async for event in to.events(path, body):
                await emit(event)
                if event.get("type") in ("response.completed", "response.incomplete"):
                    final = event.get("response")
                elif event.get("type") in ("response.failed", "error"):
                    # An "error" event says its message itself; response.failed, in the
                    # response's error.
                    error = (event.get("response") or {}).get("error") or event
                    message = error.get("message") if isinstance(error, dict) else error
                    raise ProviderError(
                        "ProviderFailed", str(message or "the response failed"), retryable=False
                    )
            if not isinstance(final, dict):
                raise _malformed("", "a streamed response ending with response.completed")
            return final
        answer = ChatAnswer() if call.endpoint == wire.CHAT else CompletionAnswer()
        async for chunk in to.events(path, body):
            await emit(chunk)
            answer.add(chunk)
        return answer.result(to.spec.model)


class OllamaWire(Wire):
    """Ollama: its native chat and embed APIs, translated both ways; its own OpenAI route
    for completions; the Responses API over chat."""

    async def call(self, to: Target, call: Call, emit: Emit | None = None) -> dict[str, Any]:
        try:
            if call.endpoint == wire.CHAT:
                return await self._chat(to, call, emit)
            if call.endpoint == wire.EMBEDDINGS:
                body = ollama.embed_request(call.body, to.spec.model)
                data = await to.post("/api/embed", body)
                try:
                    mapped = ollama.embed_response(data, to.spec.model)
                except (KeyError, TypeError, AttributeError) as exc:
                    raise _malformed(json.dumps(data), "an Ollama embed answer") from exc
                return _checked(wire.EMBEDDINGS, mapped, inputs(call.body))
            if call.endpoint == wire.COMPLETIONS:
                return await OpenAIWire().call(to.at(_url(to.endpoint, "/v1")), call, emit)
            return await self._respond(to, call, emit)
        except (ollama.Untranslatable, responses.Unsupported) as exc:
            raise _unsupported(exc) from exc

    async def _chat(self, to: Target, call: Call, emit: Emit | None) -> dict[str, Any]:
        body = limited(to.spec, call)
        request = ollama.chat_request(body, to.spec.model, stream=emit is not None)
        if emit is None:
            data = await to.post("/api/chat", request)
            try:
                return ollama.chat_response(data, to.spec.model)
            except (KeyError, TypeError, AttributeError) as exc:
                raise _malformed(json.dumps(data), "an Ollama chat answer") from exc
        chunks, answer, done = ollama.ChunkMaker(to.spec.model), ChatAnswer(), False
        async for line in to.lines("/api/chat", request):
            try:
                part = json.loads(line)
            except ValueError as exc:
                raise _malformed(line, "an Ollama chunk") from exc
            if not isinstance(part, dict):
                raise _malformed(line, "an Ollama chunk")
            if "error" in part:  # Ollama reports a failure after the 200 as a line of its own
                raise ProviderError("ProviderUnavailable", str(part["error"]), retryable=True)
            for chunk in chunks.chunks(part):
                await emit(chunk)
                answer.add(chunk)
            done = done or bool(part.get("done"))
        if not done:  # every Ollama stream ends with a done line
            raise ProviderError(
                "MalformedResponse", "the Ollama stream ended without its done line", retryable=True
            )
        return answer.result(to.spec.model)

    async def _respond(self, to: Target, call: Call, emit: Emit | None) -> dict[str, Any]:
        chat = Call(wire.CHAT, responses.to_chat(call.body))
        if emit is None:
            return responses.from_chat(await self._chat(to, chat, None), call.body)
        stream = responses.EventStream(call.body, to.spec.model)
        for event in stream.start():
            await emit(event)

        async def relay(chunk: dict[str, Any]) -> None:
            for event in stream.chunk(chunk):
                await emit(event)

        await self._chat(to, chat, relay)
        for event in stream.end():
            await emit(event)
        return stream.response


_WIRES: dict[str, Wire] = {"openai": OpenAIWire(), "vllm": OpenAIWire(), "ollama": OllamaWire()}


def wire_of(provider: Provider) -> Wire:
    """The wire a flavor's provider speaks (vLLM speaks OpenAI's)."""
    return _WIRES[provider]
