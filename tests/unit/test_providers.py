"""The wires to the model servers: errors become reasons a person can act on, requests go
as the client sent them with the flavor's model and limits, streams are relayed chunk by
chunk and assembled into the answer; against small servers in the test's own loop."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from openai.types import Completion
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from llmloom import httpio, wire
from llmloom.httpio import Reply
from llmloom.resources import Endpoint, FlavorSpec, Retry
from llmloom.worker.bodies import Call
from llmloom.worker.calls import backoff, embedding_batches, merged_choices, merged_embeddings
from llmloom.worker.providers import (
    ChatAnswer,
    CompletionAnswer,
    OllamaWire,
    OpenAIWire,
    ProviderError,
    Target,
    classify,
    inputs,
    limited,
    retry_after,
    wire_of,
)

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def resp(code: int, body: object, headers: dict[str, str] | None = None) -> Reply:
    return Reply.of_json(code, body, headers)


def spec(**kw: object) -> FlavorSpec:
    return FlavorSpec.model_validate(
        {"provider": "openai", "model": "served-model", "endpoint": "http://x/v1", **kw}
    )


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("code", "body", "reason", "retryable"),
    [
        (
            400,
            {
                "error": {
                    "message": "This model's maximum context length is 4096 tokens. However, "
                    "your messages resulted in 5000 tokens.",
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
            },
            "ContextLengthExceeded",
            False,
        ),
        (
            400,
            {
                "error": {
                    "code": 400,
                    "message": "request (3031 tokens) exceeds the available "
                    "context size (1024 tokens)",
                    "type": "exceed_context_size_error",
                }
            },
            "ContextLengthExceeded",
            False,
        ),
        (
            400,
            {
                "object": "error",
                "message": "This model's maximum context length is 2048 tokens.",
                "type": "BadRequestError",
                "code": 400,
            },
            "ContextLengthExceeded",
            False,
        ),
        (400, {"error": {"message": "temperature must be <= 2"}}, "ProviderRejected", False),
        (401, {"error": {"message": "Incorrect API key provided"}}, "ProviderUnauthorized", False),
        (
            403,
            {"error": {"message": "Project does not have access"}},
            "ProviderUnauthorized",
            False,
        ),
        (404, {"error": {"message": "The model 'x' does not exist"}}, "ModelNotFound", False),
        (404, {"error": "model 'llama3' not found"}, "ModelNotFound", False),  # Ollama's shape
        (413, {"error": {"message": "Request too large"}}, "ProviderRejected", False),
        (
            422,
            {"detail": [{"loc": ["body", "messages"], "msg": "field required"}]},
            "ProviderRejected",
            False,
        ),
        (429, {"error": {"message": "Rate limit reached"}}, "RateLimited", True),
        (500, {"error": {"message": "The server had an error"}}, "ProviderUnavailable", True),
        (503, {"detail": "overloaded"}, "ProviderUnavailable", True),
    ],
)
def test_classify(code: int, body: object, reason: str, retryable: bool) -> None:
    err = classify(resp(code, body))
    assert (err.reason, err.retryable, err.status) == (reason, retryable, code)
    assert str(err).startswith(f"{reason}: ")


def test_the_providers_message_is_kept() -> None:
    err = classify(resp(401, {"error": {"message": "Incorrect API key provided"}}))
    assert err.message == "Incorrect API key provided"
    assert classify(resp(503, {"detail": "overloaded"})).message == "overloaded"
    assert classify(resp(404, {"error": "model 'llama3' not found"})).message == (
        "model 'llama3' not found"
    )
    assert classify(resp(500, ["odd"])).message == "['odd']"


def test_a_non_json_error_body_is_kept_as_text() -> None:
    err = classify(Reply(502, b"<html>bad gateway</html>"))
    assert err.reason == "ProviderUnavailable" and "bad gateway" in err.message
    long = classify(Reply(500, b"x" * 5000))
    assert len(long.message) == 2000


@pytest.mark.parametrize(
    ("reason", "status", "client"),
    [
        ("ProviderRejected", 400, 400),
        ("ProviderRejected", 422, 400),
        ("ProviderRejected", 413, 413),
        ("ContextLengthExceeded", 400, 400),
        ("UnsupportedByProvider", 400, 400),
        ("UnsupportedByProvider", None, 400),
        ("ProviderUnauthorized", 401, 502),
        ("ModelNotFound", 404, 502),
        ("RateLimited", 429, 502),
        ("ProviderUnavailable", 503, 502),
        ("ProviderTimeout", None, 502),
        ("EndpointUnreachable", None, 502),
        ("MalformedResponse", None, 502),
    ],
)
def test_the_client_is_answered_400_for_what_it_can_fix_else_502(
    reason: str, status: int | None, client: int
) -> None:
    err = ProviderError(reason, "m", retryable=False, status=status)
    assert err.client_status == client


def test_client_status_of_classified_answers() -> None:
    assert classify(resp(413, {"error": {"message": "too large"}})).client_status == 413
    assert classify(resp(422, {"detail": "bad"})).client_status == 400
    assert classify(resp(401, {"error": {"message": "no"}})).client_status == 502


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after("3") == 3.0
    assert retry_after("1.5") == 1.5
    assert retry_after("-4") == 0.0
    assert retry_after(None) is None and retry_after("") is None and retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < (retry_after(later) or 0) <= 30
    earlier = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert retry_after(earlier) == 0.0


def test_a_rate_limit_or_an_unavailable_server_says_how_long_to_wait() -> None:
    err = classify(resp(429, {"error": {"message": "slow down"}}, {"Retry-After": "7"}))
    assert err.retry_after == 7.0 and err.retryable
    busy = classify(resp(503, {"error": {"message": "busy"}}, {"retry-after": "2"}))
    assert busy.retry_after == 2.0
    assert classify(resp(429, {"error": {"message": "slow down"}})).retry_after is None


def test_backoff_doubles_with_jitter_within_the_cap_and_honours_retry_after() -> None:
    retry = Retry(attempts=5, min_delay_seconds=1, max_delay_seconds=5)
    for attempt, ceiling in [(0, 1), (1, 2), (2, 4), (3, 5), (4, 5)]:
        delays = [backoff(retry, attempt, None) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert backoff(retry, 0, 12.0) == 12.0
    assert 0.5 <= backoff(retry, 0, 0.1) <= 1  # a shorter Retry-After does not shorten it


# --------------------------------------------------------------------------- limits


def test_the_flavors_model_replaces_the_clients() -> None:
    call = Call(wire.CHAT, {"model": "gpt-4o", "messages": [], "temperature": 0})
    assert limited(spec(), call) == {"model": "served-model", "messages": [], "temperature": 0}
    assert call.body["model"] == "gpt-4o"  # the call itself is left as it was


@pytest.mark.parametrize(
    ("endpoint", "body", "held"),
    [
        (wire.CHAT, {}, {"max_tokens": 64}),
        (wire.CHAT, {"max_tokens": 500}, {"max_tokens": 64}),
        (wire.CHAT, {"max_tokens": 5}, {"max_tokens": 5}),
        (wire.CHAT, {"max_completion_tokens": 500}, {"max_completion_tokens": 64}),
        (
            wire.CHAT,
            {"max_completion_tokens": 500, "max_tokens": 10},
            {"max_completion_tokens": 64, "max_tokens": 10},
        ),
        (wire.CHAT, {"max_tokens": None}, {"max_tokens": 64}),
        (wire.COMPLETIONS, {}, {"max_tokens": 64}),
        (wire.COMPLETIONS, {"max_tokens": 16}, {"max_tokens": 16}),
        (wire.RESPONSES, {}, {"max_output_tokens": 64}),
        (wire.RESPONSES, {"max_output_tokens": 4096}, {"max_output_tokens": 64}),
        (wire.EMBEDDINGS, {}, {}),
    ],
)
def test_the_flavors_max_output_tokens_holds_every_endpoints_limit(
    endpoint: Endpoint, body: dict[str, Any], held: dict[str, Any]
) -> None:
    out = limited(spec(maxOutputTokens=64), Call(endpoint, body))
    assert out == {**body, "model": "served-model", **held}


def test_without_max_output_tokens_the_clients_limits_stand() -> None:
    body = {"messages": [], "max_tokens": 100000}
    assert limited(spec(), Call(wire.CHAT, body)) == {**body, "model": "served-model"}


def test_inputs_counts_the_vectors_an_embeddings_request_asks_for() -> None:
    assert inputs({"input": "one"}) == 1
    assert inputs({"input": ["a", "b", "c"]}) == 3
    assert inputs({"input": [15339, 1917]}) == 1  # one text as token ids
    assert inputs({"input": [[15339], [1917]]}) == 2
    assert inputs({"input": []}) == 1
    assert inputs({}) == 1


# --------------------------------------------------------------------------- batches


def test_long_embedding_lists_go_in_batches_and_come_back_as_one_answer() -> None:
    texts = [f"t{i}" for i in range(600)]
    call = Call(wire.EMBEDDINGS, {"input": texts, "dimensions": 8, "encoding_format": "float"})
    batches = embedding_batches(call)
    assert [len(b.body["input"]) for b in batches] == [256, 256, 88]
    assert [t for b in batches for t in b.body["input"]] == texts
    assert all(b.body["dimensions"] == 8 and b.endpoint == wire.EMBEDDINGS for b in batches)

    def answer(part: list[str]) -> dict[str, Any]:
        data = [
            {"object": "embedding", "index": i, "embedding": [float(t[1:])]}
            for i, t in enumerate(part)
        ]
        usage = {"prompt_tokens": len(part), "total_tokens": len(part)}
        return {"object": "list", "model": "m", "data": data, "usage": usage}

    merged = merged_embeddings([answer(b.body["input"]) for b in batches])
    assert [d["index"] for d in merged["data"]] == list(range(600))
    assert [d["embedding"] for d in merged["data"]] == [[float(i)] for i in range(600)]
    assert merged["usage"] == {"prompt_tokens": 600, "total_tokens": 600}
    assert (merged["object"], merged["model"]) == ("list", "m")


def test_short_or_single_embedding_requests_are_one_call() -> None:
    bodies: list[dict[str, Any]] = [
        {"input": []},
        {"input": "one"},
        {"input": [1] * 1000},
        {"input": ["a"] * 256},
    ]
    for body in bodies:
        call = Call(wire.EMBEDDINGS, body)
        assert embedding_batches(call) == [call]


def test_merged_embeddings_without_usage_report_none() -> None:
    answers = [{"object": "list", "model": "m", "data": [{"index": 0, "embedding": [1.0]}]}] * 2
    merged = merged_embeddings(answers)
    assert "usage" not in merged and [d["index"] for d in merged["data"]] == [0, 1]


def test_n_answers_become_one_completion_of_n_choices() -> None:
    def answer(text: str, usage: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": f"chatcmpl-{text}",
            "object": "chat.completion",
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
        }
        if usage:
            out["usage"] = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
        return out

    merged = merged_choices([answer("a"), answer("b"), answer("c")])
    assert [(c["index"], c["message"]["content"]) for c in merged["choices"]] == [
        (0, "a"),
        (1, "b"),
        (2, "c"),
    ]
    assert merged["usage"] == {"prompt_tokens": 30, "completion_tokens": 6, "total_tokens": 36}
    assert merged["id"] == "chatcmpl-a"
    partial = merged_choices([answer("a"), answer("b", usage=False)])
    assert partial["usage"] == answer("a")["usage"]  # the first answer's, not a partial sum


# --------------------------------------------------------------------------- assembling


def chat_chunk(
    delta: dict[str, Any] | None, finish: str | None = None, **extra: Any
) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion.chunk",
        "created": 1741570283,
        "model": "gpt-4o-2024-08-06",
        "service_tier": "default",
        "system_fingerprint": "fp_eb9dce56a8",
        "usage": None,
    }
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    )
    return {**base, "choices": choices, **extra}


USAGE = {
    "prompt_tokens": 19,
    "completion_tokens": 10,
    "total_tokens": 29,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
}


def assembled(chunks: list[dict[str, Any]], model: str = "served-model") -> dict[str, Any]:
    answer = ChatAnswer()
    for chunk in chunks:
        answer.add(chunk)
    return answer.result(model)


def test_a_streamed_text_answer_is_assembled() -> None:
    out = assembled(
        [
            chat_chunk({"role": "assistant", "content": "", "refusal": None}),
            chat_chunk({"content": "Hello"}),
            chat_chunk({"content": "!"}),
            chat_chunk({"content": " How can I help?"}),
            chat_chunk({}, "stop"),
            chat_chunk(None, usage=USAGE),
        ]
    )
    assert out == {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "created": 1741570283,
        "model": "gpt-4o-2024-08-06",
        "service_tier": "default",
        "system_fingerprint": "fp_eb9dce56a8",
        "usage": USAGE,
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I help?"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
    }
    ChatCompletion.model_validate(out)


def test_streamed_reasoning_and_refusals_are_kept() -> None:
    out = assembled(
        [
            chat_chunk({"role": "assistant", "reasoning_content": "The user"}),
            chat_chunk({"reasoning_content": " asks for X."}),
            chat_chunk({"reasoning": "(vLLM's name)"}),
            chat_chunk({"refusal": "I can't"}),
            chat_chunk({"refusal": " help with that."}, "stop"),
        ]
    )
    message = out["choices"][0]["message"]
    assert message == {
        "role": "assistant",
        "reasoning_content": "The user asks for X.",
        "reasoning": "(vLLM's name)",
        "refusal": "I can't help with that.",
        "content": "",
    }


def test_streamed_tool_calls_are_assembled_by_index() -> None:
    """Two parallel calls as OpenAI streams them: id, type and name in the first delta of
    each, the arguments in pieces after."""
    out = assembled(
        [
            chat_chunk(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        }
                    ],
                }
            ),
            chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"lo'}}]}),
            chat_chunk(
                {"tool_calls": [{"index": 0, "function": {"arguments": 'cation": "Paris'}}]}
            ),
            chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": ', France"}'}}]}),
            chat_chunk(
                {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "call_ABC",
                            "type": "function",
                            "function": {"name": "get_time", "arguments": ""},
                        }
                    ]
                }
            ),
            chat_chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
            chat_chunk({}, "tool_calls"),
            chat_chunk(None, usage=USAGE),
        ]
    )
    (choice,) = out["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"location": "Paris, France"}'},
            },
            {
                "id": "call_ABC",
                "type": "function",
                "function": {"name": "get_time", "arguments": "{}"},
            },
        ],
    }
    parsed = ChatCompletion.model_validate(out)
    calls = parsed.choices[0].message.tool_calls
    assert calls is not None and [c.id for c in calls] == [
        "call_DdmO9pD3xa9XTPNJ32zg2hcA",
        "call_ABC",
    ]


def test_streamed_logprobs_are_concatenated() -> None:
    def token(text: str, logprob: float) -> dict[str, Any]:
        return {"token": text, "logprob": logprob, "bytes": list(text.encode()), "top_logprobs": []}

    out = assembled(
        [
            {
                **chat_chunk({"role": "assistant", "content": "Hello"}),
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": "Hello"},
                        "logprobs": {"content": [token("Hello", -0.31)], "refusal": None},
                        "finish_reason": None,
                    }
                ],
            },
            {
                **chat_chunk({"content": "!"}),
                "choices": [
                    {
                        "index": 0,
                        "delta": {"content": "!"},
                        "logprobs": {"content": [token("!", -0.02)], "refusal": None},
                        "finish_reason": "stop",
                    }
                ],
            },
        ]
    )
    logprobs = out["choices"][0]["logprobs"]
    assert logprobs == {"content": [token("Hello", -0.31), token("!", -0.02)]}
    parsed = ChatCompletion.model_validate(out)
    assert parsed.choices[0].logprobs is not None


def test_an_answer_with_no_finish_reason_or_head_gets_defaults() -> None:
    answer = ChatAnswer()
    answer.add({"choices": [{"delta": {"content": "x"}}]})
    out = answer.result("served-model")
    assert out["model"] == "served-model" and out["object"] == "chat.completion"
    assert out["id"].startswith("chatcmpl-") and isinstance(out["created"], int)
    assert out["choices"][0]["finish_reason"] == "stop"
    ChatCompletion.model_validate(out)


def test_several_choices_are_assembled_apart() -> None:
    out = assembled(
        [
            {**chat_chunk(None), "choices": [{"index": 1, "delta": {"content": "b"}}]},
            {**chat_chunk(None), "choices": [{"index": 0, "delta": {"content": "a"}}]},
            {
                **chat_chunk(None),
                "choices": [{"index": 1, "delta": {"content": "B"}, "finish_reason": "length"}],
            },
        ]
    )
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in out["choices"]] == [
        (0, "a", "stop"),
        (1, "bB", "length"),
    ]


def test_a_streamed_text_completion_is_assembled_with_its_logprobs() -> None:
    def chunk(text: str, logprob: float, offset: int, finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe",
            "object": "text_completion",
            "created": 1690759702,
            "model": "gpt-3.5-turbo-instruct",
            "system_fingerprint": "fp_44709d6fcb",
            "choices": [
                {
                    "text": text,
                    "index": 0,
                    "logprobs": {
                        "tokens": [text],
                        "token_logprobs": [logprob],
                        "top_logprobs": [{text: logprob}],
                        "text_offset": [offset],
                    },
                    "finish_reason": finish,
                }
            ],
        }

    answer = CompletionAnswer()
    for c in [chunk("This", -0.1, 0), chunk(" is", -0.2, 4), chunk(" a test", -0.3, 7, "length")]:
        answer.add(c)
    answer.add({"id": "cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe", "choices": [], "usage": USAGE})
    out = answer.result("served-model")
    assert out["object"] == "text_completion" and out["model"] == "gpt-3.5-turbo-instruct"
    assert out["system_fingerprint"] == "fp_44709d6fcb" and out["usage"] == USAGE
    (choice,) = out["choices"]
    assert (choice["text"], choice["finish_reason"]) == ("This is a test", "length")
    assert choice["logprobs"] == {
        "tokens": ["This", " is", " a test"],
        "token_logprobs": [-0.1, -0.2, -0.3],
        "top_logprobs": [{"This": -0.1}, {" is": -0.2}, {" a test": -0.3}],
        "text_offset": [0, 4, 7],
    }
    parsed = Completion.model_validate(out)
    assert parsed.choices[0].text == "This is a test"


def test_each_provider_has_its_wire() -> None:
    assert isinstance(wire_of("openai"), OpenAIWire)
    assert isinstance(wire_of("vllm"), OpenAIWire)
    assert isinstance(wire_of("ollama"), OllamaWire)


# --------------------------------------------------------------------------- the wires

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Received:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Emitted:
    items: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, chunk: dict[str, Any]) -> None:
        self.items.append(json.loads(json.dumps(chunk)))  # as the worker publishes it


def replying(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    async def handle(_: web.Request) -> web.StreamResponse:
        return web.json_response(value, status=status, headers=headers)

    return handle


def sse(*events: dict[str, Any] | str, done: bool = True) -> Handler:
    """Server-sent events as OpenAI's servers write them (a str is written as it is)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        for event in events:
            if isinstance(event, str):
                await out.write(event.encode())
            else:
                name = event.get("type")
                prefix = f"event: {name}\n" if isinstance(name, str) else ""
                await out.write(f"{prefix}data: {json.dumps(event)}\n\n".encode())
        if done:
            await out.write(b"data: [DONE]\n\n")
        await out.write_eof()
        return out

    return handle


