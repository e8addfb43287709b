"""What LLMLoom reads of OpenAI bodies: prompt tokens before a request runs, the limits it
asks for, the usage an answer reports and the text it holds, for all four endpoints."""

from __future__ import annotations

import json
from typing import Any

import pytest
import tiktoken

from llmloom import tokens, wire
from llmloom.resources import Endpoint

ENC = tokens.encoding_for("gpt-4")  # cl100k_base
PNG = "data:image/png;base64," + "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4" * 40


def n(text: str) -> int:
    return len(ENC.encode(text, disallowed_special=()))


def chat(*messages: Any, **fields: Any) -> int:
    return wire.prompt_tokens(wire.CHAT, {"messages": list(messages), **fields}, ENC)


# --------------------------------------------------------------------------- endpoints


def test_the_four_endpoints_and_their_paths_below_the_api_base() -> None:
    assert wire.ENDPOINTS == (
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/responses",
        "/v1/embeddings",
    )
    assert [wire.path(e) for e in wire.ENDPOINTS] == [
        "/chat/completions",
        "/completions",
        "/responses",
        "/embeddings",
    ]


# --------------------------------------------------------------------------- chat


def test_a_chat_of_strings_counts_three_tokens_around_each_message_and_three_to_prime() -> None:
    assert chat({"role": "user", "content": "hello world"}) == 3 + 2 + 3
    two = chat(
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "hello world"},
    )
    assert two == (3 + n("You are a helpful assistant.")) + (3 + 2) + 3
    assert chat({"role": "developer", "content": ""}) == 3 + 0 + 3


def test_text_parts_count_as_their_text_and_images_are_left_to_the_server() -> None:
    question = "What is in this image?"
    # What the openai SDK sends for a vision question (and LangChain's HumanMessage of blocks).
    message = {
        "role": "user",
        "content": [
            {"type": "text", "text": question},
            {"type": "image_url", "image_url": {"url": PNG, "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        ],
    }
    assert chat(message) == 3 + n(question) + 3
    two_texts = {
        "role": "user",
        "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": " world"}],
    }
    assert chat(two_texts) == 3 + n("hello world") + 3


def test_audio_and_file_parts_are_not_counted_but_a_refusal_is() -> None:
    audio = {
        "role": "user",
        "content": [
            {"type": "input_audio", "input_audio": {"data": "UklGRiQAAABX", "format": "wav"}},
            {"type": "file", "file": {"file_id": "file-abc123"}},
        ],
    }
    assert chat(audio) == 3 + 0 + 3
    refused = {
        "role": "assistant",
        "content": [{"type": "refusal", "refusal": "I can't help with that."}],
    }
    assert chat(refused) == 3 + n("I can't help with that.") + 3


def test_tool_calls_count_their_name_and_arguments_and_the_tool_answer_its_content() -> None:
    arguments = '{"city": "Paris", "unit": "celsius"}'
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        # As the openai SDK's ChatCompletionMessage.model_dump(exclude_none=True) gives it back.
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc123",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc123", "content": '{"temp": 21}'},
    ]
    expected = (
        (3 + n("Weather in Paris?"))
        + (3 + n("get_weather" + arguments))
        + (3 + n('{"temp": 21}'))
        + 3
    )
    assert chat(*history) == expected
    assert wire.message_texts(history) == [
        "Weather in Paris?",
        "get_weather" + arguments,
        '{"temp": 21}',
    ]


def test_tool_definitions_count_as_their_compact_json() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the current weather in a given location",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "location": {"type": "string"},
                        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    },
                    "required": ["location"],
                },
            },
        }
    ]
    hi = {"role": "user", "content": "hi"}
    compact = json.dumps(tools, separators=(",", ":"))
    assert chat(hi, tools=tools) == chat(hi) + n(compact)
    assert chat(hi, tools=[]) == chat(hi)  # an empty list adds nothing
    assert chat(hi, tools=None) == chat(hi)


def test_malformed_chat_bodies_count_what_they_can() -> None:
    assert wire.prompt_tokens(wire.CHAT, {}, ENC) == 3
    assert wire.prompt_tokens(wire.CHAT, {"messages": "hello"}, ENC) == 3
    assert chat("not a message", {"role": "user", "content": "hello world"}) == 3 + 2 + 3
    assert wire.message_texts([{"role": "user", "content": 7}]) == [""]
    assert wire.message_texts(None) == []


