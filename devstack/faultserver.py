"""A model server for tests that answers over the OpenAI wire with chosen faults.

The behaviour is chosen by the endpoint's path, so a Flavor's ``endpoint``
alone sets it: ``/v1`` answers at once, on the four endpoints of the OpenAI
API (chat and text completions, responses, embeddings), by echoing the last
user message (with tools, a call of the first tool; with logprobs, theirs),
``/record/<key>/v1`` as ``/v1`` and keeps every body it received for
``GET /received/<key>``,
``/delay/<seconds>/v1`` answers after that delay, ``/status/<code>/v1``
fails with that HTTP status and an OpenAI error body, ``/flaky/<key>/<n>/v1``
fails the first n calls with 503 (``/flaky/<key>/0/v1`` just counts them),
``/limited/<key>/<s>/v1`` answers the first call 429 with ``Retry-After: s``
(and any call before those s seconds passed), ``/status/<code>/<key>/v1`` as
``/status/<code>/v1`` but counted, ``/context/<n>/v1`` answers every call with
vLLM's context-overflow error, ``/together/<key>/<n>/v1`` holds each call
until n calls of the key are in flight at once (or a lone one has waited
``LONE_SECONDS``), so a test sees whether a client really sends n at a time
(``/together/<key>/<n>/<s>/v1``: each then takes s seconds more);
``GET /calls/<key>`` counts the calls of a key and the most in flight at once;
``GET /timeline`` lists when each delayed call ran (for benchmarks).
It stands in for the model server, never for Kubernetes or Redis.

``python -m devstack.faultserver --port N`` serves until killed;
``FaultServer`` runs that as a child process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from devstack.procs import ServerProcess, serve_asgi

MODEL = "echo"
ENDPOINTS = ("chat/completions", "completions", "responses", "embeddings")
LONE_SECONDS = 3.0
"""How long a /together call waits for company before it answers alone."""
LIMITED_SLACK_SECONDS = 0.25
"""How much sooner than its Retry-After a /limited call is still let through."""


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(p["text"]) for p in content if isinstance(p, dict) and "text" in p)
    return str(content or "")


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _logprobs(words: list[str]) -> dict[str, Any]:
    """Chat-style logprobs of the answer's words, with two alternatives each."""
    return {
        "content": [
            {
                "token": w,
                "logprob": -0.5,
                "bytes": list(w.encode()),
                "top_logprobs": [
                    {"token": w, "logprob": -0.5, "bytes": list(w.encode())},
                    {"token": "x", "logprob": -2.0, "bytes": [120]},
                ],
            }
            for w in words
        ],
        "refusal": None,
    }


def completion(body: dict[str, Any]) -> dict[str, Any]:
    """A chat completion echoing the last user message (its text parts too); with tools
    (and tool_choice not none), a call of the first tool instead; with logprobs, those of
    its words."""
    messages = body.get("messages", [])
    last = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
    text = f"echo: {_text_of(last)}"
    prompt = sum(len(_text_of(m.get("content")).split()) for m in messages)
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    finish = "stop"
    tools = body.get("tools") or []
    if tools and body.get("tool_choice") != "none":
        name = (tools[0].get("function") or {}).get("name", "tool")
        message["content"] = None
        message["tool_calls"] = [
            {
                "id": f"call_{uuid.uuid4().hex[:12]}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps({"city": "Paris"})},
            }
        ]
        text, finish = "", "tool_calls"
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish}
    if body.get("logprobs"):
        choice["logprobs"] = _logprobs(text.split())
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", MODEL),
        "system_fingerprint": "fp_fault",
        "choices": [choice],
        "usage": _usage(prompt, len(text.split()) or 1),
    }


