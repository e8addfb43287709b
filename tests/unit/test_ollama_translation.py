"""The OpenAI wire in Ollama's native API, both ways: chat requests as /api/chat bodies
(messages, images, tool calls, options, formats), answers and streams back as OpenAI chat
completions and chunks, embeddings both ways; and what Ollama cannot say refused by name."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.create_embedding_response import CreateEmbeddingResponse

from llmloom import ollama
from llmloom.worker.providers import ChatAnswer

PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kg"
    + "AAAABJRU5ErkJggg=="
)
HI = [{"role": "user", "content": "hi"}]


def request(**body: Any) -> dict[str, Any]:
    return ollama.chat_request({"messages": HI, **body}, "qwen3:8b", stream=False)


def refused(body: dict[str, Any]) -> ollama.Untranslatable:
    with pytest.raises(ollama.Untranslatable) as err:
        ollama.chat_request(body, "qwen3:8b", stream=False)
    return err.value


# --------------------------------------------------------------------------- requests


def test_a_plain_chat_from_the_openai_sdk() -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "developer", "content": "Talk like a pirate."},
            {"role": "user", "content": "Are semicolons optional in JavaScript?"},
        ],
    }
    assert ollama.chat_request(body, "qwen3:8b", stream=True) == {
        "model": "qwen3:8b",
        "messages": [
            {"role": "system", "content": "Talk like a pirate."},
            {"role": "user", "content": "Are semicolons optional in JavaScript?"},
        ],
        "stream": True,
    }


def test_what_langchain_sends_by_default_asks_nothing_ollama_cannot_say() -> None:
    # ChatOpenAI(model=..., temperature=0.7): model, stream, n and the set parameters.
    body = {"model": "x", "messages": HI, "stream": False, "n": 1, "temperature": 0.7}
    assert ollama.chat_request(body, "qwen3:8b", stream=False) == {
        "model": "qwen3:8b",
        "messages": HI,
        "stream": False,
        "options": {"temperature": 0.7},
    }
    # Streaming with usage, and the fields that ask nothing of the model.
    quiet = {
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "user-1234",
        "metadata": {"team": "a"},
        "store": False,
        "service_tier": "auto",
    }
    assert request(**quiet) == {"model": "qwen3:8b", "messages": HI, "stream": False}


def test_text_parts_are_joined_and_data_url_images_go_inline() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": f"data:image/png;base64,{PNG_B64}", "detail": "low"},
                    },
                    {"type": "text", "text": "Answer in one word."},
                    {
                        "type": "image_url",
                        "image_url": {"url": f"data:image/jpeg;base64,{PNG_B64}"},
                    },
                ],
            }
        ]
    }
    (message,) = ollama.chat_request(body, "llava", stream=False)["messages"]
    assert message == {
        "role": "user",
        "content": "What is in this image?\nAnswer in one word.",
        "images": [PNG_B64, PNG_B64],
    }


def test_an_image_url_given_as_a_bare_string_is_read_too() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": f"data:;base64,{PNG_B64}"}],
            }
        ]
    }
    (message,) = ollama.chat_request(body, "llava", stream=False)["messages"]
    assert message == {"role": "user", "content": "", "images": [PNG_B64]}


def test_an_image_link_is_refused_naming_where_it_is() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Describe images."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                ],
            },
        ]
    }
    err = refused(body)
    assert err.param == "messages[1].content[1].image_url.url"
    assert "data: URL" in err.message and str(err) == err.message


@pytest.mark.parametrize(
    ("part", "kind"),
    [
        (
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            "input_audio",
        ),
        ({"type": "file", "file": {"file_id": "file-abc"}}, "file"),
        ({"type": "refusal", "refusal": "no"}, "refusal"),
        ("just text", "None"),
    ],
)
def test_parts_ollama_cannot_take_are_refused_by_their_place(part: Any, kind: str) -> None:
    err = refused({"messages": [{"role": "user", "content": [part]}]})
    assert err.param == "messages[0].content[0]" and kind in err.message


def test_messages_that_are_not_messages_are_refused() -> None:
    assert refused({"messages": "hi"}).param == "messages"
    assert refused({}).param == "messages"
    assert refused({"messages": ["hi"]}).param == "messages[0]"
    assert refused({"messages": [{"role": "user", "content": 7}]}).param == "messages[0].content"


def test_a_tool_round_trip_from_an_agent() -> None:
    """The second request of a tool-calling agent: the tools, the assistant's calls with
    their ids and JSON-text arguments, and the tools' answers naming the call."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the current weather in a given location",
                "parameters": {
                    "type": "object",
                    "properties": {"location": {"type": "string"}},
                    "required": ["location"],
                },
                "strict": True,
            },
        },
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
    ]
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "Weather and time in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "reasoning_content": "I should call both tools.",
                "tool_calls": [
                    {
                        "id": "call_w",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                    },
                    {
                        "id": "call_t",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": ""},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_t", "content": "12:00"},
            {"role": "tool", "tool_call_id": "call_w", "content": '{"temp": 21}'},
            {"role": "tool", "tool_call_id": "call_unknown", "content": "?"},
            {"role": "tool", "tool_call_id": "call_w", "name": "weather_tool", "content": "ok"},
        ],
        "tools": tools,
        "tool_choice": "auto",
        "parallel_tool_calls": True,
    }
    out = ollama.chat_request(body, "qwen3:8b", stream=False)
    assert out["tools"] == tools
    assert "options" not in out
    user, assistant, time_, weather, unknown, named = out["messages"]
    assert user == {"role": "user", "content": "Weather and time in Paris?"}
    assert assistant == {
        "role": "assistant",
        "content": "",
        "thinking": "I should call both tools.",
        "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"location": "Paris"}}},
            {"function": {"name": "get_time", "arguments": {}}},
        ],
    }
    assert time_ == {"role": "tool", "content": "12:00", "tool_name": "get_time"}
    assert weather == {"role": "tool", "content": '{"temp": 21}', "tool_name": "get_weather"}
    assert unknown == {"role": "tool", "content": "?"}
    assert named["tool_name"] == "weather_tool"


