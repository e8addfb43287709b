"""What a job sends to its model server: a job written by a person (kubectl, GitOps,
/v1/jobs) as the OpenAI body it stands for, and a request the API took as the client sent
it."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any, cast

import pytest

from llmloom import wire
from llmloom.resources import (
    ContentPart,
    ImageUrl,
    LLMJob,
    LLMJobSpec,
    Message,
    Parameters,
    Tool,
    ToolChoice,
)
from llmloom.worker.bodies import (
    Call,
    chat_body,
    job_call,
    messages_call,
    openai_message,
    parameters_body,
    spec_call,
)
from llmloom.worker.deps import Deps, JobFailed


def spec(**fields: Any) -> LLMJobSpec:
    """A spec as the API server stores it (camelCase)."""
    return LLMJobSpec.model_validate({"flavor": "small", **fields})


# --------------------------------------------------------------------------- messages


def test_a_message_of_text() -> None:
    assert openai_message(Message(role="user", content="hi")) == {"role": "user", "content": "hi"}
    named = Message(role="user", content="hi", name="alice")
    assert openai_message(named) == {"role": "user", "content": "hi", "name": "alice"}


def test_content_parts_of_every_kind() -> None:
    message = Message.model_validate(
        {
            "role": "user",
            "parts": [
                {"type": "text", "text": "Compare these."},
                {
                    "type": "image_url",
                    "imageUrl": {"url": "https://example.com/a.png", "detail": "high"},
                },
                {"type": "image_url", "imageUrl": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {
                    "type": "input_audio",
                    "inputAudio": {"data": "UklGRiQAAABXQVZF", "format": "wav"},
                },
                {"type": "file", "file": {"fileId": "file-abc123"}},
                {
                    "type": "file",
                    "file": {"fileData": "JVBERi0xLjQ=", "filename": "report.pdf"},
                },
            ],
        }
    )
    assert openai_message(message) == {
        "role": "user",
        "content": [
            {"type": "text", "text": "Compare these."},
            {
                "type": "image_url",
                "image_url": {"url": "https://example.com/a.png", "detail": "high"},
            },
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "input_audio", "input_audio": {"data": "UklGRiQAAABXQVZF", "format": "wav"}},
            {"type": "file", "file": {"file_id": "file-abc123"}},
            {"type": "file", "file": {"file_data": "JVBERi0xLjQ=", "filename": "report.pdf"}},
        ],
    }


def test_an_empty_text_part_is_still_text() -> None:
    message = Message(role="user", parts=[ContentPart(type="text")])
    assert openai_message(message)["content"] == [{"type": "text", "text": ""}]


def test_tool_calls_and_the_tool_answer() -> None:
    calls = Message.model_validate(
        {
            "role": "assistant",
            "toolCalls": [
                {
                    "id": "call_abc",
                    "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                },
                {"id": "call_def", "type": "function", "function": {"name": "get_time"}},
            ],
        }
    )
    assert openai_message(calls) == {
        "role": "assistant",
        "content": None,  # an assistant message with tool calls may have no text
        "tool_calls": [
            {
                "id": "call_abc",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
            },
            {
                "id": "call_def",
                "type": "function",
                "function": {"name": "get_time", "arguments": ""},
            },
        ],
    }
    answer = Message.model_validate({"role": "tool", "toolCallId": "call_abc", "content": "21°C"})
    assert openai_message(answer) == {"role": "tool", "content": "21°C", "tool_call_id": "call_abc"}


# --------------------------------------------------------------------------- parameters


def test_no_parameters_add_nothing() -> None:
    assert parameters_body(None) == {}
    assert parameters_body(Parameters()) == {}


def test_parameters_use_openais_names() -> None:
    params = Parameters.model_validate(
        {
            "temperature": 0,
            "topP": 0.9,
            "maxTokens": 256,
            "stop": ["\n\n"],
            "seed": 7,
            "choices": 3,
            "presencePenalty": 0.5,
            "frequencyPenalty": -0.5,
            "logprobs": True,
            "topLogprobs": 2,
            "logitBias": {"50256": -100},
            "reasoningEffort": "low",
            "parallelToolCalls": False,
            "user": "user-42",
            "responseFormat": {"type": "json_object"},
        }
    )
    assert parameters_body(params) == {
        "temperature": 0,
        "top_p": 0.9,
        "max_tokens": 256,
        "stop": ["\n\n"],
        "seed": 7,
        "n": 3,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "logprobs": True,
        "top_logprobs": 2,
        "logit_bias": {"50256": -100},
        "reasoning_effort": "low",
        "parallel_tool_calls": False,
        "user": "user-42",
        "response_format": {"type": "json_object"},
    }


def test_a_json_schema_response_format_is_sent_as_written() -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": ["string", "null"], "default": None}},
        "required": ["answer"],
    }
    params = Parameters.model_validate(
        {
            "responseFormat": {
                "type": "json_schema",
                "jsonSchema": {"name": "reply", "strict": True, "schema": schema},
            }
        }
    )
    assert parameters_body(params)["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "reply", "strict": True, "schema": schema},
    }


def test_extra_parameters_go_as_they_are_and_named_ones_win() -> None:
    params = Parameters.model_validate(
        {
            "temperature": 0.2,
            "extra": {
                "top_k": 20,
                "repetition_penalty": 1.05,
                "guided_choice": ["yes", "no"],
                "chat_template_kwargs": {"enable_thinking": False},
                "temperature": 1.5,
                "nothing": None,
            },
        }
    )
    assert parameters_body(params) == {
        "top_k": 20,
        "repetition_penalty": 1.05,
        "guided_choice": ["yes", "no"],
        "chat_template_kwargs": {"enable_thinking": False},
        "temperature": 0.2,
        "nothing": None,
    }


# --------------------------------------------------------------------------- chat bodies


def test_a_chat_body_of_messages_tools_and_choice() -> None:
    weather = Tool.model_validate(
        {
            "function": {
                "name": "get_weather",
                "description": "Current weather",
                "parameters": {
                    "type": "object",
                    "properties": {"location": {"type": "string"}},
                    "required": ["location"],
                },
                "strict": True,
            }
        }
    )
    body = chat_body(
        [Message(role="system", content="Be brief."), Message(role="user", content="Paris?")],
        Parameters(temperature=0.1, dimensions=256),
        [weather],
        ToolChoice(function="get_weather"),
    )
    assert body == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Paris?"},
        ],
        "temperature": 0.1,  # dimensions are for embeddings only
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current weather",
                    "parameters": {
                        "type": "object",
                        "properties": {"location": {"type": "string"}},
                        "required": ["location"],
                    },
                    "strict": True,
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }


@pytest.mark.parametrize("mode", ["none", "auto", "required"])
def test_a_tool_choice_mode_is_its_string(mode: str) -> None:
    body = chat_body(
        [Message(role="user", content="x")], None, None, ToolChoice.model_validate({"mode": mode})
    )
    assert body["tool_choice"] == mode
    assert "tools" not in body


def test_no_tools_send_no_tools() -> None:
    assert chat_body([Message(role="user", content="x")], None, []) == {
        "messages": [{"role": "user", "content": "x"}]
    }


# --------------------------------------------------------------------------- calls


def test_a_chat_jobs_call_from_its_manifest() -> None:
    job = LLMJob.model_validate(
        {
            "apiVersion": "llmloom.io/v1alpha1",
            "kind": "LLMJob",
            "metadata": {"name": "weather", "namespace": "demo"},
            "spec": {
                "flavor": "qwen",
                "messages": [
                    {"role": "developer", "content": "Use the tools."},
                    {
                        "role": "user",
                        "parts": [
                            {"type": "text", "text": "What is on this sign?"},
                            {"type": "image_url", "imageUrl": {"url": "https://x/sign.jpg"}},
                        ],
                    },
                ],
                "tools": [{"type": "function", "function": {"name": "translate"}}],
                "toolChoice": {"mode": "auto"},
                "parameters": {"choices": 2, "maxTokens": 64, "extra": {"top_k": 40}},
                "stream": True,
            },
        }
    )
    call = spec_call(job.spec)
    assert call.endpoint == wire.CHAT and call.stream
    assert call.body == {
        "messages": [
            {"role": "developer", "content": "Use the tools."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is on this sign?"},
                    {"type": "image_url", "image_url": {"url": "https://x/sign.jpg"}},
                ],
            },
        ],
        "top_k": 40,
        "n": 2,
        "max_tokens": 64,
        "tools": [{"type": "function", "function": {"name": "translate"}}],
        "tool_choice": "auto",
        "stream": True,
    }


def test_a_chat_job_that_does_not_stream_says_nothing_of_it() -> None:
    call = spec_call(spec(messages=[{"role": "user", "content": "hi"}]))
    assert call == Call(wire.CHAT, {"messages": [{"role": "user", "content": "hi"}]})
    assert not call.stream


def test_an_embeddings_jobs_call() -> None:
    call = spec_call(
        spec(
            task="embeddings",
            texts=["first text", "second text"],
            parameters={"dimensions": 256, "user": "u-1", "temperature": 0.5},
        )
    )
    assert call == Call(
        wire.EMBEDDINGS, {"input": ["first text", "second text"], "dimensions": 256, "user": "u-1"}
    )
    plain = spec_call(spec(task="embeddings", texts=["only"]))
    assert plain == Call(wire.EMBEDDINGS, {"input": ["only"]})


def test_a_document_jobs_calls_are_plain_messages() -> None:
    call = messages_call(
        [Message(role="user", content="Summarise:\n\nThe council met on Monday.")],
        Parameters(max_tokens=200, temperature=0),
    )
    assert call == Call(
        wire.CHAT,
        {
            "messages": [{"role": "user", "content": "Summarise:\n\nThe council met on Monday."}],
            "max_tokens": 200,
            "temperature": 0,
        },
    )
    assert messages_call([Message(role="user", content="x")]).body == {
        "messages": [{"role": "user", "content": "x"}]
    }


def test_but_changes_some_fields_and_none_removes_one() -> None:
    call = Call(
        wire.EMBEDDINGS, {"input": ["a", "b", "c"], "user": "u", "encoding_format": "base64"}
    )
    changed = call.but(input=["a"], encoding_format="float", user=None)
    assert changed == Call(wire.EMBEDDINGS, {"input": ["a"], "encoding_format": "float"})
    assert call.body == {"input": ["a", "b", "c"], "user": "u", "encoding_format": "base64"}
    assert call.but() == call and call.but() is not call
    streamed = Call(wire.CHAT, {"messages": [], "stream": True, "n": 2})
    assert streamed.stream and not streamed.but(stream=None).stream
    assert streamed.but(n=None).body == {"messages": [], "stream": True}
    with pytest.raises(AttributeError):
        call.body = {}  # type: ignore[misc]


# --------------------------------------------------------------------------- stored requests


class Stored:
    """The one Redis command job_call uses, over a dict."""

    def __init__(self, values: dict[str, bytes]) -> None:
        self.values = values

    async def get(self, key: str) -> bytes | None:
        return self.values.get(key)


def stored_job(endpoint: str, key: str = "llmloom:request:abc") -> LLMJob:
    task = "embeddings" if endpoint == wire.EMBEDDINGS else "chat"
    return LLMJob.model_validate(
        {
            "metadata": {"name": "chat-x", "namespace": "t"},
            "spec": {
                "flavor": "small",
                "task": task,
                "request": {"endpoint": endpoint, "key": key, "bytes": 10},
            },
        }
    )


def call_of(job: LLMJob, values: dict[str, bytes]) -> Call:
    deps = cast(Deps, SimpleNamespace(redis=Stored(values)))
    return asyncio.run(job_call(deps, job))


def test_a_stored_request_is_sent_as_the_client_sent_it_but_for_its_model() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.3,
        "top_k": 5,  # a server's own field, through extra_body
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    call = call_of(stored_job(wire.CHAT), {"llmloom:request:abc": json.dumps(body).encode()})
    assert call.endpoint == wire.CHAT and call.stream
    assert call.body == {k: v for k, v in body.items() if k != "model"}


@pytest.mark.parametrize("endpoint", [wire.COMPLETIONS, wire.RESPONSES, wire.EMBEDDINGS])
def test_a_stored_request_keeps_its_endpoint(endpoint: str) -> None:
    raw = json.dumps({"model": "m", "input": "x", "prompt": "y"}).encode()
    call = call_of(stored_job(endpoint), {"llmloom:request:abc": raw})
    assert call == Call(endpoint, {"input": "x", "prompt": "y"})  # type: ignore[arg-type]


def test_a_job_without_a_stored_request_is_built_from_its_spec() -> None:
    job = LLMJob.model_validate(
        {"spec": {"flavor": "f", "messages": [{"role": "user", "content": "hi"}]}}
    )
    assert call_of(job, {}) == Call(wire.CHAT, {"messages": [{"role": "user", "content": "hi"}]})


@pytest.mark.parametrize(
    ("stored", "reason", "status"),
    [
        ({}, "RequestLost", 410),
        ({"llmloom:request:abc": b"{not json"}, "RequestInvalid", 400),
        ({"llmloom:request:abc": b"[1, 2]"}, "RequestInvalid", 400),
    ],
)
def test_a_stored_request_that_is_gone_or_garbled_fails_the_job(
    stored: dict[str, bytes], reason: str, status: int
) -> None:
    with pytest.raises(JobFailed) as err:
        call_of(stored_job(wire.CHAT), stored)
    assert (err.value.reason, err.value.status_code) == (reason, status)


def test_content_parts_built_in_python() -> None:
    part = ContentPart(type="image_url", image_url=ImageUrl(url="data:image/png;base64,AAAA"))
    message = Message(role="user", parts=[ContentPart(type="text", text="Look:"), part])
    assert openai_message(message)["content"] == [
        {"type": "text", "text": "Look:"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