def ndjson(*lines: dict[str, Any]) -> Handler:
    """Ollama's stream: one JSON object a line."""

    async def handle(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await out.prepare(request)
        for line in lines:
            await out.write((json.dumps(line) + "\n").encode())
        await out.write_eof()
        return out

    return handle


@contextlib.asynccontextmanager
async def server(
    routes: dict[str, Handler],
) -> AsyncIterator[tuple[aiohttp.ClientSession, str, list[Received]]]:
    """The routes served on a loopback port in this event loop; the bodies they received."""
    received: list[Received] = []
    app = web.Application()

    def recorded(handler: Handler) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            received.append(Received(request.path, await request.json(), dict(request.headers)))
            return await handler(request)

        return handle

    for path, handler in routes.items():
        app.router.add_post(path, recorded(handler))
    test_server = TestServer(app)
    await test_server.start_server()
    try:
        async with httpio.session(8) as http:
            yield http, str(test_server.make_url("")).rstrip("/"), received
    finally:
        await test_server.close()


CHAT_ANSWER = {
    "id": "chatcmpl-123",
    "object": "chat.completion",
    "created": 1677652288,
    "model": "served-model",
    "system_fingerprint": "fp_44709d6fcb",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there, how may I assist you today?"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21},
}
SDK_BODY = {
    # What openai.chat.completions.create(...) sends, with extra_body={"top_k": 20}.
    "messages": [
        {"role": "developer", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello!"},
    ],
    "model": "gpt-4o",
    "temperature": 0.7,
    "logprobs": True,
    "top_logprobs": 2,
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "tool_choice": "auto",
    "response_format": {"type": "json_object"},
    "top_k": 20,
}


def test_a_chat_call_sends_the_clients_body_with_the_flavors_model() -> None:
    async def go() -> tuple[dict[str, Any], list[Received]]:
        async with server({"/v1/chat/completions": replying(CHAT_ANSWER)}) as (http, base, got):
            to = Target(http, f"{base}/v1", spec(), api_key="sk-test")
            answer = await OpenAIWire().call(to, Call(wire.CHAT, {**SDK_BODY, "stream": False}))
            return answer, got

    answer, got = run(go())
    assert answer == CHAT_ANSWER
    (sent,) = got
    assert sent.path == "/v1/chat/completions"
    assert sent.body == {**SDK_BODY, "model": "served-model"}  # no "stream": false either
    assert sent.headers["Authorization"] == "Bearer sk-test"


def test_a_call_without_an_api_key_sends_no_authorization() -> None:
    async def go() -> list[Received]:
        async with server({"/v1/chat/completions": replying(CHAT_ANSWER)}) as (http, base, got):
            await OpenAIWire().call(
                Target(http, f"{base}/v1/", spec()), Call(wire.CHAT, {"messages": []})
            )
            return got

    (sent,) = run(go())
    assert "Authorization" not in sent.headers and sent.path == "/v1/chat/completions"


def test_a_streamed_chat_is_relayed_chunk_by_chunk_and_assembled() -> None:
    chunks = [
        chat_chunk({"role": "assistant", "content": "", "refusal": None}),
        chat_chunk({"content": "Hel"}),
        chat_chunk({"content": "lo"}),
        chat_chunk({}, "stop"),
        chat_chunk(None, usage=USAGE),
    ]

    async def go() -> tuple[dict[str, Any], Emitted, list[Received]]:
        emitted = Emitted()
        routes = {"/v1/chat/completions": sse(": keep-alive\n\n", *chunks)}
        async with server(routes) as (http, base, got):
            to = Target(http, f"{base}/v1", spec(maxOutputTokens=32))
            body = {
                "model": "gpt-4o",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": True,
                "stream_options": {"include_obfuscation": False},
                "max_completion_tokens": 1000,
            }
            answer = await OpenAIWire().call(to, Call(wire.CHAT, body), emitted)
            return answer, emitted, got

    answer, emitted, got = run(go())
    assert emitted.items == chunks
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "Hello"}
    assert answer["usage"] == USAGE and answer["object"] == "chat.completion"
    assert got[0].body == {
        "model": "served-model",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_obfuscation": False, "include_usage": True},
        "max_completion_tokens": 32,
    }


def test_an_error_event_in_the_middle_of_a_stream_fails_the_call() -> None:
    error = {
        "error": {
            "object": "error",
            "message": "CUDA out of memory",
            "type": "InternalServerError",
            "code": 500,
        }
    }

    async def go() -> tuple[ProviderError, Emitted]:
        emitted = Emitted()
        routes = {"/v1/chat/completions": sse(chat_chunk({"content": "Hel"}), error, done=False)}
        async with server(routes) as (http, base, _):
            with pytest.raises(ProviderError) as err:
                await OpenAIWire().call(
                    Target(http, f"{base}/v1", spec()),
                    Call(wire.CHAT, {"messages": [], "stream": True}),
                    emitted,
                )
            return err.value, emitted

    err, emitted = run(go())
    assert (err.reason, err.message, err.retryable) == (
        "ProviderUnavailable",
        "CUDA out of memory",
        True,
    )
    assert len(emitted.items) == 1


def test_an_error_answer_is_classified() -> None:
    limited_answer = replying(
        {"error": {"message": "Rate limit reached for requests", "type": "requests"}},
        status=429,
        headers={"Retry-After": "3"},
    )

    async def go(emit: Emitted | None) -> ProviderError:
        async with server({"/v1/chat/completions": limited_answer}) as (http, base, _):
            with pytest.raises(ProviderError) as err:
                await OpenAIWire().call(
                    Target(http, f"{base}/v1", spec()), Call(wire.CHAT, {"messages": []}), emit
                )
            return err.value

    for emit in (None, Emitted()):
        err = run(go(emit))
        assert (err.reason, err.status, err.retry_after) == ("RateLimited", 429, 3.0)
        assert err.message == "Rate limit reached for requests"


@pytest.mark.parametrize(
    ("answer", "what"),
    [
        ("not json", "JSON"),
        ({"choices": []}, "a completion"),
        ([1, 2], "an answer object"),
    ],
)
def test_a_garbled_answer_is_malformed_and_may_be_retried(answer: Any, what: str) -> None:
    async def handle(_: web.Request) -> web.StreamResponse:
        text = answer if isinstance(answer, str) else json.dumps(answer)
        return web.Response(text=text, content_type="application/json")

    async def go() -> ProviderError:
        async with server({"/v1/chat/completions": handle}) as (http, base, _):
            with pytest.raises(ProviderError) as err:
                await OpenAIWire().call(
                    Target(http, f"{base}/v1", spec()), Call(wire.CHAT, {"messages": []})
                )
            return err.value

    err = run(go())
    assert err.reason == "MalformedResponse" and err.retryable and f"not {what}" in err.message


def test_a_garbled_event_is_malformed() -> None:
    async def go() -> ProviderError:
        async with server({"/v1/chat/completions": sse("data: {oops\n\n")}) as (http, base, _):
            with pytest.raises(ProviderError) as err:
                await OpenAIWire().call(
                    Target(http, f"{base}/v1", spec()), Call(wire.CHAT, {"messages": []}), Emitted()
                )
            return err.value

    assert run(go()).reason == "MalformedResponse"


def test_an_unreachable_server_may_be_retried() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now

    async def go() -> ProviderError:
        async with httpio.session(2) as http:
            with pytest.raises(ProviderError) as err:
                await OpenAIWire().call(
                    Target(http, f"http://127.0.0.1:{port}/v1", spec()),
                    Call(wire.CHAT, {"messages": []}),
                )
            return err.value

    err = run(go())
    assert err.reason == "EndpointUnreachable" and err.retryable and str(port) in err.message


def test_a_server_that_does_not_answer_in_time_may_be_retried() -> None:
    async def slow(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(30)
        return web.json_response(CHAT_ANSWER)

    async def go() -> ProviderError:
        async with server({"/v1/chat/completions": slow}) as (http, base, _):
            with pytest.raises(ProviderError) as err:
                await OpenAIWire().call(
                    Target(http, f"{base}/v1", spec(timeoutSeconds=0.2)),
                    Call(wire.CHAT, {"messages": []}),
                )
            return err.value

    err = run(go())
    assert err.reason == "ProviderTimeout" and err.retryable and "0.2s" in err.message


def test_embeddings_are_checked_for_one_vector_per_input() -> None:
    def vectors(count: int) -> dict[str, Any]:
        data = [{"object": "embedding", "index": i, "embedding": [0.1, 0.2]} for i in range(count)]
        return {
            "object": "list",
            "data": data,
            "model": "m",
            "usage": {"prompt_tokens": 2, "total_tokens": 2},
        }

    async def go(count: int) -> dict[str, Any]:
        async with server({"/v1/embeddings": replying(vectors(count))}) as (http, base, got):
            body = {
                "model": "text-embedding-3-small",
                "input": ["a", "b"],
                "encoding_format": "float",
            }
            answer = await OpenAIWire().call(
                Target(http, f"{base}/v1", spec(maxOutputTokens=5)), Call(wire.EMBEDDINGS, body)
            )
            assert got[0].body == {**body, "model": "served-model"}  # no token limit added
            return answer

    assert len(run(go(2))["data"]) == 2
    with pytest.raises(ProviderError) as err:
        run(go(1))
    assert err.value.reason == "MalformedResponse" and "2 embeddings" in err.value.message


def test_a_streamed_completion_is_relayed_and_assembled() -> None:
    def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 1,
            "model": "served-model",
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
        }

    chunks = [
        chunk("This"),
        chunk(" is a test", "stop"),
        {"id": "cmpl-1", "choices": [], "usage": USAGE},
    ]

    async def go() -> tuple[dict[str, Any], Emitted, list[Received]]:
        emitted = Emitted()
        async with server({"/v1/completions": sse(*chunks)}) as (http, base, got):
            body = {"model": "x", "prompt": "Say this is a test", "max_tokens": 7, "stream": True}
            answer = await OpenAIWire().call(
                Target(http, f"{base}/v1", spec()), Call(wire.COMPLETIONS, body), emitted
            )
            return answer, emitted, got

    answer, emitted, got = run(go())
    assert emitted.items == chunks
    assert answer["choices"][0]["text"] == "This is a test" and answer["usage"] == USAGE
    assert got[0].body["stream_options"] == {"include_usage": True}
    assert got[0].body["prompt"] == "Say this is a test" and got[0].body["max_tokens"] == 7


RESPONSE = {
    "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
    "object": "response",
    "created_at": 1741476542,
    "status": "completed",
    "model": "served-model",
    "output": [
        {
            "type": "message",
            "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
            "status": "completed",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "In a peaceful grove...", "annotations": []}
            ],
        }
    ],
    "usage": {"input_tokens": 36, "output_tokens": 87, "total_tokens": 123},
}


