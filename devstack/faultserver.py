"""A model server for tests that answers over the OpenAI wire with chosen faults.

The behaviour is chosen by the endpoint's path, so a Flavor's ``endpoint``
alone sets it: ``/v1`` answers at once by echoing the last user message,
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
LONE_SECONDS = 3.0
"""How long a /together call waits for company before it answers alone."""
LIMITED_SLACK_SECONDS = 0.25
"""How much sooner than its Retry-After a /limited call is still let through."""


def completion(body: dict[str, Any]) -> dict[str, Any]:
    """A chat completion echoing the last user message."""
    last = next(
        (m["content"] for m in reversed(body.get("messages", [])) if m["role"] == "user"), ""
    )
    text = f"echo: {last}"
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    completion_tokens = len(text.split())
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", MODEL),
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        },
    }


async def stream(answer: dict[str, Any]) -> AsyncIterator[bytes]:
    """An answer as OpenAI streams it: a chunk per word, then usage, then [DONE]."""
    words = answer["choices"][0]["message"]["content"].split(" ")
    base = {k: answer[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    for i, word in enumerate(words):
        last = i == len(words) - 1
        delta = {"content": word if i == 0 else " " + word}
        choice = {"index": 0, "delta": delta, "finish_reason": "stop" if last else None}
        yield f"data: {json.dumps(base | {'choices': [choice]})}\n\n".encode()
        await asyncio.sleep(0.01)
    yield f"data: {json.dumps(base | {'choices': [], 'usage': answer['usage']})}\n\n".encode()
    yield b"data: [DONE]\n\n"


def app() -> FastAPI:
    """The server's routes."""
    api = FastAPI()
    calls: dict[str, int] = {}
    inflight: dict[str, int] = {}
    peak: dict[str, int] = {}
    met: dict[str, asyncio.Event] = {}
    limited_until: dict[str, float] = {}
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

    @api.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> StreamingResponse | dict[str, Any]:
        body = await request.json()
        if body.get("stream"):
            return StreamingResponse(stream(completion(body)), media_type="text/event-stream")
        return completion(body)

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
