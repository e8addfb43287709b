"""The Ollama server's wire, field for field, on fake backends; and the worker's Ollama
client and readiness against it, including failures a real model rarely produces."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import uvicorn
from fastapi import FastAPI, Response
from fastapi.testclient import TestClient

from devstack.ollamaserver import CHAT_MODEL, EMBED_MODEL, OllamaError, app
from llmloom import httpio, wire
from llmloom.resources import FlavorSpec
from llmloom.worker.bodies import Call
from llmloom.worker.providers import OllamaWire, ProviderError, Target
from llmloom.worker.readiness import wait_for_model

GO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
METRICS = [
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
]
USAGE = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
TIMINGS = {"prompt_ms": 1.5, "predicted_ms": 3.25}


class FakeChat:
    """Answers "Hello there" as llama.cpp's OpenAI wire would; records the requests."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail_after = fail_after

    async def complete(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((path, body))
        choice = {"index": 0, "message": {"content": "Hello there"}, "finish_reason": "stop"}
        return {"choices": [choice], "usage": USAGE, "timings": TIMINGS}

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        self.calls.append((path, body))
        yield {"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]}
        for i, word in enumerate(["Hello", " there"]):
            if i == self.fail_after:
                raise OllamaError(500, "out of memory")
            yield {"choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
        yield {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
        yield {"choices": [], "usage": USAGE, "timings": TIMINGS}


class FakeEmbed:
    def __init__(self) -> None:
        self.loads = 0

    def load(self) -> None:
        self.loads += 1

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        return [[0.6, 0.8, 0.0] for _ in texts], 4 * len(texts)


@pytest.fixture
def fake() -> FakeChat:
    return FakeChat()


@pytest.fixture
def client(fake: FakeChat) -> Iterator[TestClient]:
    with TestClient(app(fake, FakeEmbed())) as c:
        yield c


def chat(client: TestClient, **body: Any) -> Any:
    return client.post("/api/chat", json={"model": CHAT_MODEL, **body})


HI = [{"role": "user", "content": "hi"}]


def test_a_chat_answer_has_ollamas_fields_in_ollamas_order(client: TestClient) -> None:
    resp = chat(client, messages=HI, stream=False)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json; charset=utf-8"
    body = resp.json()
    assert list(body) == ["model", "created_at", "message", "done", "done_reason", *METRICS]
    assert body["model"] == CHAT_MODEL and GO_TIME.match(body["created_at"])
    assert body["message"] == {"role": "assistant", "content": "Hello there"}
    assert (body["done"], body["done_reason"]) == (True, "stop")
    assert (body["prompt_eval_count"], body["eval_count"]) == (7, 2)
    assert (body["prompt_eval_duration"], body["eval_duration"]) == (1_500_000, 3_250_000)
    assert body["total_duration"] >= body["load_duration"] > 0


def test_chat_streams_ndjson_unless_told_not_to(client: TestClient) -> None:
    resp = chat(client, messages=HI)  # no "stream": Ollama streams by default
    assert resp.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in resp.text.splitlines()]
    assert [list(line) for line in lines[:-1]] == [["model", "created_at", "message", "done"]] * 2
    assert [line["message"]["content"] for line in lines] == ["Hello", " there", ""]
    final = lines[-1]
    assert list(final) == ["model", "created_at", "message", "done", "done_reason", *METRICS]
    assert (final["done"], final["done_reason"], final["eval_count"]) == (True, "length", 2)


def test_options_and_format_become_llamacpp_parameters(client: TestClient, fake: FakeChat) -> None:
    options = {"num_predict": 5, "seed": 3, "stop": ["\n"], "temperature": 0, "mirostat": 2}
    chat(client, messages=HI, stream=False, options=options, format="json")
    path, body = fake.calls[-1]
    assert path == "/chat/completions" and body["messages"] == HI
    assert body["max_tokens"] == 5 and body["seed"] == 3 and body["stop"] == ["\n"]
    assert body["temperature"] == 0 and "mirostat" not in body  # unknown options are ignored
    assert body["response_format"] == {"type": "json_object"}
    # Ollama's defaults, not llama.cpp's, when a request says nothing.
    chat(client, messages=HI, stream=False)
    _, body = fake.calls[-1]
    assert (body["temperature"], body["top_k"], body["top_p"], body["min_p"]) == (0.8, 40, 0.9, 0)
    assert "seed" not in body and "max_tokens" not in body  # seed -1, num_predict -1
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}}
    chat(client, messages=HI, stream=False, format=schema)
    assert fake.calls[-1][1]["response_format"]["json_schema"]["schema"] == schema


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        ("/api/chat", {"model": "llama3", "messages": HI}, 404, "model 'llama3' not found"),
        (
            "/api/embed",
            {"model": "nomic-embed-text", "input": "x"},
            404,
            'model "nomic-embed-text" not found, try pulling it first',
        ),
        ("/api/show", {"model": "llama3"}, 404, "model 'llama3' not found"),
        ("/api/chat", {"messages": HI}, 400, "model is required"),
        (
            "/api/chat",
            {"model": EMBED_MODEL, "messages": HI},
            400,
            f'"{EMBED_MODEL}" does not support chat',
        ),
        (
            "/api/chat",
            {"model": CHAT_MODEL, "messages": HI, "options": {"stop": "\n"}},
            500,
            'option "stop" must be of type array',
        ),
        (
            "/api/chat",
            {"model": CHAT_MODEL, "messages": HI, "think": True},
            400,
            f'"{CHAT_MODEL}" does not support thinking',
        ),
        ("/api/embed", {"model": EMBED_MODEL, "input": [1, 2]}, 400, "invalid input type"),
    ],
    ids=[
        "chat-missing-model",
        "embed-missing-model",
        "show-missing-model",
        "no-model",
        "chat-on-embedder",
        "stop-not-a-list",
        "think",
        "embed-numbers",
    ],
)
def test_errors_carry_ollamas_status_and_message(
    client: TestClient, path: str, body: dict[str, Any], status: int, error: str
) -> None:
    resp = client.post(path, json=body)
    assert (resp.status_code, resp.json()) == (status, {"error": error})