def test_a_response_is_forwarded_to_a_server_that_serves_the_responses_api() -> None:
    async def go() -> tuple[dict[str, Any], list[Received]]:
        async with server({"/v1/responses": replying(RESPONSE)}) as (http, base, got):
            body = {"model": "gpt-4.1", "input": "Tell me a story.", "include": [], "store": False}
            answer = await OpenAIWire().call(
                Target(http, f"{base}/v1", spec()), Call(wire.RESPONSES, body)
            )
            return answer, got

    answer, got = run(go())
    assert answer == RESPONSE
    assert got[0].body == {
        "model": "served-model",
        "input": "Tell me a story.",
        "include": [],
        "store": False,
    }


def test_a_streamed_response_relays_its_events_and_ends_with_the_completed_response() -> None:
    events: list[dict[str, Any]] = [
        {
            "type": "response.created",
            "sequence_number": 0,
            "response": {**RESPONSE, "status": "in_progress", "output": []},
        },
        {
            "type": "response.output_text.delta",
            "sequence_number": 1,
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": "In a",
        },
        {"type": "response.completed", "sequence_number": 2, "response": RESPONSE},
    ]

    async def go() -> tuple[dict[str, Any], Emitted, list[Received]]:
        emitted = Emitted()
        async with server({"/v1/responses": sse(*events, done=False)}) as (http, base, got):
            body = {"model": "gpt-4.1", "input": "Tell me a story.", "stream": True}
            answer = await OpenAIWire().call(
                Target(http, f"{base}/v1", spec()), Call(wire.RESPONSES, body), emitted
            )
            return answer, emitted, got

    answer, emitted, got = run(go())
    assert emitted.items == events and answer == RESPONSE
    assert "stream_options" not in got[0].body and got[0].body["stream"] is True


