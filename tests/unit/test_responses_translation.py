"""The Responses API over chat completions, for servers that do not serve it: requests as
chat bodies, chat answers as Responses, chat chunks as a Response's stream of events, and
what needs server state or server-run tools refused by name."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai import BaseModel as SDKModel
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseIncompleteEvent,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
)

from llmloom import ollama, responses

EVENT_TYPES: dict[str, type[SDKModel]] = {
    "response.created": ResponseCreatedEvent,
    "response.in_progress": ResponseInProgressEvent,
    "response.output_item.added": ResponseOutputItemAddedEvent,
    "response.content_part.added": ResponseContentPartAddedEvent,
    "response.output_text.delta": ResponseTextDeltaEvent,
    "response.output_text.done": ResponseTextDoneEvent,
    "response.content_part.done": ResponseContentPartDoneEvent,
    "response.function_call_arguments.delta": ResponseFunctionCallArgumentsDeltaEvent,
    "response.function_call_arguments.done": ResponseFunctionCallArgumentsDoneEvent,
    "response.output_item.done": ResponseOutputItemDoneEvent,
    "response.completed": ResponseCompletedEvent,
    "response.incomplete": ResponseIncompleteEvent,
}
"""The openai SDK's type of each event a stream makes."""
IMAGE = "data:image/jpeg;base64,/9j/4AAQSkZJRgABAQAAAQABAAD"
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get current temperature for a given location.",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string", "description": "City and country"}},
        "required": ["location"],
        "additionalProperties": False,
    },
    "strict": True,
}


def refused(body: dict[str, Any]) -> responses.Unsupported:
    with pytest.raises(responses.Unsupported) as err:
        responses.to_chat(body)
    return err.value


# --------------------------------------------------------------------------- requests


def test_input_as_text_is_one_user_message() -> None:
    body = {"model": "gpt-4.1", "input": "Tell me a three sentence bedtime story about a unicorn."}
    assert responses.to_chat(body) == {
        "messages": [
            {"role": "user", "content": "Tell me a three sentence bedtime story about a unicorn."}
        ]
    }


def test_instructions_come_first_as_the_system_message() -> None:
    body = {
        "model": "gpt-4.1",
        "instructions": "You are a coding assistant that talks like a pirate.",
        "input": "Are semicolons optional in JavaScript?",
    }
    assert responses.to_chat(body)["messages"] == [
        {"role": "system", "content": "You are a coding assistant that talks like a pirate."},
        {"role": "user", "content": "Are semicolons optional in JavaScript?"},
    ]


def test_message_items_with_text_and_image_parts() -> None:
    body = {
        "input": [
            {"role": "developer", "content": "Describe images briefly."},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "what's in this image?"},
                    {"type": "input_image", "image_url": IMAGE, "detail": "high"},
                    {"type": "input_image", "image_url": "https://example.com/cat.png"},
                ],
            },
            # A previous answer, sent back as the SDK's output item.
            {
                "type": "message",
                "id": "msg_67ccd3acc8d48190a77525dc6de64b4104becb25c45c1d41",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": "A cat.", "annotations": [], "logprobs": []}
                ],
            },
            {"role": "user", "content": [{"type": "input_text", "text": "What colour?"}]},
        ]
    }
    assert responses.to_chat(body)["messages"] == [
        {"role": "developer", "content": "Describe images briefly."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what's in this image?"},
                {"type": "image_url", "image_url": {"url": IMAGE, "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
        {"role": "user", "content": [{"type": "text", "text": "What colour?"}]},
    ]


def test_function_calls_and_their_outputs_become_tool_calls_and_tool_messages() -> None:
    """An agent's second turn: the calls the model made (two in parallel) and their
    outputs, as the openai SDK and the Agents SDK send them back."""
    body = {
        "model": "gpt-4.1",
        "tools": [WEATHER_TOOL],
        "input": [
            {"role": "user", "content": "Weather in Paris and Bogotá?"},
            {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_paris",
                "name": "get_weather",
                "arguments": '{"location":"Paris, France"}',
                "status": "completed",
            },
            {
                "type": "function_call",
                "id": "fc_2",
                "call_id": "call_bogota",
                "name": "get_weather",
                "arguments": '{"location":"Bogotá, Colombia"}',
                "status": "completed",
            },
            {"type": "function_call_output", "call_id": "call_paris", "output": "14°C"},
            {"type": "function_call_output", "call_id": "call_bogota", "output": {"temp": 18}},
        ],
    }
    chat = responses.to_chat(body)
    assert chat["messages"] == [
        {"role": "user", "content": "Weather in Paris and Bogotá?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_paris",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"location":"Paris, France"}',
                    },
                },
                {
                    "id": "call_bogota",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"location":"Bogotá, Colombia"}',
                    },
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_paris", "content": "14°C"},
        {"role": "tool", "tool_call_id": "call_bogota", "content": '{"temp": 18}'},
    ]
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get current temperature for a given location.",
                "parameters": WEATHER_TOOL["parameters"],
                "strict": True,
            },
        }
    ]
    # And Ollama can be asked it: the tool answers name their calls.
    native = ollama.chat_request(chat, "qwen3", stream=False)
    assert [m.get("tool_name") for m in native["messages"]] == [
        None,
        None,
        "get_weather",
        "get_weather",
    ]
    assert native["messages"][1]["tool_calls"][0]["function"]["arguments"] == {
        "location": "Paris, France"
    }


