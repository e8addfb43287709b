"""Provider errors become reasons a person can act on; requests carry the flavor's limits."""

from __future__ import annotations

import pytest

from llmloom.httpio import Reply
from llmloom.resources import FlavorSpec, Message, Parameters, ResponseFormat, Retry
from llmloom.worker.calls import backoff, embedding_batches, merged_embeddings
from llmloom.worker.providers import chat_body, classify, from_ollama, ollama_body, retry_after


def resp(code: int, body: object) -> Reply:
    return Reply.of_json(code, body)


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
    err = classify(Reply(502, b"<html>bad gateway</html>"))
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


def test_retry_after_in_seconds_or_as_a_date() -> None:
    import email.utils
    import time

    assert retry_after("3") == 3.0
    assert retry_after(None) is None and retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < (retry_after(later) or 0) <= 30
    err = classify(Reply.of_json(429, {"error": {"message": "slow down"}}, {"Retry-After": "7"}))
    assert err.retry_after == 7.0 and err.retryable


def test_backoff_doubles_with_jitter_within_the_cap_and_honours_retry_after() -> None:
    retry = Retry(attempts=5, min_delay_seconds=1, max_delay_seconds=5)
    for attempt, ceiling in [(0, 1), (1, 2), (2, 4), (3, 5), (4, 5)]:
        delays = [backoff(retry, attempt, None) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert backoff(retry, 0, 12.0) == 12.0


def test_ollama_wire_maps_options_and_answers() -> None:
    body = ollama_body(
        spec(),
        [Message(role="user", content="hi")],
        Parameters(temperature=0.2, max_tokens=5, stop=["x"]),
    )
    assert body == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
        "options": {"temperature": 0.2, "num_predict": 5, "stop": ["x"]},
    }
    answer = from_ollama(
        {
            "model": "llama3",
            "message": {"role": "assistant", "content": "yo"},
            "done_reason": "length",
            "prompt_eval_count": 7,
            "eval_count": 2,
        },
        "m",
    )
    assert answer["choices"][0]["message"]["content"] == "yo"
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}


def test_a_json_answer_is_asked_of_each_wire_in_its_own_words() -> None:
    spec = FlavorSpec(provider="ollama", model="m", endpoint="http://x")
    msgs = [Message(role="user", content="hi")]
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    as_schema = Parameters(
        response_format=ResponseFormat(
            type="json_schema", json_schema={"name": "n", "schema": schema, "strict": True}
        )
    )
    # OpenAI wire (vLLM, llama.cpp): OpenAI's own response_format, passed as is.
    assert chat_body(spec, msgs, as_schema)["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "n", "schema": schema, "strict": True},
    }
    # Ollama: "format" is the schema itself, or "json" for any JSON object.
    assert ollama_body(spec, msgs, as_schema)["format"] == schema
    any_json = Parameters(response_format=ResponseFormat(type="json_object"))
    assert ollama_body(spec, msgs, any_json)["format"] == "json"
    assert "format" not in ollama_body(spec, msgs, None)


def test_long_embedding_lists_go_in_batches_and_come_back_as_one_answer() -> None:
    texts = [f"t{i}" for i in range(600)]
    batches = embedding_batches(texts)
    assert [len(b) for b in batches] == [256, 256, 88]
    assert [t for b in batches for t in b] == texts

    def answer(part: list[str]) -> dict[str, object]:
        data = [{"index": i, "embedding": [float(t[1:])]} for i, t in enumerate(part)]
        usage = {"prompt_tokens": len(part), "total_tokens": len(part)}
        return {"object": "list", "model": "m", "data": data, "usage": usage}

    merged = merged_embeddings([answer(b) for b in batches])
    assert [d["index"] for d in merged["data"]] == list(range(600))
    assert [d["embedding"] for d in merged["data"]] == [[float(i)] for i in range(600)]
    assert merged["usage"] == {"prompt_tokens": 600, "total_tokens": 600}
    assert embedding_batches([]) == [[]]  # an empty request is still one call