def test_a_streamed_response_that_fails_with_an_error_event_fails_the_call() -> None:
    error = {
        "type": "error",
        "sequence_number": 1,
        "code": "server_error",
        "message": "boom",
        "param": None,
    }

    async def go() -> ProviderError:
        async with server({"/v1/responses": sse(error, done=False)}) as (http, base, _):
            with pytest.raises(ProviderError) as err:
                await OpenAIWire().call(
                    Target(http, f"{base}/v1", spec()),
                    Call(wire.RESPONSES, {"input": "x", "stream": True}),
                    Emitted(),
                )
            return err.value

    failed = run(go())
    assert (failed.reason, failed.message, failed.retryable) == ("ProviderFailed", "boom", False)


# --------------------------------------------------------------------------- Ollama


def ollama_spec(**kw: object) -> FlavorSpec:
    return FlavorSpec.model_validate(
        {"provider": "ollama", "model": "qwen3:8b", "endpoint": "http://ollama:11434", **kw}
    )


def ollama_line(content: str = "", done: bool = False, **extra: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "model": "qwen3:8b",
        "created_at": "2025-10-17T11:28:31.372491Z",
        "message": {"role": "assistant", "content": content},
        "done": done,
    }
    if done:
        line |= {"done_reason": "stop", "prompt_eval_count": 26, "eval_count": 3}
    return {**line, **extra}