def test_a_function_call_after_a_text_answer_starts_an_assistant_message_of_its_own() -> None:
    body = {
        "input": [
            {"role": "assistant", "content": "Let me check."},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        ]
    }
    assert responses.to_chat(body)["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }


@pytest.mark.parametrize(
    ("choice", "chat"),
    [
        (
            {"type": "function", "name": "get_weather"},
            {"type": "function", "function": {"name": "get_weather"}},
        ),
        ("auto", "auto"),
        ("required", "required"),
        ("none", "none"),
    ],
)
def test_tool_choice_by_name_or_mode(choice: Any, chat: Any) -> None:
    body = {"input": "hi", "tools": [WEATHER_TOOL], "tool_choice": choice}
    assert responses.to_chat(body)["tool_choice"] == chat


def test_no_tools_send_no_tools() -> None:
    assert "tools" not in responses.to_chat({"input": "hi", "tools": []})


def test_text_format_becomes_response_format() -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "date": {"type": "string"}},
        "required": ["name", "date"],
        "additionalProperties": False,
    }
    # client.responses.parse(..., text_format=CalendarEvent) sends this.
    text = {
        "format": {
            "type": "json_schema",
            "name": "calendar_event",
            "schema": schema,
            "strict": True,
            "description": "An event",
        }
    }
    assert responses.to_chat({"input": "x", "text": text})["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "calendar_event",
            "schema": schema,
            "strict": True,
            "description": "An event",
        },
    }
    as_object = {"input": "x", "text": {"format": {"type": "json_object"}}}
    assert responses.to_chat(as_object)["response_format"] == {"type": "json_object"}
    assert "response_format" not in responses.to_chat(
        {"input": "x", "text": {"format": {"type": "text"}}}
    )
    assert "response_format" not in responses.to_chat({"input": "x", "text": {"verbosity": "low"}})
    assert refused({"input": "x", "text": {"format": {"type": "grammar"}}}).param == "text.format"