def test_tool_call_arguments_already_an_object_are_kept() -> None:
    body = {
        "messages": [
            {
                "role": "assistant",
                "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}],
            }
        ]
    }
    (message,) = ollama.chat_request(body, "m", stream=False)["messages"]
    assert message["tool_calls"] == [{"function": {"name": "f", "arguments": {"a": 1}}}]


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]", "42"])
def test_tool_call_arguments_that_are_not_a_json_object_are_refused(arguments: str) -> None:
    body = {
        "messages": [
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {
                        "id": "d",
                        "type": "function",
                        "function": {"name": "g", "arguments": arguments},
                    },
                ],
            },
        ]
    }
    assert refused(body).param == "messages[1].tool_calls[1].function.arguments"


def test_a_tool_call_without_a_function_is_refused() -> None:
    body = {"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "custom"}]}]}
    assert refused(body).param == "messages[0].tool_calls[0]"


def test_tool_choice_none_shows_the_model_no_tools() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert "tools" not in request(tools=tools, tool_choice="none")
    assert request(tools=tools, tool_choice="auto")["tools"] == tools


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "get_weather"}}]
)
def test_a_tool_choice_ollama_cannot_force_is_refused(choice: Any) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    err = refused({"messages": HI, "tools": tools, "tool_choice": choice})
    assert err.param == "tool_choice" and "auto or none" in err.message


def test_one_tool_call_at_a_time_cannot_be_asked_of_ollama() -> None:
    assert refused({"messages": HI, "parallel_tool_calls": False}).param == "parallel_tool_calls"


def test_sampling_parameters_become_options() -> None:
    out = request(
        temperature=0.2,
        top_p=0.9,
        seed=42,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        stop="\n\n",
        max_tokens=128,
    )
    assert out["options"] == {
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 42,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
        "stop": ["\n\n"],
        "num_predict": 128,
    }
    assert request(stop=["a", "b"])["options"] == {"stop": ["a", "b"]}
    assert request(max_completion_tokens=64)["options"] == {"num_predict": 64}
    assert request(stop=None, temperature=None) == {
        "model": "qwen3:8b",
        "messages": HI,
        "stream": False,
    }


