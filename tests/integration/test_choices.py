"""``n``: several choices for one chat request, each from its own call to the model."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import openai

from devstack.faultserver import FaultServer
from devstack.procs import Proc

from .conftest import Api, Tenant
from .test_jobs import echo_flavor


def test_n_choices_come_from_n_calls(
    api: Api, tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc]
) -> None:
    paced = echo_flavor(tenant, fault_server, "paced", "delay/0.2")
    start_worker(f"{tenant.namespace}/{paced}")
    client = openai.OpenAI(base_url=f"{api.url}/v1", api_key=tenant.token, max_retries=0)
    said = f"three of {uuid.uuid4().hex}"
    reply = client.chat.completions.create(
        model=paced, messages=[{"role": "user", "content": said}], n=3
    )
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert {c.message.content for c in reply.choices} == {f"echo: {said}"}
    timeline = httpx.get(f"{fault_server.base}/timeline").json()
    assert sum(1 for answer, _, _ in timeline if answer == f"echo: {said}") == 3
    one = client.chat.completions.create(model=paced, messages=[{"role": "user", "content": said}])
    assert reply.usage is not None and one.usage is not None
    assert reply.usage.total_tokens == 3 * one.usage.total_tokens


def test_n_choices_from_the_real_model(
    api: Api, tenant: Tenant, smollm2: str, start_worker: Callable[..., Proc]
) -> None:
    start_worker(f"{tenant.namespace}/{smollm2}")
    client = openai.OpenAI(base_url=f"{api.url}/v1", api_key=tenant.token, max_retries=0)
    reply = client.chat.completions.create(
        model=smollm2,
        messages=[{"role": "user", "content": "Name a fruit."}],
        n=2,
        max_tokens=8,
        temperature=1.0,
    )
    assert len(reply.choices) == 2 and all(c.message.content for c in reply.choices)
    assert reply.usage is not None and reply.usage.completion_tokens > 8 // 2