def test_limits_sampling_and_reasoning_are_carried_over() -> None:
    body = {
        "model": "o4-mini",
        "input": "hi",
        "max_output_tokens": 256,
        "temperature": 0.3,
        "top_p": 0.8,
        "parallel_tool_calls": True,
        "user": "u-1",
        "stream": True,
        "reasoning": {"effort": "low", "summary": "auto"},
        "store": False,
        "metadata": {"k": "v"},
        "service_tier": "auto",
        "stream_options": {"include_obfuscation": False},
        "instructions": None,
        "previous_response_id": None,
    }
    assert responses.to_chat(body) == {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 256,
        "temperature": 0.3,
        "top_p": 0.8,
        "parallel_tool_calls": True,
        "user": "u-1",
        "stream": True,
        "reasoning_effort": "low",
    }
    assert "reasoning_effort" not in responses.to_chat({"input": "hi", "reasoning": {}})


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "more", "previous_response_id": "resp_abc"}, "previous_response_id"),
        ({"input": "more", "conversation": "conv_123"}, "conversation"),
        ({"input": "hi", "background": True}, "background"),
        ({"input": "hi", "tools": [{"type": "web_search_preview"}]}, "tools[0]"),
        (
            {
                "input": "hi",
                "tools": [WEATHER_TOOL, {"type": "file_search", "vector_store_ids": ["vs_1"]}],
            },
            "tools[1]",
        ),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        (
            {
                "input": [
                    {"role": "user", "content": "x"},
                    {"type": "reasoning", "id": "rs_1", "summary": []},
                ]
            },
            "input[1]",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]},
            "input[0].content[0]",
        ),
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}
                ]
            },
            "input[0].content[0]",
        ),
        ({"input": ["hi"]}, "input[0]"),
        ({"input": 42}, "input"),
        ({"input": "hi", "prompt": {"id": "pmpt_1"}}, "prompt"),
    ],
)
def test_what_needs_the_servers_own_responses_api_is_refused_by_name(
    body: dict[str, Any], param: str
) -> None:
    err = refused(body)
    assert err.param == param and str(err) == err.message


def test_an_agents_sdk_request_is_served() -> None:
    # OpenAIResponsesModel._build_response_create_kwargs, for an agent with no tools.
    body = {
        "instructions": "You are a helpful assistant",
        "model": "gpt-4.1",
        "input": [{"content": "Write a haiku about recursion.", "role": "user"}],
        "include": [],
        "tools": [],
    }
    assert responses.to_chat(body)["messages"] == [
        {"role": "system", "content": "You are a helpful assistant"},
        {"role": "user", "content": "Write a haiku about recursion."},
    ]


# --------------------------------------------------------------------------- answers


def chat_completion(
    message: dict[str, Any], finish: str = "stop", usage: bool = True
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1741476542,
        "model": "qwen3:8b",
        "choices": [
            {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}
        ],
    }
    if usage:
        out["usage"] = {"prompt_tokens": 36, "completion_tokens": 87, "total_tokens": 123}
    return out


def test_a_text_answer_becomes_a_completed_response() -> None:
    body = {
        "model": "my-model",
        "input": "Tell me a story.",
        "instructions": "Be brief.",
        "temperature": 0.5,
    }
    out = responses.from_chat(chat_completion({"content": "Once upon a time..."}), body)
    assert out["id"].startswith("resp_") and out["object"] == "response"
    assert out["status"] == "completed" and out["model"] == "qwen3:8b"
    assert isinstance(out["created_at"], int)
    (item,) = out["output"]
    assert item["type"] == "message" and item["role"] == "assistant"
    assert item["id"].startswith("msg_") and item["status"] == "completed"
    assert item["content"] == [
        {"type": "output_text", "text": "Once upon a time...", "annotations": []}
    ]
    assert out["usage"] == {
        "input_tokens": 36,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 87,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 123,
    }
    # The request's settings, echoed as OpenAI echoes them.
    assert (out["instructions"], out["temperature"], out["top_p"]) == ("Be brief.", 0.5, None)
    assert (out["tool_choice"], out["tools"], out["parallel_tool_calls"]) == ("auto", [], True)
    assert out["text"] == {"format": {"type": "text"}} and out["store"] is False
    assert out["error"] is None and out["incomplete_details"] is None


def test_tool_calls_become_function_call_items() -> None:
    body = {"input": "Weather?", "tools": [WEATHER_TOOL], "tool_choice": "required"}
    answer = chat_completion(
        {
            "content": None,
            "tool_calls": [
                {
                    "id": "call_12345xyz",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"location":"Paris, France"}',
                    },
                },
                {"id": "", "type": "function", "function": {"name": "get_time"}},
            ],
        },
        finish="tool_calls",
    )
    out = responses.from_chat(answer, body)
    first, second = out["output"]
    assert first == {
        "type": "function_call",
        "id": first["id"],
        "call_id": "call_12345xyz",
        "name": "get_weather",
        "arguments": '{"location":"Paris, France"}',
        "status": "completed",
    }
    assert first["id"].startswith("fc_")
    assert second["call_id"].startswith("call_") and second["arguments"] == ""
    assert out["status"] == "completed" and out["tools"] == [WEATHER_TOOL]
    assert out["tool_choice"] == "required"