def test_requests_ollama_cannot_read(client: TestClient) -> None:
    assert client.post("/api/chat").json() == {"error": "missing request body"}
    resp = client.get("/api/nothing")
    assert (resp.status_code, resp.text) == (404, "404 page not found")
    assert client.get("/").text == "Ollama is running"
    assert client.get("/api/version").json() == {"version": "0.12.6"}


def test_empty_messages_load_the_model(client: TestClient, fake: FakeChat) -> None:
    body = chat(client, messages=[]).json()
    assert body["done_reason"] == "load" and body["message"] == {"role": "assistant", "content": ""}
    assert chat(client, messages=[], keep_alive=0).json()["done_reason"] == "unload"
    assert fake.calls == []


def test_embed_answers_a_string_or_a_list_and_shortens_vectors(client: TestClient) -> None:
    one = client.post("/api/embed", json={"model": "all-minilm", "input": "x"}).json()
    assert list(one) == [
        "model",
        "embeddings",
        "total_duration",
        "load_duration",
        "prompt_eval_count",
    ]
    assert one["model"] == "all-minilm" and one["embeddings"] == [[0.6, 0.8, 0.0]]
    assert one["prompt_eval_count"] == 4
    two = client.post("/api/embed", json={"model": EMBED_MODEL, "input": ["a", "b"]}).json()
    assert len(two["embeddings"]) == 2 and two["prompt_eval_count"] == 8
    short = client.post("/api/embed", json={"model": EMBED_MODEL, "input": "x", "dimensions": 1})
    assert short.json()["embeddings"] == [[1.0]]  # cut, then unit length again
    empty = client.post("/api/embed", json={"model": EMBED_MODEL, "input": []}).json()
    assert empty == {"model": EMBED_MODEL, "embeddings": []}


