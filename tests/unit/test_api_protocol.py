"""Requests map onto job specs, and every error leaves in the OpenAI envelope."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from llmloom.api import errors
from llmloom.api.errors import APIError
from llmloom.api.protocol import ChatCompletionRequest


def test_parameters_follow_openai_semantics() -> None:
    req = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [{"role": "developer", "content": "be brief"}],
            "max_tokens": 100,
            "max_completion_tokens": 20,
            "stop": "\n",
        }
    )
    params = req.parameters()
    assert params is not None and params.max_tokens == 20 and params.stop == ["\n"]
    assert req.messages[0].to_resource().role == "system"


def test_no_parameters_means_none() -> None:
    req = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    )
    assert req.parameters() is None


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
        return {"ok": "yes"}

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


def test_unknown_field_is_400(client: TestClient) -> None:
    r = client.post(
        "/chat",
        json={"model": "m", "messages": [{"role": "user", "content": "x"}], "temprature": 1},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "temprature"


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
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 3}
    asked = ChatCompletionRequest.model_validate(body).parameters()
    assert asked is not None and asked.wire() == {"choices": 3}
    r = client.post("/chat", json=body | {"stream": True})
    assert r.status_code == 400 and "streamed" in r.json()["error"]["message"]
    assert client.post("/chat", json=body | {"n": 17}).status_code == 400


def test_response_format_reaches_the_job_and_text_is_the_default() -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    schema = {"name": "pick", "schema": {"type": "object"}}
    asked = ChatCompletionRequest.model_validate(
        base | {"response_format": {"type": "json_schema", "json_schema": schema}}
    ).parameters()
    assert asked is not None and asked.wire() == {
        "responseFormat": {"type": "json_schema", "jsonSchema": schema}
    }
    text = {"response_format": {"type": "text"}}
    assert ChatCompletionRequest.model_validate(base | text).parameters() is None
    with pytest.raises(ValueError, match="json_schema"):
        ChatCompletionRequest.model_validate(base | {"response_format": {"type": "json_schema"}})
