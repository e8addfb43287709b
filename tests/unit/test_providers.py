"""Provider errors become reasons a person can act on; requests carry the flavor's limits."""

from __future__ import annotations

import httpx
import pytest

from llmloom.resources import FlavorSpec, Message, Parameters
from llmloom.worker.providers import chat_body, classify


def resp(code: int, body: object) -> httpx.Response:
    return httpx.Response(code, json=body)


@pytest.mark.parametrize(
    ("code", "body", "reason", "retryable"),
    [
        (
            400,
            {"error": {"message": "This model's maximum context length is 4096 tokens"}},
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
        (400, {"error": {"message": "temperature must be <= 2"}}, "ProviderRejected", False),
        (401, {"error": {"message": "Incorrect API key provided"}}, "ProviderUnauthorized", False),
        (404, {"error": {"message": "The model 'x' does not exist"}}, "ModelNotFound", False),
        (429, {"error": {"message": "Rate limit reached"}}, "RateLimited", True),
        (503, {"detail": "overloaded"}, "ProviderUnavailable", True),
    ],
)
def test_classify(code: int, body: object, reason: str, retryable: bool) -> None:
    err = classify(resp(code, body))
    assert (err.reason, err.retryable, err.status) == (reason, retryable, code)


def test_provider_message_is_kept() -> None:
    err = classify(resp(401, {"error": {"message": "Incorrect API key provided"}}))
    assert err.message == "Incorrect API key provided"


def test_non_json_error_body_is_kept_as_text() -> None:
    err = classify(httpx.Response(502, text="<html>bad gateway</html>"))
    assert err.reason == "ProviderUnavailable" and "bad gateway" in err.message


def spec(**kw: object) -> FlavorSpec:
    return FlavorSpec.model_validate(
        {"provider": "openai", "model": "m", "endpoint": "http://x/v1", **kw}
    )


def test_chat_body_maps_parameters_to_the_wire() -> None:
    body = chat_body(
        spec(),
        [Message(role="user", content="hi")],
        Parameters(temperature=0, max_tokens=10, stop=["\n"]),
    )
    assert body == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0,
        "max_tokens": 10,
        "stop": ["\n"],
    }


def test_flavor_caps_output_tokens() -> None:
    msgs = [Message(role="user", content="hi")]
    assert chat_body(spec(maxOutputTokens=64), msgs, None)["max_tokens"] == 64
    assert chat_body(spec(maxOutputTokens=64), msgs, Parameters(max_tokens=500))["max_tokens"] == 64
    assert chat_body(spec(maxOutputTokens=64), msgs, Parameters(max_tokens=5))["max_tokens"] == 5
