"""Embeddings as jobs: through the OpenAI SDK and kubectl, from a real embedding model."""

from __future__ import annotations

import json
from collections.abc import Callable

import openai
import pytest
from redis import Redis

from devstack.embedserver import EmbedServer
from devstack.modelserver import ModelServer
from devstack.procs import Proc
from devstack.redisserver import RedisServer

from .conftest import EXAMPLES, Api, Tenant


@pytest.fixture
def minilm(tenant: Tenant, embed_server: EmbedServer, start_worker: Callable[..., Proc]) -> str:
    tenant.kubectl("apply", "-f", str(EXAMPLES / "flavor-minilm-local.yaml"))
    tenant.kubectl(
        "patch",
        "flavor",
        "minilm",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"endpoint": embed_server.url}}),
    )
    start_worker(f"{tenant.namespace}/minilm")
    return "minilm"


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))  # the model's vectors are unit length


def test_embeddings_through_the_openai_sdk(api: Api, tenant: Tenant, minilm: str) -> None:
    client = openai.OpenAI(base_url=f"{api.url}/v1", api_key=tenant.token, max_retries=0)
    texts = [
        "The cat sat on the mat.",
        "A kitten is resting on a rug.",
        "Quarterly revenue rose 4%.",
    ]
    # The SDK asks for base64 unless told otherwise, and decodes it; both encodings agree.
    packed = client.embeddings.create(model=minilm, input=texts)
    plain = client.embeddings.create(model=minilm, input=texts, encoding_format="float")
    for a, b in zip(packed.data, plain.data, strict=True):
        assert a.embedding == pytest.approx(b.embedding, abs=1e-6)
    vectors = [d.embedding for d in plain.data]
    assert [len(v) for v in vectors] == [384, 384, 384]
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    assert plain.usage.prompt_tokens > 0
    one = client.embeddings.create(model=minilm, input="just one")
    assert len(one.data) == 1


def test_a_long_list_is_answered_in_order_with_each_texts_own_vector(
    api: Api, tenant: Tenant, minilm: str
) -> None:
    client = openai.OpenAI(base_url=f"{api.url}/v1", api_key=tenant.token, max_retries=0)
    texts = [f"Item number {i} of the catalogue." for i in range(600)]  # three calls of 256
    many = client.embeddings.create(model=minilm, input=texts, encoding_format="float")
    assert [d.index for d in many.data] == list(range(600))
    for i in (0, 255, 256, 599):  # each side of each batch's edge is the text's own vector
        alone = client.embeddings.create(model=minilm, input=texts[i], encoding_format="float")
        assert many.data[i].embedding == pytest.approx(alone.data[0].embedding, abs=1e-5)
    assert many.usage.prompt_tokens > 600


def test_embeddings_job_with_kubectl(
    tenant: Tenant, minilm: str, redis_server: RedisServer, api: Api
) -> None:
    tenant.kubectl("apply", "-f", str(EXAMPLES / "embeddings-job.yaml"))
    tenant.kubectl("wait", "llmjob/embed-faq", "--for=condition=Succeeded", "--timeout=60s")
    status = tenant.get("llmjob", "embed-faq")["status"]
    stored = Redis.from_url(redis_server.url).get(status["result"]["key"])
    assert stored is not None
    data = json.loads(stored)["response"]["data"]
    assert [d["index"] for d in data] == [0, 1, 2] and len(data[0]["embedding"]) == 384
    assert status["usage"]["promptTokens"] > 0 and status["usage"]["completionTokens"] == 0


def test_a_chat_model_does_not_embed(
    api: Api, tenant: Tenant, smollm2: str, model_server: ModelServer
) -> None:
    client = openai.OpenAI(base_url=f"{api.url}/v1", api_key=tenant.token, max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model=smollm2, input="hello")
    assert err.value.code == "model_not_supported"
