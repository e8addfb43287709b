"""Flavors with ``provider: ollama``, end to end against the real Ollama.

Jobs go through the API (the official openai SDK) or kubectl, a worker, and
Ollama 0.12.6 itself (built from its Go module by ``hack/build-ollama.sh``)
serving the packaged SmolLM2: chat (``/api/chat``, NDJSON when streamed) with
tools, images and options translated from the OpenAI wire, embeddings
(``/api/embed``), text completions through Ollama's own OpenAI route, and the
Responses API over chat. Token usage is what Ollama counted
(``prompt_eval_count``, ``eval_count``): tests compare it with the same request
sent to Ollama directly. What Ollama cannot say is a 400 naming the field.

Only pulling a model on start needs the protocol imitation of
``devstack.ollamaserver``: the real Ollama pulls from the internet.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from openai.types.chat import ChatCompletionMessageParam
from redis import Redis

from devstack.modelserver import ModelServer
from devstack.ollama import CHAT_MODEL, TOOLS_MODEL, RealOllama
from devstack.ollamaserver import CHAT_MODEL as IMITATED_MODEL
from devstack.ollamaserver import OllamaServer
from devstack.procs import Proc, wait_for
from devstack.redisserver import RedisServer

from .conftest import Api, Tenant, flavor_manifest

STORY: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Write a long story about a dragon."}
]
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
# A 135M model writes the call reliably when a schema holds its answer to one.
CALL_SCHEMA: Any = {
    "type": "json_schema",
    "json_schema": {
        "name": "call",
        "schema": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "enum": ["get_weather"]},
                "arguments": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
            "required": ["name", "arguments"],
        },
    },
}
# A 1x1 PNG.
PIXEL = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a5f0a6b60000000049454e44ae426082"
    )
).decode()


def ollama_flavor(
    name: str, endpoint: str, model: str, capabilities: Sequence[str] = ("chat",)
) -> dict[str, Any]:
    manifest = flavor_manifest(name, endpoint, model)
    manifest["spec"].update(provider="ollama", capabilities=list(capabilities))
    return manifest


def apply(tenant: Tenant, *objs: dict[str, Any]) -> None:
    for obj in objs:
        tenant.kubectl("apply", "-f", "-", input=yaml.safe_dump(obj))


def client(api: Api, tenant: Tenant) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api.url}/v1", api_key=tenant.token, max_retries=0, timeout=180)


def ollama_chat(server: RealOllama, messages: Sequence[Any], **options: Any) -> Any:
    """The same chat asked of Ollama directly, not streamed."""
    body = {"model": CHAT_MODEL, "messages": messages, "stream": False, "options": options}
    resp = httpx.post(f"{server.url}/api/chat", json=body, timeout=180)
    resp.raise_for_status()
    return resp.json()


def chat_job(name: str, flavor: str, messages: Sequence[Any], **params: Any) -> Any:
    return {
        "apiVersion": "llmloom.io/v1alpha1",
        "kind": "LLMJob",
        "metadata": {"name": name},
        "spec": {"flavor": flavor, "messages": list(messages), "parameters": params},
    }


@pytest.fixture
def ollama(
    tenant: Tenant, real_ollama: RealOllama, start_worker: Callable[..., Proc], api: Api
) -> RealOllama:
    """The flavors smollm2 (chat), smollm2-tools (chat with tools) and embedder (SmolLM2's
    embeddings) on the real Ollama, and a worker for them."""
    apply(
        tenant,
        ollama_flavor("smollm2", real_ollama.url, CHAT_MODEL),
        ollama_flavor("tools", real_ollama.url, TOOLS_MODEL),
        ollama_flavor("embedder", real_ollama.url, CHAT_MODEL, ["embeddings"]),
    )
    queues = [f"{tenant.namespace}/{f}" for f in ("smollm2", "tools", "embedder")]
    start_worker(*queues)
    return real_ollama


def test_chat_is_answered_by_ollama_with_its_token_counts(
    api: Api, tenant: Tenant, ollama: RealOllama
) -> None:
    completion = client(api, tenant).chat.completions.create(
        model="smollm2", messages=STORY, max_tokens=16, temperature=0
    )
    direct = ollama_chat(ollama, STORY, temperature=0, num_predict=16)
    assert direct["done_reason"] == "length" and direct["eval_count"] == 16
    choice = completion.choices[0]
    assert choice.message.content and choice.message.content.strip()
    # Sampling options reached the model (greedy, 16 tokens), and the usage is
    # Ollama's own count of the templated prompt, not a tokenizer's estimate.
    assert choice.finish_reason == "length"
    assert choice.message.content == direct["message"]["content"]
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == direct["prompt_eval_count"]
    assert completion.usage.completion_tokens == direct["eval_count"] == 16
    assert completion.model == CHAT_MODEL  # as Ollama named it in its answer


def test_streamed_chat_relays_ollamas_ndjson_as_server_sent_events(
    api: Api, tenant: Tenant, ollama: RealOllama
) -> None:
    stream = client(api, tenant).chat.completions.create(
        model="smollm2",
        messages=STORY,
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices]
    text = "".join(d or "" for d in deltas)
    direct = ollama_chat(ollama, STORY, temperature=0, num_predict=16)
    # One delta per NDJSON line (a token each), then the done line's finish reason.
    assert len([d for d in deltas if d]) >= 8 and text == direct["message"]["content"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        direct["prompt_eval_count"],
        direct["eval_count"],
    )


def test_kubectl_job_passes_its_parameters_as_ollama_options(
    tenant: Tenant, ollama: RealOllama, redis_server: RedisServer
) -> None:
    count = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    free = ollama_chat(ollama, count, temperature=0, num_predict=20)
    stop = " of"
    assert stop in free["message"]["content"]  # so a stop there must cut the answer short
    apply(tenant, chat_job("counting", "smollm2", count, temperature=0, maxTokens=20, stop=[stop]))
    tenant.kubectl("wait", "llmjob/counting", "--for=condition=Succeeded", "--timeout=120s")
    status = tenant.get("llmjob", "counting")["status"]
    stored = Redis.from_url(redis_server.url).get(status["result"]["key"])
    assert stored is not None
    choice = json.loads(stored)["response"]["choices"][0]
    assert choice["message"]["content"] == free["message"]["content"].split(stop)[0]
    assert choice["finish_reason"] == "stop"
    assert status["usage"]["promptTokens"] == free["prompt_eval_count"]
    assert 0 < status["usage"]["completionTokens"] < free["eval_count"]


def test_embeddings_come_from_ollamas_embed_route(
    api: Api, tenant: Tenant, ollama: RealOllama
) -> None:
    texts = ["The cat sat on the mat.", "A kitten is resting on a rug."]
    result = client(api, tenant).embeddings.create(
        model="embedder", input=texts, encoding_format="float"
    )
    direct = httpx.post(
        f"{ollama.url}/api/embed", json={"model": CHAT_MODEL, "input": texts}, timeout=120
    ).json()
    vectors = [d.embedding for d in result.data]
    assert len(vectors) == 2 and len(vectors[0]) == len(direct["embeddings"][0]) > 100
    for got, want in zip(vectors, direct["embeddings"], strict=True):
        assert got == pytest.approx(want, abs=1e-5)
    assert result.usage.prompt_tokens == direct["prompt_eval_count"] > 0
    # Token ids have no words in Ollama's embed API: a 400 naming the field, before a job.
    with pytest.raises(openai.BadRequestError) as err:
        client(api, tenant).embeddings.create(model="embedder", input=[[1, 2, 3]])
    assert err.value.body["param"] == "input"  # type: ignore[index]


def test_tools_reach_ollama_and_its_tool_calls_come_back_as_openais(
    api: Api, tenant: Tenant, ollama: RealOllama
) -> None:
    ask: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "What is the weather in Paris?"}
    ]
    completion = client(api, tenant).chat.completions.create(
        model="tools",
        messages=ask,
        tools=[WEATHER_TOOL],
        response_format=CALL_SCHEMA,
        temperature=0,
        max_tokens=64,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"]
    # The history goes back: the assistant's call, the tool's answer; Ollama answers.
    history: list[ChatCompletionMessageParam] = [
        *ask,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [call.model_dump()],  # type: ignore[list-item]
        },
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 24 degrees."},
    ]
    after = client(api, tenant).chat.completions.create(
        model="tools", messages=history, tools=[WEATHER_TOOL], max_tokens=24, temperature=0
    )
    assert after.choices[0].message.content
    # A model whose template has no tools: Ollama's own refusal, as the client's 400.
    with pytest.raises(openai.BadRequestError) as err:
        client(api, tenant).chat.completions.create(
            model="smollm2", messages=ask, tools=[WEATHER_TOOL], max_tokens=8
        )
    assert "does not support tools" in err.value.message


def test_images_go_to_ollama_inline_and_links_are_refused_with_the_field(
    api: Api, tenant: Tenant, ollama: RealOllama
) -> None:
    parts: Any = [
        {"type": "text", "text": "Describe the picture in one word."},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
    ]
    completion = client(api, tenant).chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": parts}], max_tokens=4
    )
    assert completion.choices[0].message.content is not None
    linked: Any = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    with pytest.raises(openai.BadRequestError) as err:
        client(api, tenant).chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": linked}], max_tokens=4
        )
    assert err.value.body["param"] == "messages[0].content[0].image_url.url"  # type: ignore[index]
    assert tenant.kubectl("get", "llmjobs", "-o", "name").count("llmjob") == 1  # no job made


def test_a_field_ollama_cannot_say_is_a_400_naming_it(
    api: Api, tenant: Tenant, ollama: RealOllama
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client(api, tenant).chat.completions.create(
            model="smollm2", messages=STORY, logit_bias={"15": -100}, max_tokens=4
        )
    assert err.value.body["param"] == "logit_bias"  # type: ignore[index]
    assert err.value.body["code"] == "unsupported_parameter"  # type: ignore[index]
    # Ollama's own options, sent through the SDK's extra_body, reach it.
    completion = client(api, tenant).chat.completions.create(
        model="smollm2", messages=STORY, max_tokens=4, extra_body={"top_k": 1, "num_ctx": 1024}
    )
    assert completion.usage is not None and completion.usage.completion_tokens == 4


def test_completions_and_responses_on_an_ollama_flavor(
    api: Api, tenant: Tenant, ollama: RealOllama
) -> None:
    text = client(api, tenant).completions.create(
        model="smollm2", prompt="Once upon a time", max_tokens=8, temperature=0
    )
    assert text.choices[0].text and text.usage is not None and text.usage.completion_tokens == 8
    # Ollama 0.12 has no /v1/responses: the request is served over chat, statelessly.
    response = client(api, tenant).responses.create(
        model="smollm2", input="Say hello.", instructions="Answer briefly.", max_output_tokens=8
    )
    assert response.output_text and response.usage is not None
    assert response.usage.output_tokens == 8 and response.status == "incomplete"
    streamed = list(
        client(api, tenant).responses.create(
            model="smollm2", input="Say hello.", max_output_tokens=8, stream=True
        )
    )
    kinds = [e.type for e in streamed]
    assert kinds[0] == "response.created" and kinds[-1] == "response.incomplete"
    assert "response.output_text.delta" in kinds
    with pytest.raises(openai.BadRequestError) as err:
        client(api, tenant).responses.create(
            model="smollm2", input="Again.", previous_response_id="resp_123"
        )
    assert err.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_a_model_ollama_does_not_have_fails_the_job_with_ollamas_message(
    api: Api, tenant: Tenant, real_ollama: RealOllama, start_worker: Callable[..., Proc]
) -> None:
    apply(tenant, ollama_flavor("absent", real_ollama.url, "llama3.2:1b"))
    start_worker(f"{tenant.namespace}/absent")
    # The operator reads /api/tags and says what is missing...
    cond = wait_for(
        lambda: next(
            (
                c
                for c in tenant.get("flavor", "absent").get("status", {}).get("conditions", [])
                if c["type"] == "Ready" and c["reason"] == "ModelNotServed"
            ),
            None,
        ),
        30,
        "the flavor to say its model is not served",
    )
    assert "'llama3.2:1b' is not among the models" in cond["message"]
    assert CHAT_MODEL in cond["message"]
    # ...and a job fails at once with Ollama's 404, not retried.
    apply(tenant, chat_job("lost", "absent", [{"role": "user", "content": "hi"}]))
    tenant.kubectl("wait", "llmjob/lost", "--for=condition=Failed", "--timeout=60s")
    status = tenant.get("llmjob", "lost")["status"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "ModelNotFound"
    assert "llama3.2:1b" in failed["message"] and "not found" in failed["message"]
    assert status["attempts"] == 1
    with pytest.raises(openai.APIStatusError) as err:
        client(api, tenant).chat.completions.create(
            model="absent", messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.status_code == 502 and "not found" in err.value.message


def test_a_worker_waiting_for_its_model_pulls_it_before_taking_jobs(
    tenant: Tenant,
    model_server: ModelServer,
    start_worker: Callable[..., Proc],
    api: Api,
    tmp_path: Path,
) -> None:
    # An Ollama server with nothing pulled yet, as in a new flavor pod.
    server = OllamaServer(tmp_path, model_server.url, installed=[], name="ollama-empty")
    try:
        assert httpx.get(f"{server.url}/api/tags").json() == {"models": []}
        apply(tenant, ollama_flavor("fresh", server.url, IMITATED_MODEL))
        apply(
            tenant,
            chat_job("first", "fresh", STORY, temperature=0, maxTokens=8),
        )
        start_worker(f"{tenant.namespace}/fresh", env={"LLMLOOM_WAIT_FOR_MODEL": "true"})
        tenant.kubectl("wait", "llmjob/first", "--for=condition=Succeeded", "--timeout=90s")
        names = [m["name"] for m in httpx.get(f"{server.url}/api/tags").json()["models"]]
        assert names == [IMITATED_MODEL]
        assert tenant.get("llmjob", "first")["status"]["usage"]["completionTokens"] == 8
        tenant.kubectl("wait", "flavor/fresh", "--for=condition=Ready", "--timeout=30s")
    finally:
        server.stop()