def test_ollamas_own_sampling_options_sent_through_extra_body() -> None:
    # client.chat.completions.create(..., extra_body={"top_k": 20, "min_p": 0.05, ...})
    out = request(
        top_k=20,
        min_p=0.05,
        typical_p=0.7,
        repetition_penalty=1.1,
        repeat_last_n=64,
        num_ctx=8192,
        num_keep=4,
        keep_alive="10m",
        think=True,
        options={"mirostat": 2, "num_gpu": 99},
    )
    assert out["options"] == {
        "top_k": 20,
        "min_p": 0.05,
        "typical_p": 0.7,
        "repeat_penalty": 1.1,
        "repeat_last_n": 64,
        "num_ctx": 8192,
        "num_keep": 4,
        "mirostat": 2,
        "num_gpu": 99,
    }
    assert (out["keep_alive"], out["think"]) == ("10m", True)
    assert request(repeat_penalty=1.2)["options"] == {"repeat_penalty": 1.2}


def test_max_completion_tokens_wins_over_max_tokens_whatever_their_order() -> None:
    first = {"messages": HI, "max_completion_tokens": 50, "max_tokens": 100}
    last = {"messages": HI, "max_tokens": 100, "max_completion_tokens": 50}
    assert ollama.chat_request(last, "m", stream=False)["options"] == {"num_predict": 50}
    assert ollama.chat_request(first, "m", stream=False)["options"] == {"num_predict": 50}


def test_response_formats_become_ollamas_format() -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    # What the openai SDK's client.beta.chat.completions.parse / LangChain's
    # with_structured_output(method="json_schema") send.
    as_schema = {
        "type": "json_schema",
        "json_schema": {"name": "Person", "strict": True, "schema": schema},
    }
    assert request(response_format=as_schema)["format"] == schema
    assert request(response_format={"type": "json_object"})["format"] == "json"
    no_schema = {"type": "json_schema", "json_schema": {"name": "Any"}}
    assert request(response_format=no_schema)["format"] == "json"
    assert "format" not in request(response_format={"type": "text"})
    err = refused({"messages": HI, "response_format": {"type": "grammar", "grammar": "root ::= x"}})
    assert err.param == "response_format"


@pytest.mark.parametrize(
    ("effort", "think"),
    [("low", "low"), ("medium", "medium"), ("high", "high"), ("minimal", False), ("none", False)],
)
def test_reasoning_effort_becomes_think(effort: str, think: Any) -> None:
    assert request(reasoning_effort=effort)["think"] == think


def test_text_modality_is_what_ollama_answers_in() -> None:
    assert "modalities" not in request(modalities=["text"])
    err = refused({"messages": HI, "modalities": ["text", "audio"], "audio": {"voice": "alloy"}})
    assert err.param == "modalities"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("logit_bias", {"2435": -100, "640": -100}),
        ("logprobs", True),
        ("top_logprobs", 2),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("prediction", {"type": "content", "content": "x"}),
        ("functions", [{"name": "f", "parameters": {}}]),
        ("web_search_options", {}),
        ("guided_json", {"type": "object"}),
    ],
)
def test_fields_ollama_has_no_words_for_are_refused_by_name(field: str, value: Any) -> None:
    err = refused({"messages": HI, field: value})
    assert err.param == field and field in err.message


# --------------------------------------------------------------------------- answers


def ollama_answer(**message: Any) -> dict[str, Any]:
    return {
        "model": "qwen3:8b",
        "created_at": "2025-10-17T11:28:31.372491Z",
        "message": {"role": "assistant", "content": "", **message},
        "done": True,
        "done_reason": "stop",
        "total_duration": 4883583458,
        "load_duration": 1334875,
        "prompt_eval_count": 26,
        "prompt_eval_duration": 342546000,
        "eval_count": 12,
        "eval_duration": 4535599000,
    }


def test_an_answer_becomes_a_chat_completion() -> None:
    out = ollama.chat_response(ollama_answer(content="The sky is blue."), "qwen3")
    assert out["id"].startswith("chatcmpl-") and out["object"] == "chat.completion"
    assert isinstance(out["created"], int) and out["model"] == "qwen3:8b"
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "The sky is blue."},
            "finish_reason": "stop",
        }
    ]
    assert out["usage"] == {"prompt_tokens": 26, "completion_tokens": 12, "total_tokens": 38}
    parsed = ChatCompletion.model_validate(out)
    assert parsed.choices[0].message.content == "The sky is blue."
    assert parsed.usage is not None and parsed.usage.total_tokens == 38