def test_ollama_chat_is_translated_both_ways() -> None:
    answer = ollama_line("Hello there", done=True)
    answer["message"]["thinking"] = "Greet back."

    async def go() -> tuple[dict[str, Any], list[Received]]:
        async with server({"/api/chat": replying(answer)}) as (http, base, got):
            body = {
                "model": "gpt-4o",
                "messages": [
                    {"role": "developer", "content": "Be brief."},
                    {"role": "user", "content": "hi"},
                ],
                "temperature": 0.1,
                "max_completion_tokens": 500,
                "response_format": {"type": "json_object"},
                "stream": False,
            }
            out = await OllamaWire().call(
                Target(http, base, ollama_spec(maxOutputTokens=64)), Call(wire.CHAT, body)
            )
            return out, got

    out, got = run(go())
    assert got[0].path == "/api/chat"
    assert got[0].body == {
        "model": "qwen3:8b",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        "stream": False,
        "options": {"temperature": 0.1, "num_predict": 64},
        "format": "json",
    }
    assert out["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello there",
        "reasoning_content": "Greet back.",
    }
    assert out["usage"] == {"prompt_tokens": 26, "completion_tokens": 3, "total_tokens": 29}
    ChatCompletion.model_validate(out)


def test_an_ollama_stream_is_relayed_as_openai_chunks() -> None:
    lines = [ollama_line("Hel"), ollama_line("lo"), ollama_line(done=True)]

    async def go() -> tuple[dict[str, Any], Emitted, list[Received]]:
        emitted = Emitted()
        async with server({"/api/chat": ndjson(*lines)}) as (http, base, got):
            body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
            out = await OllamaWire().call(
                Target(http, base, ollama_spec()), Call(wire.CHAT, body), emitted
            )
            return out, emitted, got

    out, emitted, got = run(go())
    assert got[0].body == {
        "model": "qwen3:8b",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }
    assert [c["choices"][0]["delta"].get("content") for c in emitted.items if c["choices"]] == [
        "Hel",
        "lo",
        None,
    ]
    assert emitted.items[-1]["usage"]["total_tokens"] == 29
    assert out["choices"][0]["message"]["content"] == "Hello"
    assert out["choices"][0]["finish_reason"] == "stop" and out["usage"]["prompt_tokens"] == 26