def test_an_answer_cut_at_its_limit_is_an_incomplete_response() -> None:
    out = responses.from_chat(
        chat_completion({"content": "Once upon"}, finish="length"),
        {"input": "x", "max_output_tokens": 2},
    )
    assert out["status"] == "incomplete"
    assert out["incomplete_details"] == {"reason": "max_output_tokens"}
    assert out["max_output_tokens"] == 2


def test_an_answer_without_usage_or_choices_is_still_a_response() -> None:
    out = responses.from_chat({"model": "m", "choices": []}, {"input": "x"})
    assert (out["output"], out["usage"], out["status"]) == ([], None, "completed")


def test_the_response_is_one_the_openai_sdk_reads() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = {
        "model": "x",
        "input": "hi",
        "instructions": "Be brief.",
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "text": {
            "format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True}
        },
        "metadata": {"team": "a"},
    }
    answer = chat_completion(
        {
            "content": '{"a": 1}',
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        usage=False,
    )
    parsed = Response.model_validate(responses.from_chat(answer, body))
    assert parsed.output_text == '{"a": 1}'
    assert [item.type for item in parsed.output] == ["message", "function_call"]
    assert parsed.metadata == {"team": "a"}


def test_the_response_with_its_usage_is_one_the_openai_sdk_reads() -> None:
    out = responses.from_chat(chat_completion({"content": "Hello."}), {"model": "x", "input": "hi"})
    parsed = Response.model_validate(out)
    assert parsed.output_text == "Hello." and parsed.usage is not None
    assert parsed.usage.total_tokens == 123


# --------------------------------------------------------------------------- streams


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, **head: Any
) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": choices,
        **head,
    }


USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}