def test_an_answer_cut_at_its_limit_finishes_with_length() -> None:
    data = {**ollama_answer(content="The sky"), "done_reason": "length"}
    assert ollama.chat_response(data, "m")["choices"][0]["finish_reason"] == "length"


def test_tool_calls_come_back_with_ids_and_json_text_arguments() -> None:
    data = ollama_answer(
        thinking="The user wants the weather; I will call the tool.",
        tool_calls=[
            {"function": {"name": "get_weather", "arguments": {"location": "Paris", "days": 2}}},
            {"function": {"name": "get_time", "arguments": {}}},
        ],
    )
    out = ollama.chat_response(data, "m")
    (choice,) = out["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None
    assert message["reasoning_content"] == "The user wants the weather; I will call the tool."
    first, second = message["tool_calls"]
    assert first["id"].startswith("call_") and first["id"] != second["id"]
    assert first["type"] == "function" and "index" not in first
    assert first["function"]["name"] == "get_weather"
    assert json.loads(first["function"]["arguments"]) == {"location": "Paris", "days": 2}
    assert second["function"] == {"name": "get_time", "arguments": "{}"}
    parsed = ChatCompletion.model_validate(out)
    calls = parsed.choices[0].message.tool_calls
    assert calls is not None and len(calls) == 2
    # What the SDK's users do with the answer: json.loads the arguments.
    assert [json.loads(c.function.arguments) for c in calls if c.type == "function"] == [
        {"location": "Paris", "days": 2},
        {},
    ]


def test_text_beside_tool_calls_is_kept() -> None:
    data = ollama_answer(content="Let me check.", tool_calls=[{"function": {"name": "f"}}])
    message = ollama.chat_response(data, "m")["choices"][0]["message"]
    assert message["content"] == "Let me check."
    assert message["tool_calls"][0]["function"] == {"name": "f", "arguments": "{}"}


def test_an_answer_without_counts_or_model_uses_the_flavors() -> None:
    out = ollama.chat_response({"message": {"content": "x"}, "done": True}, "flavor-model")
    assert out["model"] == "flavor-model"
    assert out["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    ChatCompletion.model_validate(out)


# --------------------------------------------------------------------------- streams


def stream_parts(*messages: dict[str, Any], **done: Any) -> list[dict[str, Any]]:
    parts = [
        {
            "model": "qwen3:8b",
            "created_at": "2025-10-17T11:28:31Z",
            "message": {"role": "assistant", "content": "", **m},
            "done": False,
        }
        for m in messages
    ]
    last = {
        "model": "qwen3:8b",
        "created_at": "2025-10-17T11:28:32Z",
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 10,
        "eval_count": 5,
        **done,
    }
    return [*parts, last]


def chunks_of(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    maker = ollama.ChunkMaker("qwen3")
    return [c for part in parts for c in maker.chunks(part)]


def test_a_stream_becomes_chunks_ending_with_a_finish_and_a_usage_chunk() -> None:
    chunks = chunks_of(
        stream_parts({"thinking": "Hmm."}, {"content": "The sky"}, {"content": " is blue."})
    )
    assert [c["choices"][0]["delta"] if c["choices"] else None for c in chunks] == [
        {"role": "assistant", "reasoning_content": "Hmm."},
        {"content": "The sky"},
        {"content": " is blue."},
        {},
        None,
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, None, None, "stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["model"] for c in chunks} == {"qwen3"} and len({c["created"] for c in chunks}) == 1
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)


def test_a_stream_cut_at_its_limit_finishes_with_length() -> None:
    chunks = chunks_of(stream_parts({"content": "The"}, done_reason="length"))
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"


def test_a_part_with_nothing_new_makes_no_chunk() -> None:
    maker = ollama.ChunkMaker("m")
    first, empty = stream_parts({"content": "a"}, {"content": ""})[:2]
    assert len(maker.chunks(first)) == 1
    assert maker.chunks(empty) == []


def test_an_empty_answer_still_has_a_role_a_finish_and_usage() -> None:
    chunks = chunks_of(stream_parts())
    assert chunks[0]["choices"][0] == {
        "index": 0,
        "delta": {"role": "assistant"},
        "finish_reason": "stop",
    }
    assert chunks[1]["usage"]["total_tokens"] == 15


def test_streamed_tool_calls_finish_with_tool_calls_and_assemble() -> None:
    chunks = chunks_of(
        stream_parts(
            {"content": "Checking."},
            {
                "tool_calls": [
                    {
                        "function": {
                            "index": 0,
                            "name": "get_weather",
                            "arguments": {"location": "Paris"},
                        }
                    },
                    {"function": {"index": 1, "name": "get_time", "arguments": {"tz": "CET"}}},
                ]
            },
        )
    )
    calls = chunks[1]["choices"][0]["delta"]["tool_calls"]
    assert [c["index"] for c in calls] == [0, 1]
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in calls)
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    answer = ChatAnswer()
    for chunk in chunks:
        answer.add(chunk)
    message = answer.result("qwen3")["choices"][0]["message"]
    assert message["content"] == "Checking."
    assert [
        (c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in message["tool_calls"]
    ] == [
        ("get_weather", {"location": "Paris"}),
        ("get_time", {"tz": "CET"}),
    ]


def test_tool_calls_in_separate_parts_keep_separate_indices() -> None:
    chunks = chunks_of(
        stream_parts(
            # Ollama numbers each call in its function's "index" (api.ToolCallFunction).
            {
                "tool_calls": [
                    {
                        "function": {
                            "index": 0,
                            "name": "get_weather",
                            "arguments": {"city": "Paris"},
                        }
                    }
                ]
            },
            {
                "tool_calls": [
                    {"function": {"index": 1, "name": "get_time", "arguments": {"tz": "UTC"}}}
                ]
            },
        )
    )
    indices = [
        call["index"]
        for chunk in chunks
        for choice in chunk["choices"]
        for call in choice["delta"].get("tool_calls", [])
    ]
    assert indices == [0, 1]
    answer = ChatAnswer()
    for chunk in chunks:
        answer.add(chunk)
    names = [
        c["function"]["name"] for c in answer.result("m")["choices"][0]["message"]["tool_calls"]
    ]
    assert names == ["get_weather", "get_time"]


# --------------------------------------------------------------------------- embeddings


def test_an_embeddings_request_from_the_openai_sdk() -> None:
    # client.embeddings.create(model=..., input=[...], dimensions=256): the SDK asks base64.
    body = {
        "model": "text-embedding-3-small",
        "input": ["The food was delicious", "and the waiter..."],
        "encoding_format": "base64",
        "dimensions": 256,
        "user": "user-1",
    }
    assert ollama.embed_request(body, "nomic-embed-text") == {
        "model": "nomic-embed-text",
        "input": ["The food was delicious", "and the waiter..."],
        "dimensions": 256,
    }
    one = ollama.embed_request({"input": "hello", "truncate": False, "keep_alive": "5m"}, "m")
    assert one == {"model": "m", "input": "hello", "truncate": False, "keep_alive": "5m"}


@pytest.mark.parametrize("value", [[15339, 1917], [[15339, 1917], [9906]], ["ok", 5], None])
def test_embeddings_of_token_ids_are_refused(value: Any) -> None:
    with pytest.raises(ollama.Untranslatable) as err:
        ollama.embed_request({"input": value}, "m")
    assert err.value.param == "input" and "token ids" in err.value.message


def test_an_embeddings_field_ollama_has_no_words_for_is_refused() -> None:
    with pytest.raises(ollama.Untranslatable) as err:
        ollama.embed_request({"input": "x", "input_type": "query"}, "m")
    assert err.value.param == "input_type"


def test_an_embed_answer_becomes_an_openai_list() -> None:
    vectors = [[0.010071029, -0.0017594862, 0.05007221], [-0.0098027075, 0.06042978, 0.025]]
    data: dict[str, Any] = {
        "model": "nomic-embed-text",
        "embeddings": vectors,
        "total_duration": 14143917,
        "load_duration": 1019500,
        "prompt_eval_count": 8,
    }
    out = ollama.embed_response(data, "flavor-model")
    assert out == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": vectors[0]},
            {"object": "embedding", "index": 1, "embedding": vectors[1]},
        ],
        "model": "nomic-embed-text",
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }
    parsed = CreateEmbeddingResponse.model_validate(out)
    assert parsed.usage.prompt_tokens == 8 and len(parsed.data) == 2
    assert ollama.embed_response({"embeddings": []}, "m")["model"] == "m"
    with pytest.raises(KeyError):
        ollama.embed_response({"error": "x"}, "m")
