"""Flavors with ``provider: ollama``, end to end over Ollama's native API.

Jobs go through the API (the official openai SDK) or kubectl, a worker, and the
project's protocol-exact Ollama server, which answers from the real small
models: SmolLM2 for chat (``/api/chat``, NDJSON when streamed) and
all-MiniLM-L6-v2 for ``/api/embed``. Token usage is what Ollama counted
(``prompt_eval_count``, ``eval_count``): each test compares it with the same
request sent to the Ollama server directly.
"""

from __future__ import annotations

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
from devstack.ollamaserver import CHAT_MODEL, OllamaServer
from devstack.procs import Proc, wait_for
from devstack.redisserver import RedisServer

from .conftest import Api, Tenant, flavor_manifest

STORY: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Write a long story about a dragon."}
]


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
    return openai.OpenAI(base_url=f"{api.url}/v1", api_key=tenant.token, max_retries=0, timeout=120)


def ollama_chat(server: OllamaServer, messages: Sequence[Any], **options: Any) -> Any:
    """The same chat asked of the Ollama server directly, not streamed."""
    body = {"model": CHAT_MODEL, "messages": messages, "stream": False, "options": options}
    resp = httpx.post(f"{server.url}/api/chat", json=body, timeout=60)
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
    tenant: Tenant, ollama_server: OllamaServer, start_worker: Callable[..., Proc], api: Api
) -> OllamaServer:
    """The flavors smollm2 (chat) and minilm (embeddings) on the Ollama server, and a worker."""
    apply(
        tenant,
        ollama_flavor("smollm2", ollama_server.url, CHAT_MODEL),
        ollama_flavor("minilm", ollama_server.url, "all-minilm", ["embeddings"]),
    )
    start_worker(f"{tenant.namespace}/smollm2", f"{tenant.namespace}/minilm")
    return ollama_server


def test_chat_is_answered_by_ollama_with_its_token_counts(
    api: Api, tenant: Tenant, ollama: OllamaServer
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
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == direct["prompt_eval_count"]
    assert completion.usage.completion_tokens == direct["eval_count"] == 16
    assert completion.model == CHAT_MODEL  # as Ollama named it in its answer
    (name,) = tenant.kubectl("get", "llmjobs", "-o", "name").split()
    status = tenant.get("llmjob", name.split("/")[1])["status"]
    assert status["state"] == "Succeeded" and status["flavorUsed"] == "smollm2"
    assert status["usage"]["promptTokens"] == direct["prompt_eval_count"]


def test_streamed_chat_relays_ollamas_ndjson_as_server_sent_events(
    api: Api, tenant: Tenant, ollama: OllamaServer
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
    # One delta per NDJSON line (a token each), then the done line's finish reason.
    assert len([d for d in deltas if d]) >= 8 and text.strip()
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    usage = chunks[-1].usage
    direct = ollama_chat(ollama, STORY, temperature=0, num_predict=16)
    assert chunks[-1].choices == [] and usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        direct["prompt_eval_count"],
        direct["eval_count"],
    )
    (name,) = tenant.kubectl("get", "llmjobs", "-o", "name").split()
    job = tenant.get("llmjob", name.split("/")[1])
    assert job["spec"]["stream"] is True and job["status"]["state"] == "Succeeded"
    assert job["status"]["usage"]["completionTokens"] == usage.completion_tokens


def test_kubectl_job_passes_its_parameters_as_ollama_options(
    tenant: Tenant, ollama: OllamaServer, redis_server: RedisServer
) -> None:
    count = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    free = ollama_chat(ollama, count, temperature=0, num_predict=20)
    assert "," in free["message"]["content"]  # so a stop at "," must cut the answer short
    apply(tenant, chat_job("counting", "smollm2", count, temperature=0, maxTokens=20, stop=[","]))
    tenant.kubectl("wait", "llmjob/counting", "--for=condition=Succeeded", "--timeout=60s")
    status = tenant.get("llmjob", "counting")["status"]
    stored = Redis.from_url(redis_server.url).get(status["result"]["key"])
    assert stored is not None
    choice = json.loads(stored)["response"]["choices"][0]
    assert choice["message"]["content"] == free["message"]["content"].split(",")[0]
    assert choice["finish_reason"] == "stop"
    assert status["usage"]["promptTokens"] == free["prompt_eval_count"]
    assert 0 < status["usage"]["completionTokens"] < free["eval_count"]


def test_embeddings_come_from_ollamas_embed_route(
    api: Api, tenant: Tenant, ollama: OllamaServer
) -> None:
    texts = ["The cat sat on the mat.", "A kitten is resting on a rug.", "Quarterly revenue rose."]
    result = client(api, tenant).embeddings.create(
        model="minilm", input=texts, encoding_format="float"
    )
    direct = httpx.post(
        f"{ollama.url}/api/embed", json={"model": "all-minilm", "input": texts}, timeout=60
    ).json()
    vectors = [d.embedding for d in result.data]
    assert [len(v) for v in vectors] == [384, 384, 384]
    for got, want in zip(vectors, direct["embeddings"], strict=True):
        assert got == pytest.approx(want, abs=1e-6)

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    assert result.usage.prompt_tokens == direct["prompt_eval_count"] > 0


def test_a_model_ollama_does_not_have_fails_the_job_with_ollamas_message(
    api: Api, tenant: Tenant, ollama_server: OllamaServer, start_worker: Callable[..., Proc]
) -> None:
    apply(tenant, ollama_flavor("absent", ollama_server.url, "llama3.2:1b"))
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
    assert failed["message"] == "model 'llama3.2:1b' not found"
    assert status["attempts"] == 1
    with pytest.raises(openai.APIStatusError) as err:
        client(api, tenant).chat.completions.create(
            model="absent", messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.status_code == 502 and "model 'llama3.2:1b' not found" in err.value.message


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
        apply(tenant, ollama_flavor("fresh", server.url, CHAT_MODEL))
        apply(
            tenant,
            chat_job("first", "fresh", STORY, temperature=0, maxTokens=8),
        )
        start_worker(f"{tenant.namespace}/fresh", env={"LLMLOOM_WAIT_FOR_MODEL": "true"})
        tenant.kubectl("wait", "llmjob/first", "--for=condition=Succeeded", "--timeout=90s")
        names = [m["name"] for m in httpx.get(f"{server.url}/api/tags").json()["models"]]
        assert names == [CHAT_MODEL]
        assert tenant.get("llmjob", "first")["status"]["usage"]["completionTokens"] == 8
        tenant.kubectl("wait", "flavor/fresh", "--for=condition=Ready", "--timeout=30s")
    finally:
        server.stop()
