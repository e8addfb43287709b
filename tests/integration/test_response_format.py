"""JSON answers: ``response_format`` through the SDK reaches the real model on the OpenAI
wire (llama.cpp) and the Ollama wire (``format``), and the answer follows the schema."""

from __future__ import annotations

import json
from collections.abc import Callable

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from devstack.ollama import RealOllama
from devstack.procs import Proc

from .conftest import Api, Tenant
from .test_ollama_wire import ollama

__all__ = ["ollama"]  # the fixture, used by name

SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}},
    "required": ["colour"],
    "additionalProperties": False,
}
ASK: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Pick a colour. Answer in JSON."}
]


def ask_json(api: Api, tenant: Tenant, model: str) -> dict[str, str]:
    client = openai.OpenAI(base_url=f"{api.url}/v1", api_key=tenant.token, max_retries=0)
    reply = client.chat.completions.create(
        model=model,
        messages=ASK,
        max_tokens=32,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "pick", "schema": SCHEMA, "strict": True},
        },
    )
    content = reply.choices[0].message.content
    assert content is not None
    answer: dict[str, str] = json.loads(content)
    return answer


def test_a_json_schema_answer_from_the_openai_wire(
    api: Api, tenant: Tenant, smollm2: str, start_worker: Callable[..., Proc]
) -> None:
    start_worker(f"{tenant.namespace}/{smollm2}")
    answer = ask_json(api, tenant, smollm2)
    assert set(answer) == {"colour"} and answer["colour"] in ("red", "green", "blue")
    job = tenant.get(
        "llmjob", tenant.kubectl("get", "llmjobs", "-o", "name").strip().split("/")[-1]
    )
    assert "parameters" not in job["spec"]  # the request went by reference, whole


def test_a_json_schema_answer_from_the_ollama_wire(
    api: Api, tenant: Tenant, ollama: RealOllama
) -> None:
    answer = ask_json(api, tenant, "smollm2")
    assert set(answer) == {"colour"} and answer["colour"] in ("red", "green", "blue")


def test_a_malformed_response_format_is_refused(api: Api, tenant: Tenant, smollm2: str) -> None:
    client = openai.OpenAI(base_url=f"{api.url}/v1", api_key=tenant.token, max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=smollm2, messages=ASK, extra_body={"response_format": {"type": "json_schema"}}
        )
    assert "json_schema" in str(err.value.message)
