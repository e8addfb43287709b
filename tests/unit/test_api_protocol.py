"""Requests are read for what LLMLoom acts on and forwarded whole; what OpenAI would refuse
is refused at the door, and every error leaves in the OpenAI envelope."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from llmloom.api import errors
from llmloom.api.errors import APIError
from llmloom.api.protocol import (
    MAX_INPUTS,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ResponsesRequest,
)

HI = [{"role": "user", "content": "x"}]


def test_a_chat_request_is_read_for_what_llmloom_acts_on_and_keeps_the_rest() -> None:
    req = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "https://x/a.png"}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                    "refusal": None,
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "42"},
            ],
            "max_tokens": 100,
            "max_completion_tokens": 20,
            "stop": "\n",
            "stream": True,
            "stream_options": {"include_usage": True, "include_obfuscation": False},
            "top_k": 20,  # a server's own field, through the SDK's extra_body
            "chat_template_kwargs": {"enable_thinking": False},
        }
    )
    assert (req.max_tokens, req.max_completion_tokens, req.stop) == (100, 20, "\n")
    assert req.stream and req.stream_options is not None and req.stream_options.include_usage
    assert req.model_extra == {"top_k": 20, "chat_template_kwargs": {"enable_thinking": False}}
    developer, user, assistant, tool = req.messages
    assert developer.role == "developer" and developer.content == "be brief"
    assert isinstance(user.content, list) and [p.type for p in user.content] == [
        "text",
        "image_url",
    ]
    assert user.content[1].model_extra == {"image_url": {"url": "https://x/a.png"}}
    assert assistant.tool_calls is not None and assistant.tool_calls[0]["id"] == "call_1"
    assert assistant.model_extra == {"refusal": None}
    assert tool.tool_call_id == "call_1"


def test_a_plain_chat_request_has_openais_defaults() -> None:
    req = ChatCompletionRequest.model_validate({"model": "m", "messages": HI})
    assert (req.n, req.stream, req.stream_options, req.max_tokens) == (1, False, None, None)
    assert req.model_extra == {}


def test_completions_take_text_texts_or_token_ids() -> None:
    for prompt in ("Say this is a test", ["a", "b"], [1, 2, 3], [[1, 2], [3]]):
        req = CompletionRequest.model_validate({"model": "m", "prompt": prompt, "best_of": 2})
        assert req.prompt == prompt and req.model_extra == {"best_of": 2}
    with pytest.raises(ValueError, match="streamed"):
        CompletionRequest.model_validate({"model": "m", "prompt": "x", "n": 2, "stream": True})
    with pytest.raises(ValueError):
        CompletionRequest.model_validate({"model": "m", "prompt": {"text": "x"}})


def test_responses_take_text_or_items_and_keep_the_rest() -> None:
    body = {
        "model": "gpt-4.1",
        "input": [{"role": "user", "content": "hi"}],
        "include": [],
        "tools": [],
        "reasoning": {"effort": "low"},
        "stream": True,
    }
    req = ResponsesRequest.model_validate(body)
    assert req.stream and req.input == [{"role": "user", "content": "hi"}]
    assert req.model_extra == {"include": [], "reasoning": {"effort": "low"}}
    assert ResponsesRequest.model_validate({"model": "m", "input": "hi"}).input == "hi"
    with pytest.raises(ValueError):
        ResponsesRequest.model_validate({"model": "m"})
    with pytest.raises(ValueError):
        ResponsesRequest.model_validate({"model": "m", "input": "x", "max_output_tokens": 0})


def test_embeddings_take_text_texts_or_token_ids_within_openais_limits() -> None:
    req = EmbeddingRequest.model_validate(
        {"model": "m", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 256}
    )
    assert req.texts() == ["a", "b"] and req.encoding_format == "base64"
    assert EmbeddingRequest.model_validate({"model": "m", "input": "a"}).texts() == ["a"]
    assert EmbeddingRequest.model_validate({"model": "m", "input": "a"}).encoding_format == "float"
    tokens = EmbeddingRequest.model_validate({"model": "m", "input": [15339, 1917]})
    with pytest.raises(ValueError, match="token arrays"):
        tokens.texts()
    # Many token ids are one input; many texts are not.
    EmbeddingRequest.model_validate({"model": "m", "input": [1] * (MAX_INPUTS + 1)})
    refused: list[Any] = [
        "",
        [],
        ["x"] * (MAX_INPUTS + 1),
        [[1, 2], []],
    ]
    for value in refused:
        with pytest.raises(ValueError):
            EmbeddingRequest.model_validate({"model": "m", "input": value})
    with pytest.raises(ValueError):
        EmbeddingRequest.model_validate({"model": "m", "input": "x", "encoding_format": "int8"})


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    errors.install(app)

    @app.post("/chat")
    async def chat(request: ChatCompletionRequest) -> dict[str, str]:
        if request.model == "missing":
            raise APIError(404, "no such model", param="model", code="model_not_found")
        if request.model == "boom":
            raise RuntimeError("bug")
        return {"ok": "yes", "extra": ",".join(sorted(request.model_extra or {}))}

    return TestClient(app, raise_server_exceptions=False)


def test_empty_messages_is_400_with_param(client: TestClient) -> None:
    r = client.post("/chat", json={"model": "m", "messages": []})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "messages" and err["type"] == "invalid_request_error"
    assert "at least 1" in err["message"]


def test_malformed_json_is_400(client: TestClient) -> None:
    r = client.post("/chat", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()


def test_an_unknown_field_is_forwarded_not_refused(client: TestClient) -> None:
    # vLLM's and Ollama's own fields reach the server through the SDKs' extra_body.
    r = client.post("/chat", json={"model": "m", "messages": HI, "top_k": 20, "min_p": 0.05})
    assert r.status_code == 200 and r.json() == {"ok": "yes", "extra": "min_p,top_k"}


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("temperature", 3, "temperature"),
        ("top_p", 1.5, "top_p"),
        ("max_tokens", 0, "max_tokens"),
        ("max_completion_tokens", -1, "max_completion_tokens"),
        ("top_logprobs", 21, "top_logprobs"),
        ("presence_penalty", -3, "presence_penalty"),
        ("logprobs", "maybe", "logprobs"),
        ("stop", ["a", "b", "c", "d", "e"], "stop"),
        ("messages", [{"role": "robot", "content": "x"}], "messages.0.role"),
        ("messages", [{"content": "x"}], "messages.0.role"),
        ("messages", [{"role": "user", "content": [{"text": "x"}]}], "messages.0.content"),
        ("response_format", {"type": "xml"}, "response_format.type"),
        ("model", "", "model"),
    ],
)
def test_a_value_openai_would_refuse_is_400_naming_the_field(
    client: TestClient, field: str, value: Any, param: str
) -> None:
    r = client.post("/chat", json={"model": "m", "messages": HI, field: value})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"].startswith(param) and err["type"] == "invalid_request_error"
    assert err["code"] == "invalid_request" and err["message"].startswith(err["param"])


def test_api_error_keeps_status_and_code(client: TestClient) -> None:
    r = client.post(
        "/chat", json={"model": "missing", "messages": [{"role": "user", "content": "x"}]}
    )
    assert r.status_code == 404
    assert r.json() == {
        "error": {
            "message": "no such model",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


def test_unexpected_error_is_500_envelope_without_details(client: TestClient) -> None:
    r = client.post("/chat", json={"model": "boom", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "server_error" and "bug" not in r.text


def test_several_choices_are_asked_for_but_never_streamed(client: TestClient) -> None:
    body = {"model": "m", "messages": HI, "n": 3}
    assert ChatCompletionRequest.model_validate(body).n == 3
    assert client.post("/chat", json=body).status_code == 200
    r = client.post("/chat", json=body | {"stream": True})
    assert r.status_code == 400 and "streamed" in r.json()["error"]["message"]
    assert client.post("/chat", json=body | {"n": 17}).status_code == 400
    assert client.post("/chat", json=body | {"n": 0}).status_code == 400


def test_a_response_format_schema_comes_with_its_type() -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    schema = {"name": "pick", "schema": {"type": "object"}, "strict": True}
    asked = ChatCompletionRequest.model_validate(
        base | {"response_format": {"type": "json_schema", "json_schema": schema}}
    )
    assert asked.response_format is not None and asked.response_format.json_schema == schema
    text = ChatCompletionRequest.model_validate(base | {"response_format": {"type": "text"}})
    assert text.response_format is not None and text.response_format.type == "text"
    with pytest.raises(ValueError, match="json_schema"):
        ChatCompletionRequest.model_validate(base | {"response_format": {"type": "json_schema"}})
    with pytest.raises(ValueError, match="json_schema"):
        ChatCompletionRequest.model_validate(
            base | {"response_format": {"type": "json_object", "json_schema": schema}}
        )