def test_an_error_line_in_an_ollama_stream_fails_the_call() -> None:
    async def go() -> tuple[ProviderError, Emitted]:
        emitted = Emitted()
        async with server(
            {"/api/chat": ndjson(ollama_line("Hel"), {"error": "out of memory"})}
        ) as (http, base, _):
            with pytest.raises(ProviderError) as err:
                await OllamaWire().call(
                    Target(http, base, ollama_spec()), Call(wire.CHAT, {"messages": []}), emitted
                )
            return err.value, emitted

    err, emitted = run(go())
    assert (err.reason, err.message) == ("ProviderUnavailable", "out of memory")
    assert len(emitted.items) == 1


def test_what_ollama_cannot_say_fails_before_any_call() -> None:
    async def go() -> tuple[ProviderError, list[Received]]:
        async with server({"/api/chat": replying(ollama_line("x", done=True))}) as (
            http,
            base,
            got,
        ):
            body = {"messages": [{"role": "user", "content": "x"}], "logit_bias": {"50256": -100}}
            with pytest.raises(ProviderError) as err:
                await OllamaWire().call(Target(http, base, ollama_spec()), Call(wire.CHAT, body))
            return err.value, got

    err, got = run(go())
    assert got == []
    assert (err.reason, err.retryable, err.client_status) == ("UnsupportedByProvider", False, 400)
    assert err.message.startswith("logit_bias: ")