def streamed(body: dict[str, Any], chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events, each serialised as the worker publishes it when it is made."""
    stream = responses.EventStream(body, "qwen3")
    events = [json.loads(json.dumps(e)) for e in stream.start()]
    for c in chunks:
        events += [json.loads(json.dumps(e)) for e in stream.chunk(c)]
    events += [json.loads(json.dumps(e)) for e in stream.end()]
    return events


def test_a_streamed_text_answer_makes_the_events_in_openais_order() -> None:
    events = streamed(
        {"model": "x", "input": "Say hello."},
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"reasoning_content": "thinking..."}),
            chunk({"content": "lo"}),
            chunk({}, "stop"),
            chunk(None, usage=USAGE),
        ],
    )
    assert [e["type"] for e in events] == [
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
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    created, progress, added, part, delta1, delta2, done, part_done, item_done, completed = events
    assert created["response"]["status"] == progress["response"]["status"] == "in_progress"
    assert created["response"]["output"] == [] and created["response"]["model"] == "qwen3"
    item_id = added["item"]["id"]
    assert added["output_index"] == 0 and added["item"]["status"] == "in_progress"
    assert added["item"]["type"] == "message" and added["item"]["role"] == "assistant"
    assert part["part"] == {"type": "output_text", "text": "", "annotations": []}
    assert [delta1["delta"], delta2["delta"]] == ["Hel", "lo"]
    for event in (part, delta1, delta2, done, part_done):
        assert (event["item_id"], event["output_index"], event["content_index"]) == (item_id, 0, 0)
    assert done["text"] == "Hello" and part_done["part"]["text"] == "Hello"
    assert item_done["item"]["status"] == "completed"
    assert item_done["item"]["content"][0]["text"] == "Hello"
    final = completed["response"]
    assert final["status"] == "completed" and final["id"] == created["response"]["id"]
    assert final["output"] == [item_done["item"]]
    assert final["usage"]["input_tokens"] == 12 and final["usage"]["output_tokens"] == 3
    assert final["usage"]["total_tokens"] == 15


def test_streamed_tool_calls_make_function_call_argument_deltas() -> None:
    events = streamed(
        {"model": "x", "input": "Weather in Paris and Rome?", "tools": [WEATHER_TOOL]},
        [
            chunk(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_p",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        }
                    ],
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"location":'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "call_r",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"location":"Rome"}'},
                        }
                    ]
                }
            ),
            chunk({}, "tool_calls"),
            chunk(None, usage=USAGE),
        ],
    )
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    paris, rome = events[2]["item"], events[5]["item"]
    assert (paris["type"], paris["call_id"], paris["name"]) == (
        "function_call",
        "call_p",
        "get_weather",
    )
    assert (events[2]["output_index"], events[5]["output_index"]) == (0, 1)
    assert rome["call_id"] == "call_r" and paris["id"] != rome["id"]
    deltas = [
        (e["item_id"], e["output_index"], e["delta"])
        for e in events
        if e["type"].endswith("arguments.delta")
    ]
    assert deltas == [
        (paris["id"], 0, '{"location":'),
        (paris["id"], 0, '"Paris"}'),
        (rome["id"], 1, '{"location":"Rome"}'),
    ]
    dones = [e["arguments"] for e in events if e["type"].endswith("arguments.done")]
    assert dones == ['{"location":"Paris"}', '{"location":"Rome"}']
    final = events[-1]["response"]
    assert [(i["call_id"], i["arguments"], i["status"]) for i in final["output"]] == [
        ("call_p", '{"location":"Paris"}', "completed"),
        ("call_r", '{"location":"Rome"}', "completed"),
    ]
    assert final["status"] == "completed" and final["tools"] == [WEATHER_TOOL]


def test_text_then_a_tool_call_are_two_output_items() -> None:
    events = streamed(
        {"input": "x"},
        [
            chunk({"content": "Checking."}),
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}
                    ]
                }
            ),
            chunk({}, "tool_calls"),
        ],
    )
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["message", "function_call"]
    added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    assert added == [0, 1]
    assert final["usage"] is None  # the server sent no usage chunk


def test_a_stream_cut_at_its_limit_ends_with_response_incomplete() -> None:
    events = streamed(
        {"input": "x", "max_output_tokens": 2}, [chunk({"content": "Once upon"}, "length")]
    )
    assert events[-1]["type"] == "response.incomplete"
    final = events[-1]["response"]
    assert final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}


def test_an_empty_stream_still_completes() -> None:
    events = streamed({"input": "x"}, [chunk({}, "stop")])
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.completed",
    ]


def test_the_final_streamed_response_is_one_the_openai_sdk_reads() -> None:
    events = streamed(
        {"model": "x", "input": "x"}, [chunk({"content": "Hello"}), chunk({}, "stop")]
    )
    parsed = Response.model_validate(events[-1]["response"])
    assert parsed.output_text == "Hello" and parsed.status == "completed"


def test_the_final_streamed_response_with_usage_is_one_the_openai_sdk_reads() -> None:
    events = streamed(
        {"model": "x", "input": "x"},
        [chunk({"content": "Hello"}), chunk({}, "stop"), chunk(None, usage=USAGE)],
    )
    parsed = Response.model_validate(events[-1]["response"])
    assert parsed.usage is not None and parsed.usage.output_tokens == 3


def test_every_text_event_is_one_the_openai_sdk_reads() -> None:
    events = streamed(
        {"model": "x", "input": "x"},
        [chunk({"content": "Hel"}), chunk({"content": "lo"}), chunk({}, "stop")],
    )
    for event in events:
        EVENT_TYPES[event["type"]].model_validate(event)


def test_every_tool_call_event_is_one_the_openai_sdk_reads() -> None:
    events = streamed(
        {"model": "x", "input": "x"},
        [
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "c", "function": {"name": "f", "arguments": "{"}}
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}),
            chunk({}, "tool_calls"),
        ],
    )
    for event in events:
        EVENT_TYPES[event["type"]].model_validate(event)
