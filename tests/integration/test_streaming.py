"""Streamed chat answers: deltas relayed as server-sent events while the job runs."""

from __future__ import annotations

from collections.abc import Callable

import openai
import yaml

from devstack.faultserver import FaultServer
from devstack.procs import Proc

from .conftest import Api, Tenant, flavor_manifest


def client(api: Api, tenant: Tenant) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api.url}/v1", api_key=tenant.token, max_retries=0, timeout=120)


def test_streaming_from_the_real_model(
    api: Api, tenant: Tenant, smollm2: str, start_worker: Callable[..., Proc]
) -> None:
    start_worker(f"{tenant.namespace}/{smollm2}")
    stream = client(api, tenant).chat.completions.create(
        model=smollm2,
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len([c for c in chunks if c.choices]) > 3 and text.strip()
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None and usage.completion_tokens > 0
    # The job holds the whole answer, as if it had not been streamed.
    (name,) = tenant.kubectl("get", "llmjobs", "-o", "name").split()
    job = tenant.get("llmjob", name.split("/")[1])
    assert job["spec"]["stream"] is True and job["status"]["state"] == "Succeeded"
    assert job["status"]["usage"]["completionTokens"] == usage.completion_tokens


def test_stream_without_usage_and_a_failing_stream(
    api: Api, tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc]
) -> None:
    for name, behaviour in (("echo", ""), ("locked", "status/401")):
        manifest = flavor_manifest(name, fault_server.endpoint(behaviour), "echo")
        tenant.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    start_worker(f"{tenant.namespace}/echo", f"{tenant.namespace}/locked")
    c = client(api, tenant)
    chunks = list(
        c.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "one two three"}], stream=True
        )
    )
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == "echo: one two three"
    assert all(ch.usage is None and ch.choices for ch in chunks)  # no usage unless asked
    failing = c.chat.completions.create(
        model="locked", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    try:
        list(failing)
        raise AssertionError("the stream did not report the failure")
    except openai.APIError as err:
        assert "injected failure 401" in str(err)