# --------------------------------------------------------------------------- completions


def completions(prompt: Any, **fields: Any) -> int:
    return wire.prompt_tokens(wire.COMPLETIONS, {"prompt": prompt, **fields}, ENC)


def test_a_completion_prompt_counts_as_text_texts_or_token_ids() -> None:
    assert completions("hello world") == 2
    assert completions(["hello world", "Say this is a test"]) == 2 + n("Say this is a test")
    assert completions([15339, 1917, 0]) == 3  # token ids: one token each
    assert completions([[15339, 1917], [9906]]) == 3  # a batch of token id lists
    assert completions("def add(a, b):", suffix="    return a + b") == n("def add(a, b):") + n(
        "    return a + b"
    )
    assert completions(None) == 0
    # A special token's text is counted as text (tiktoken would otherwise refuse it).
    assert completions("<|endoftext|>") == n("<|endoftext|>") > 1


# --------------------------------------------------------------------------- responses


def responses(input: Any, **fields: Any) -> int:
    return wire.prompt_tokens(wire.RESPONSES, {"input": input, **fields}, ENC)


def test_responses_input_as_text_counts_three_tokens_around_it() -> None:
    assert responses("Tell me a three sentence bedtime story about a unicorn.") == 3 + n(
        "Tell me a three sentence bedtime story about a unicorn."
    )


def test_responses_instructions_count_as_a_message_of_their_own() -> None:
    instructions = "You are a coding assistant that talks like a pirate."
    asked = responses("Are semicolons optional in JavaScript?", instructions=instructions)
    assert asked == (3 + n("Are semicolons optional in JavaScript?")) + (3 + n(instructions))


def test_responses_message_items_count_their_text_parts_not_their_images() -> None:
    items = [
        {"role": "user", "content": "hello world"},  # an easy input message
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "what is in this image?"},
                {"type": "input_image", "image_url": PNG, "detail": "auto"},
            ],
        },
        {
            "type": "message",
            "id": "msg_abc",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "A cat.", "annotations": []}],
        },
    ]
    assert responses(items) == (3 + 2) + (3 + n("what is in this image?")) + (3 + n("A cat."))


def test_responses_function_calls_and_their_outputs_are_counted() -> None:
    arguments = '{"location":"Paris"}'
    items = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "type": "function_call",
            "id": "fc_1",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": arguments,
            "status": "completed",
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "21 degrees"},
    ]
    assert responses(items) == (3 + n("Weather in Paris?")) + (3 + n(arguments)) + (
        3 + n("21 degrees")
    )


def test_a_function_call_output_of_parts_counts_its_text_and_not_its_image() -> None:
    items = [
        {
            "type": "function_call_output",
            "call_id": "call_1",
            "output": [
                {"type": "input_text", "text": "Here is the chart."},
                {"type": "input_image", "image_url": PNG},
            ],
        }
    ]
    assert responses(items) == 3 + n("Here is the chart.")


def test_responses_tools_count_as_their_compact_json() -> None:
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
        }
    ]
    compact = json.dumps(tools, separators=(",", ":"))
    assert responses("hi", tools=tools) == responses("hi") + n(compact)


# --------------------------------------------------------------------------- embeddings


def test_embedding_inputs_count_as_text_texts_or_token_ids() -> None:
    def embed(value: Any) -> int:
        return wire.prompt_tokens(wire.EMBEDDINGS, {"input": value}, ENC)

    assert embed("The food was delicious and the waiter...") == n(
        "The food was delicious and the waiter..."
    )
    assert embed(["hello world", "hello world"]) == 4
    assert embed([15339, 1917]) == 2
    assert embed([[15339, 1917], [15339]]) == 3
    assert embed(None) == 0


def test_another_encoding_counts_differently() -> None:
    o200k: tiktoken.Encoding = tokens.encoding_for("gpt-4o")
    text = "Mississippi is a state; 🦄 unicorns are not."
    body = {"messages": [{"role": "user", "content": text}]}
    assert wire.prompt_tokens(wire.CHAT, body, o200k) == 3 + len(o200k.encode(text)) + 3