def text_completion(body: dict[str, Any]) -> dict[str, Any]:
    """A text completion echoing the prompt (echo: true writes the prompt first, as
    OpenAI does)."""
    prompt = body.get("prompt", "")
    prompts = (
        prompt if isinstance(prompt, list) and prompt and isinstance(prompt[0], str) else [prompt]
    )
    choices = []
    for i, one in enumerate(prompts):
        said = f"echo: {one}"
        text = (str(one) if body.get("echo") else "") + said + str(body.get("suffix") or "")
        choice: dict[str, Any] = {"index": i, "text": text, "finish_reason": "stop"}
        choice["logprobs"] = (
            {"tokens": said.split(), "token_logprobs": [-0.5] * len(said.split())}
            if body.get("logprobs") is not None
            else None
        )
        choices.append(choice)
    words = sum(len(str(p).split()) for p in prompts)
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.get("model", MODEL),
        "choices": choices,
        "usage": _usage(words, sum(len(c["text"].split()) for c in choices)),
    }


def response(body: dict[str, Any]) -> dict[str, Any]:
    """A Response echoing the input's last text."""
    given = body.get("input", "")
    if isinstance(given, list):
        given = next(
            (_text_of(i.get("content")) for i in reversed(given) if isinstance(i, dict)), ""
        )
    text = f"echo: {given}"
    return {
        "id": f"resp_{uuid.uuid4().hex}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": body.get("model", MODEL),
        "output": [
            {
                "type": "message",
                "id": f"msg_{uuid.uuid4().hex}",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": len(str(given).split()),
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": len(text.split()),
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": len(str(given).split()) + len(text.split()),
        },
    }


def embeddings(body: dict[str, Any]) -> dict[str, Any]:
    """A small vector per input, from its length (token ids count as they are)."""
    given = body.get("input", "")
    items = (
        given if isinstance(given, list) and given and not isinstance(given[0], int) else [given]
    )
    data = [
        {"object": "embedding", "index": i, "embedding": [float(len(str(item))), 1.0, 0.0]}
        for i, item in enumerate(items)
    ]
    tokens = sum(len(str(item).split()) for item in items)
    return {
        "object": "list",
        "data": data,
        "model": body.get("model", MODEL),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _sse(data: Any) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


async def stream(answer: dict[str, Any]) -> AsyncIterator[bytes]:
    """A chat answer as OpenAI streams it: a chunk per word (with its logprobs), a tool
    call in two pieces, then usage, then [DONE]."""
    choice, base = answer["choices"][0], {k: answer[k] for k in ("id", "created", "model")}
    base |= {"object": "chat.completion.chunk", "system_fingerprint": "fp_fault"}
    message, logprobs = choice["message"], (choice.get("logprobs") or {}).get("content")
    yield _sse(base | {"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
    words = (message.get("content") or "").split(" ") if message.get("content") else []
    for i, word in enumerate(words):
        piece: dict[str, Any] = {"index": 0, "delta": {"content": word if i == 0 else " " + word}}
        if logprobs:
            piece["logprobs"] = {"content": [logprobs[i]], "refusal": None}
        yield _sse(base | {"choices": [piece]})
        await asyncio.sleep(0.01)
    for n, call in enumerate(message.get("tool_calls") or []):
        args = call["function"]["arguments"]
        head = {"index": n, "id": call["id"], "type": "function"}
        first = head | {"function": {"name": call["function"]["name"], "arguments": ""}}
        yield _sse(base | {"choices": [{"index": 0, "delta": {"tool_calls": [first]}}]})
        for half in (args[: len(args) // 2], args[len(args) // 2 :]):
            more = {"index": n, "function": {"arguments": half}}
            yield _sse(base | {"choices": [{"index": 0, "delta": {"tool_calls": [more]}}]})
    end = {"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}
    yield _sse(base | {"choices": [end]})
    if (answer.get("stream_options") or {}).get("include_usage", True):
        yield _sse(base | {"choices": [], "usage": answer["usage"]})
    yield b"data: [DONE]\n\n"


async def stream_text(answer: dict[str, Any]) -> AsyncIterator[bytes]:
    """A text completion as OpenAI streams it: a chunk per word, usage, [DONE]."""
    base = {k: answer[k] for k in ("id", "created", "model")} | {"object": "text_completion"}
    for i, word in enumerate(answer["choices"][0]["text"].split(" ")):
        piece = {"index": 0, "text": word if i == 0 else " " + word, "finish_reason": None}
        yield _sse(base | {"choices": [piece]})
    yield _sse(base | {"choices": [{"index": 0, "text": "", "finish_reason": "stop"}]})
    yield _sse(base | {"choices": [], "usage": answer["usage"]})
    yield b"data: [DONE]\n\n"


async def stream_response(answer: dict[str, Any]) -> AsyncIterator[bytes]:
    """A Response as OpenAI streams it: created, the text's deltas, completed."""
    seq = iter(range(1_000_000))

    def event(kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": next(seq), **fields}
        return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()

    shell = {**answer, "status": "in_progress", "output": [], "usage": None}
    yield event("response.created", response=shell)
    item = answer["output"][0]
    text = item["content"][0]["text"]
    yield event("response.output_item.added", output_index=0, item={**item, "content": []})
    for word in text.split(" "):
        yield event(
            "response.output_text.delta",
            item_id=item["id"],
            output_index=0,
            content_index=0,
            delta=word + " ",
            logprobs=[],
        )
    yield event("response.output_item.done", output_index=0, item=item)
    yield event("response.completed", response=answer)


def app() -> FastAPI:
    """The server's routes."""
    api = FastAPI()
    calls: dict[str, int] = {}
    inflight: dict[str, int] = {}
    peak: dict[str, int] = {}
    met: dict[str, asyncio.Event] = {}
    limited_until: dict[str, float] = {}
    received: dict[str, list[dict[str, Any]]] = {}
    # When each delayed call ran, so benchmarks can see how busy a client kept the server.
    timeline: deque[tuple[str, float, float]] = deque(maxlen=100_000)

    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": MODEL, "object": "model"}]}

    def error(code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        err = {
            "message": message,
            "type": "server_error" if code >= 500 else "invalid_request_error",
        }
        return JSONResponse({"error": err}, status_code=code, headers=headers)

    @api.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/v1/models")
    @api.get("/{prefix:path}/v1/models")
    async def list_models() -> dict[str, Any]:
        return models()

    @api.get("/calls/{key}")
    async def count(key: str) -> dict[str, int]:
        """How many chat calls a flaky, limited or together endpoint received, and the most
        that were in flight at once."""
        return {"calls": calls.get(key, 0), "peak": peak.get(key, 0)}

    def answered(path: str, body: dict[str, Any]) -> StreamingResponse | dict[str, Any]:
        """The echo answer of one of the four endpoints, streamed when asked."""
        if path == "chat/completions":
            answer = completion(body)
            if body.get("stream"):
                answer["stream_options"] = body.get("stream_options") or {}
                return StreamingResponse(stream(answer), media_type="text/event-stream")
            return answer
        if path == "completions":
            text = text_completion(body)
            if body.get("stream"):
                return StreamingResponse(stream_text(text), media_type="text/event-stream")
            return text
        if path == "responses":
            made = response(body)
            if body.get("stream"):
                return StreamingResponse(stream_response(made), media_type="text/event-stream")
            return made
        return embeddings(body)

    @api.post("/v1/{path:path}", response_model=None)
    async def echo(
        path: str, request: Request
    ) -> StreamingResponse | JSONResponse | dict[str, Any]:
        if path not in ENDPOINTS:
            return error(404, f"no route /v1/{path}")
        return answered(path, await request.json())

    @api.post("/record/{key}/v1/{path:path}", response_model=None)
    async def recorded(
        key: str, path: str, request: Request
    ) -> StreamingResponse | JSONResponse | dict[str, Any]:
        """As /v1, keeping every body received under ``key`` (GET /received/<key>)."""
        if path not in ENDPOINTS:
            return error(404, f"no route /v1/{path}")
        body = await request.json()
        received.setdefault(key, []).append({"path": f"/v1/{path}", "body": body})
        return answered(path, body)

    @api.get("/received/{key}")
    async def get_received(key: str) -> list[dict[str, Any]]:
        """The bodies a /record/<key> endpoint received, in order, with their paths."""
        return received.get(key, [])

    @api.post("/delay/{seconds}/v1/chat/completions")
    async def slow_chat(seconds: float, request: Request) -> dict[str, Any]:
        started = time.time()
        body = await request.json()
        await asyncio.sleep(seconds)
        answer = completion(body)
        timeline.append((answer["choices"][0]["message"]["content"], started, time.time()))
        return answer

    @api.get("/timeline")
    async def get_timeline() -> list[tuple[str, float, float]]:
        """Each delayed call since the last DELETE: (answer, start, end), epoch seconds."""
        return list(timeline)

    @api.delete("/timeline")
    async def clear_timeline() -> None:
        timeline.clear()

    @api.post("/status/{code}/v1/chat/completions")
    async def failing_chat(code: int) -> JSONResponse:
        return error(code, f"injected failure {code}")

    @api.post("/status/{code}/{key}/v1/chat/completions")
    async def counted_failing_chat(code: int, key: str) -> JSONResponse:
        """As /status/<code>, counting the calls of ``key``."""
        calls[key] = calls.get(key, 0) + 1
        return error(code, f"injected failure {code}")

    @api.post("/flaky/{key}/{failures}/v1/chat/completions", response_model=None)
    async def flaky_chat(
        key: str, failures: int, request: Request
    ) -> JSONResponse | dict[str, Any]:
        """503 for the first ``failures`` calls of ``key``, then answers."""
        calls[key] = calls.get(key, 0) + 1
        if calls[key] <= failures:
            return error(503, f"injected failure {calls[key]} of {failures}")
        return completion(await request.json())

    @api.post("/limited/{key}/{seconds}/v1/chat/completions", response_model=None)
    async def limited_chat(
        key: str, seconds: int, request: Request
    ) -> JSONResponse | dict[str, Any]:
        """429 with Retry-After: ``seconds`` on the first call of ``key``, and again to any
        call before that time has passed; then answers."""
        calls[key] = calls.get(key, 0) + 1
        now = time.monotonic()
        reopens = limited_until.setdefault(key, now + seconds)
        # A little slack: the clocks of two processes, and the way to the server.
        if calls[key] == 1 or now < reopens - LIMITED_SLACK_SECONDS:
            wait = max(1, round(reopens - now))
            return error(429, "Rate limit reached", {"Retry-After": str(wait)})
        return completion(await request.json())

    @api.post("/together/{key}/{n}/v1/chat/completions")
    async def together_chat(key: str, n: int, request: Request) -> dict[str, Any]:
        """Answers once ``n`` calls of ``key`` are in flight together (or after
        ``LONE_SECONDS`` alone), recording the most in flight at once."""
        return await together_paced(key, n, 0.0, request)

    @api.post("/together/{key}/{n}/{seconds}/v1/chat/completions")
    async def together_paced(key: str, n: int, seconds: float, request: Request) -> dict[str, Any]:
        """As /together/<key>/<n>, each call then taking ``seconds`` more."""
        body = await request.json()
        calls[key] = calls.get(key, 0) + 1
        inflight[key] = inflight.get(key, 0) + 1
        peak[key] = max(peak.get(key, 0), inflight[key])
        try:
            if inflight[key] >= n:
                met.pop(key, asyncio.Event()).set()  # release the ones waiting with it
            else:
                event = met.setdefault(key, asyncio.Event())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), LONE_SECONDS)
            await asyncio.sleep(seconds)
            return completion(body)
        finally:
            inflight[key] -= 1

    @api.post("/context/{limit}/v1/chat/completions")
    async def small_context(limit: int) -> JSONResponse:
        return error(
            400,
            f"This model's maximum context length is {limit} tokens. However, "
            "your messages resulted in more tokens.",
        )

    return api


class FaultServer(ServerProcess):
    """The fault server as a child process; ``url(path)`` builds endpoints."""

    name = "faultserver"
    module = "devstack.faultserver"

    def endpoint(self, behaviour: str = "") -> str:
        """The endpoint for a behaviour: "" (echo), "delay/5", "status/503", ..."""
        return f"{self.base}/{behaviour.strip('/')}/v1" if behaviour else self.url


if __name__ == "__main__":
    serve_asgi(app, __doc__)