def test_pulling_installs_a_library_model_and_reports_progress(fake: FakeChat) -> None:
    with TestClient(app(fake, FakeEmbed(), installed=[])) as client:
        assert client.get("/api/tags").json() == {"models": []}
        assert chat(client, messages=HI).status_code == 404
        lines = [
            json.loads(x)
            for x in client.post("/api/pull", json={"model": CHAT_MODEL}).text.splitlines()
        ]
        statuses = [line["status"] for line in lines]
        assert statuses[0] == "pulling manifest" and statuses[-3:] == [
            "verifying sha256 digest",
            "writing manifest",
            "success",
        ]
        progress = [line for line in lines if "digest" in line]
        assert progress[-1]["completed"] == progress[-1]["total"] > 0
        assert "completed" not in progress[0]  # Go leaves out a zero
        (model,) = client.get("/api/tags").json()["models"]
        assert (model["name"], model["model"]) == (CHAT_MODEL, CHAT_MODEL)
        assert list(model) == ["name", "model", "modified_at", "size", "digest", "details"]
        assert len(model["digest"]) == 64 and GO_TIME.match(model["modified_at"])
        assert chat(client, messages=HI, stream=False).status_code == 200

        unknown = client.post("/api/pull", json={"model": "llama3"})
        assert [json.loads(x) for x in unknown.text.splitlines()] == [
            {"status": "pulling manifest"},
            {"error": "pull model manifest: file does not exist"},
        ]
        quiet = client.post("/api/pull", json={"model": "llama3", "stream": False})
        assert (quiet.status_code, quiet.json()) == (
            500,
            {"error": "pull model manifest: file does not exist"},
        )
        done = client.post("/api/pull", json={"model": "all-minilm", "stream": False})
        assert done.json() == {"status": "success"}


def test_show_describes_an_installed_model(client: TestClient) -> None:
    body = client.post("/api/show", json={"model": CHAT_MODEL}).json()
    assert body["capabilities"] == ["completion"] and body["details"]["family"] == "llama"
    assert body["model_info"]["llama.context_length"] == 8192
    assert "<|im_start|>" in body["template"]
    embedder = client.post("/api/show", json={"name": "all-minilm"}).json()
    assert embedder["capabilities"] == ["embedding"]


# ----------------------------------------------------------------- the worker's client


def flavor() -> FlavorSpec:
    return FlavorSpec.model_validate(
        {"provider": "ollama", "model": CHAT_MODEL, "endpoint": "http://ollama"}
    )


@contextlib.asynccontextmanager
async def against(server: Any) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    """The app served on a loopback socket in this process (the worker's HTTP client
    speaks to sockets only), and a session to call it with: (session, base URL)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()  # connections wait in the backlog until the server starts accepting
    config = uvicorn.Config(server, log_level="warning", lifespan="off")
    serving = uvicorn.Server(config)
    task = asyncio.create_task(serving.serve(sockets=[sock]))
    try:
        async with httpio.session(8) as http:
            yield http, f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        serving.should_exit = True
        await task


def test_the_worker_reads_ollamas_answers_and_counts() -> None:
    async def run() -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
        emitted: list[dict[str, Any]] = []

        async def emit(chunk: dict[str, Any]) -> None:
            emitted.append(chunk)

        async with against(app(FakeChat(), FakeEmbed())) as (http, base):
            body = {"model": "gpt-4o-mini", "messages": HI, "max_tokens": 4}
            to = Target(http, base, flavor())
            plain = await OllamaWire().call(to, Call(wire.CHAT, body))
            streamed = await OllamaWire().call(to, Call(wire.CHAT, {**body, "stream": True}), emit)
            spec = FlavorSpec.model_validate(
                {"provider": "ollama", "model": EMBED_MODEL, "endpoint": base}
            )
            vectors = await OllamaWire().call(
                Target(http, base, spec), Call(wire.EMBEDDINGS, {"input": ["a", "b"]})
            )
        return plain, streamed, emitted, vectors

    plain, streamed, emitted, vectors = asyncio.run(run())
    assert plain["choices"][0]["message"]["content"] == "Hello there"
    assert plain["usage"] == USAGE and plain["model"] == CHAT_MODEL
    assert streamed["choices"][0]["message"]["content"] == "Hello there"
    assert streamed["choices"][0]["finish_reason"] == "length" and streamed["usage"] == USAGE
    assert [c["choices"][0]["delta"].get("content") for c in emitted if c["choices"]] == [
        "Hello",
        " there",
        None,  # the done line carries no text: its chunk only finishes
    ]
    assert emitted[0]["choices"][0]["delta"]["role"] == "assistant"
    assert emitted[-2]["choices"][0]["finish_reason"] == "length"
    assert emitted[-1]["usage"] == USAGE and emitted[-1]["choices"] == []
    assert [d["embedding"] for d in vectors["data"]] == [[0.6, 0.8, 0.0]] * 2
    assert vectors["usage"] == {"prompt_tokens": 8, "total_tokens": 8}


def test_the_ollama_server_reads_what_the_worker_sends(fake: FakeChat) -> None:
    """The translated request, sampling options included, reaches the model as llama.cpp
    parameters: the two ends of the dev stack's Ollama agree field by field."""

    async def run() -> None:
        async with against(app(fake, FakeEmbed())) as (http, base):
            body = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "developer", "content": "Be brief."}, *HI],
                "temperature": 0.1,
                "top_p": 0.5,
                "seed": 3,
                "stop": "\n",
                "max_completion_tokens": 9,
                "response_format": {"type": "json_object"},
            }
            await OllamaWire().call(Target(http, base, flavor()), Call(wire.CHAT, body))

    asyncio.run(run())
    path, sent = fake.calls[-1]
    assert path == "/chat/completions"
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, *HI]
    assert (sent["temperature"], sent["top_p"], sent["seed"]) == (0.1, 0.5, 3)
    assert (sent["stop"], sent["max_tokens"]) == (["\n"], 9)
    assert sent["response_format"] == {"type": "json_object"}