def test_ollama_completions_go_to_its_own_openai_route() -> None:
    completion = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1,
        "model": "qwen3:8b",
        "choices": [{"text": " world", "index": 0, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }

    async def go() -> tuple[dict[str, Any], list[Received]]:
        async with server({"/v1/completions": replying(completion)}) as (http, base, got):
            body = {"model": "x", "prompt": "hello", "suffix": None, "max_tokens": 999}
            out = await OllamaWire().call(
                Target(http, base, ollama_spec(maxOutputTokens=10)), Call(wire.COMPLETIONS, body)
            )
            return out, got

    out, got = run(go())
    assert out == completion
    assert got[0].path == "/v1/completions"
    assert got[0].body == {"model": "qwen3:8b", "prompt": "hello", "suffix": None, "max_tokens": 10}


def test_ollama_embeddings_are_translated_both_ways() -> None:
    answer = {
        "model": "nomic-embed-text",
        "embeddings": [[0.1, 0.2], [0.3, 0.4]],
        "prompt_eval_count": 4,
    }

    async def go(reply: dict[str, Any]) -> tuple[dict[str, Any], list[Received]]:
        async with server({"/api/embed": replying(reply)}) as (http, base, got):
            body = {"model": "x", "input": ["a", "b"], "dimensions": 2, "encoding_format": "float"}
            spec_ = ollama_spec(model="nomic-embed-text")
            out = await OllamaWire().call(Target(http, base, spec_), Call(wire.EMBEDDINGS, body))
            return out, got

    out, got = run(go(answer))
    assert got[0].body == {"model": "nomic-embed-text", "input": ["a", "b"], "dimensions": 2}
    assert [d["embedding"] for d in out["data"]] == [[0.1, 0.2], [0.3, 0.4]]
    assert out["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    for broken in ({"model": "m"}, {"embeddings": [[0.1]]}):
        with pytest.raises(ProviderError) as err:
            run(go(broken))
        assert err.value.reason == "MalformedResponse"


def test_ollama_answers_a_response_through_chat() -> None:
    async def go() -> tuple[dict[str, Any], list[Received]]:
        async with server({"/api/chat": replying(ollama_line("Once upon a time.", done=True))}) as (
            http,
            base,
            got,
        ):
            body = {
                "model": "gpt-4.1",
                "instructions": "Be brief.",
                "input": "Tell me a story.",
                "max_output_tokens": 100,
                "store": False,
            }
            out = await OllamaWire().call(
                Target(http, base, ollama_spec()), Call(wire.RESPONSES, body)
            )
            return out, got

    out, got = run(go())
    assert got[0].body == {
        "model": "qwen3:8b",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Tell me a story."},
        ],
        "stream": False,
        "options": {"num_predict": 100},
    }
    assert out["object"] == "response" and out["status"] == "completed"
    assert out["output"][0]["content"][0]["text"] == "Once upon a time."
    assert out["usage"]["input_tokens"] == 26 and out["usage"]["output_tokens"] == 3
    assert out["instructions"] == "Be brief." and out["max_output_tokens"] == 100
    # The openai SDK reads it.
    parsed = Response.model_validate(out)
    assert parsed.output_text == "Once upon a time." and parsed.status == "completed"


def test_ollama_streams_a_response_as_its_events() -> None:
    lines = [ollama_line("Once"), ollama_line(" upon"), ollama_line(done=True)]

    async def go() -> tuple[dict[str, Any], Emitted]:
        emitted = Emitted()
        async with server({"/api/chat": ndjson(*lines)}) as (http, base, _):
            body = {"input": "Tell me a story.", "stream": True}
            out = await OllamaWire().call(
                Target(http, base, ollama_spec()), Call(wire.RESPONSES, body), emitted
            )
            return out, emitted

    out, emitted = run(go())
    assert [e["type"] for e in emitted.items] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in emitted.items] == list(range(10))
    assert emitted.items[-1]["response"] == json.loads(json.dumps(out))
    assert out["output"][0]["content"][0]["text"] == "Once upon"
    assert out["usage"]["total_tokens"] == 29 and out["model"] == "qwen3:8b"


def test_a_responses_field_chat_cannot_carry_fails_before_any_call() -> None:
    async def go() -> ProviderError:
        async with server({"/api/chat": replying(ollama_line("x", done=True))}) as (
            http,
            base,
            got,
        ):
            body = {"input": "more", "previous_response_id": "resp_1"}
            with pytest.raises(ProviderError) as err:
                await OllamaWire().call(
                    Target(http, base, ollama_spec()), Call(wire.RESPONSES, body)
                )
            assert got == []
            return err.value

    err = run(go())
    assert err.reason == "UnsupportedByProvider" and err.message.startswith(
        "previous_response_id: "
    )