# --------------------------------------------------------------------------- limits


@pytest.mark.parametrize(
    ("endpoint", "body", "limit"),
    [
        (wire.CHAT, {"max_tokens": 100}, 100),
        (wire.CHAT, {"max_completion_tokens": 20}, 20),
        (wire.CHAT, {"max_tokens": 100, "max_completion_tokens": 20}, 20),
        (wire.CHAT, {"max_completion_tokens": 20, "max_tokens": 100}, 20),
        (wire.CHAT, {"max_completion_tokens": None, "max_tokens": 100}, 100),
        (wire.CHAT, {"max_tokens": True}, None),  # a boolean is not a number of tokens
        (wire.CHAT, {"max_output_tokens": 5}, None),  # not a chat field
        (wire.CHAT, {}, None),
        (wire.COMPLETIONS, {"max_tokens": 16}, 16),
        (wire.COMPLETIONS, {"max_completion_tokens": 16}, None),
        (wire.RESPONSES, {"max_output_tokens": 64}, 64),
        (wire.RESPONSES, {"max_tokens": 64}, None),
        (wire.EMBEDDINGS, {"max_tokens": 64}, None),
    ],
)
def test_completion_limit_reads_the_endpoints_own_fields(
    endpoint: Endpoint, body: dict[str, Any], limit: int | None
) -> None:
    assert wire.completion_limit(endpoint, body) == limit


@pytest.mark.parametrize(
    ("body", "count"),
    [({}, 1), ({"n": 3}, 3), ({"n": 0}, 1), ({"n": -2}, 1), ({"n": True}, 1), ({"n": "2"}, 1)],
)
def test_choices_is_openais_n_when_it_is_a_positive_number(
    body: dict[str, Any], count: int
) -> None:
    assert wire.choices(body) == count


# --------------------------------------------------------------------------- answers


def test_reported_usage_of_chat_and_completions() -> None:
    answer = {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "choices": [],
        "usage": {
            "prompt_tokens": 19,
            "completion_tokens": 10,
            "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }
    assert wire.reported_usage(answer) == (19, 10)
    assert wire.reported_usage({"usage": {"prompt_tokens": 0, "completion_tokens": 0}}) == (0, 0)


def test_reported_usage_of_a_response() -> None:
    answer = {
        "object": "response",
        "output": [],
        "usage": {
            "input_tokens": 36,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 87,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 123,
        },
    }
    assert wire.reported_usage(answer) == (36, 87)


def test_reported_usage_of_embeddings_has_no_completion() -> None:
    answer = {"object": "list", "data": [], "usage": {"prompt_tokens": 8, "total_tokens": 8}}
    assert wire.reported_usage(answer) == (8, 0)


@pytest.mark.parametrize(
    "answer",
    [
        {},
        {"usage": None},
        {"usage": "lots"},
        {"usage": {}},
        {"usage": {"prompt_tokens": None, "completion_tokens": None}},
        {"usage": {"total_tokens": 12}},
    ],
)
def test_no_reported_usage_when_the_server_did_not_count(answer: dict[str, Any]) -> None:
    assert wire.reported_usage(answer) is None


def test_the_text_of_a_chat_answer_includes_its_tool_calls_and_every_choice() -> None:
    answer = {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hello"}},
            {
                "index": 1,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a":1}'},
                        }
                    ],
                },
            },
            {"index": 2, "message": None},
        ]
    }
    assert wire.answer_text(wire.CHAT, answer) == 'Hellof{"a":1}'
    assert wire.answer_text(wire.CHAT, {}) == ""


def test_the_text_of_a_completion_a_response_and_embeddings() -> None:
    completion = {"choices": [{"index": 0, "text": "This is"}, {"index": 1, "text": " a test"}]}
    assert wire.answer_text(wire.COMPLETIONS, completion) == "This is a test"
    response = {
        "output": [
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Calling it.", "annotations": []}],
            },
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"location":"Paris"}',
            },
        ]
    }
    assert wire.answer_text(wire.RESPONSES, response) == 'Calling it.{"location":"Paris"}'
    assert wire.answer_text(wire.EMBEDDINGS, {"data": [{"embedding": [0.1]}]}) == ""