def test_a_failure_in_the_middle_of_an_ollama_stream_fails_the_call() -> None:
    """Ollama reports it as an {"error"} line after a 200; the answer so far is not
    an answer."""

    async def run() -> list[dict[str, Any]]:
        emitted: list[dict[str, Any]] = []

        async def emit(chunk: dict[str, Any]) -> None:
            emitted.append(chunk)

        async with against(app(FakeChat(fail_after=1), FakeEmbed())) as (http, base):
            with pytest.raises(ProviderError) as err:
                await OllamaWire().call(
                    Target(http, base, flavor()),
                    Call(wire.CHAT, {"messages": HI, "stream": True}),
                    emit,
                )
        assert err.value.reason == "ProviderUnavailable" and err.value.message == "out of memory"
        return emitted

    assert [c["choices"][0]["delta"]["content"] for c in asyncio.run(run())] == ["Hello"]


def test_a_waiting_worker_pulls_its_model_and_refuses_one_the_library_lacks() -> None:
    server = app(FakeChat(), FakeEmbed(), installed=[])

    async def run() -> None:
        async with against(server) as (http, base):
            await wait_for_model(http, "ollama", base, "smollm2:135m", 5)
            async with http.get(f"{base}/api/tags") as resp:
                tags = await resp.json()
            assert [m["name"] for m in tags["models"]] == [CHAT_MODEL]
            with pytest.raises(RuntimeError, match="pull model manifest: file does not exist"):
                await wait_for_model(http, "ollama", base, "llama3", 5)

    asyncio.run(run())


def test_an_ollama_stream_cut_before_its_done_line_is_not_an_answer() -> None:
    line = {"model": CHAT_MODEL, "message": {"role": "assistant", "content": "Hel"}, "done": False}
    cut = FastAPI()

    @cut.post("/api/chat")
    def chat() -> Response:
        return Response(json.dumps(line) + "\n", media_type="application/x-ndjson")

    async def run() -> None:
        async def emit(chunk: dict[str, Any]) -> None:
            pass

        async with against(cut) as (http, base):
            call = Call(wire.CHAT, {"messages": HI, "stream": True})
            await OllamaWire().call(Target(http, base, flavor()), call, emit)

    with pytest.raises(ProviderError) as err:
        asyncio.run(run())
    assert err.value.reason == "MalformedResponse" and err.value.retryable
