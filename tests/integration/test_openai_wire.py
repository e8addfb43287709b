"""The OpenAI wire, whole, through the official SDK: what a client sends reaches the
model server field by field (only the model's name mapped), and its answer comes back
whole, streamed or not; and the request's cost to the cluster: the job holds a
reference, not the prompt, and leaves once its answer was delivered.

The model server is the fault server's ``/record/<key>/v1``: it answers like an
OpenAI server (tool calls when given tools, logprobs when asked) and keeps every
body it received.
"""

from __future__ import annotations

import base64
import json
import struct
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from redis import Redis

from devstack.cluster import Cluster
from devstack.faultserver import FaultServer
from devstack.procs import Proc, wait_for
from devstack.redisserver import RedisServer

from .conftest import Api, Identities, Tenant, flavor_manifest, start_api

WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
        "strict": True,
    },
}
PIXEL = (  # a 1x1 PNG
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGAAAAA"
    "EAAH2FzhVAAAAAElFTkSuQmCC"
)


class Recorder:
    """A flavor on the recording model server, and what that server received."""

    def __init__(self, tenant: Tenant, faults: FaultServer, name: str = "rec") -> None:
        self.key, self.faults, self.name = uuid.uuid4().hex, faults, name
        manifest = flavor_manifest(name, f"{faults.base}/record/{self.key}/v1", "served-model")
        manifest["spec"]["capabilities"] = ["chat", "embeddings"]
        tenant.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))

    def received(self) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = httpx.get(f"{self.faults.base}/received/{self.key}").json()
        return got

    def last(self) -> dict[str, Any]:
        return self.received()[-1]


@pytest.fixture
def recorder(
    tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc], api: Api
) -> Recorder:
    made = Recorder(tenant, fault_server)
    start_worker(f"{tenant.namespace}/{made.name}")
    return made


def client(api: Api, tenant: Tenant) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api.url}/v1", api_key=tenant.token, max_retries=0, timeout=120)


def test_a_modern_chat_request_reaches_the_server_whole(
    api: Api, tenant: Tenant, recorder: Recorder
) -> None:
    messages: Any = [
        {"role": "developer", "content": "Use the tools."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is the weather where this was taken?"},
                {"type": "image_url", "image_url": {"url": PIXEL, "detail": "low"}},
            ],
        },
    ]
    sent: dict[str, Any] = {
        "messages": messages,
        "tools": [WEATHER],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "logprobs": True,
        "top_logprobs": 2,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
        "logit_bias": {"15": -50},
        "reasoning_effort": "low",
        "metadata": {"trace": "t-1"},
        "store": False,
        "service_tier": "auto",
        "prediction": {"type": "content", "content": "Sunny"},
        "modalities": ["text"],
        "user": "someone",
        "seed": 7,
        "max_completion_tokens": 32,
    }
    extra = {"top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1, "guided_json": {"type": "object"}}
    completion = client(api, tenant).chat.completions.create(
        model=recorder.name, extra_body=extra, **sent
    )
    got = recorder.last()
    assert got["path"] == "/v1/chat/completions"
    body = got["body"]
    assert body["model"] == "served-model"  # the flavor's model; nothing else changed
    for key, value in {**sent, **extra}.items():
        assert body[key] == value, key
    assert "n" not in body and "stream" not in body
    # The server's answer, whole: the tool call, its id, the finish reason, the fingerprint.
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert completion.system_fingerprint == "fp_fault"
    # The history with the call and the tool's answer goes back as it is, too.
    history: Any = [
        *messages,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear"}'},
    ]
    answer = client(api, tenant).chat.completions.create(
        model=recorder.name, messages=history, logprobs=True, top_logprobs=2
    )
    assert recorder.last()["body"]["messages"] == history
    assert answer.choices[0].message.content == "echo: What is the weather where this was taken?"
    logprobs = answer.choices[0].logprobs
    assert logprobs is not None and logprobs.content
    words = ["echo:", "What", "is", "the", "weather", "where", "this", "was", "taken?"]
    assert [t.token for t in logprobs.content] == words
    assert len(logprobs.content[0].top_logprobs) == 2


def test_streamed_tool_calls_and_logprobs_are_relayed_as_the_server_sends_them(
    api: Api, tenant: Tenant, recorder: Recorder
) -> None:
    stream = client(api, tenant).chat.completions.create(
        model=recorder.name,
        messages=[{"role": "user", "content": "weather?"}],
        tools=[WEATHER],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].id and calls[0].function and calls[0].function.name == "get_weather"
    pieces = "".join((tc.function.arguments or "") for tc in calls if tc.function)
    assert json.loads(pieces) == {"city": "Paris"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert recorder.last()["body"]["stream"] is True
    # The job's stored answer is the stream assembled: the call, whole.
    stream = client(api, tenant).chat.completions.create(
        model=recorder.name,
        messages=[{"role": "user", "content": "count with me"}],
        logprobs=True,
        stream=True,
    )
    chunks = list(stream)
    tokens = [
        t.token
        for c in chunks
        if c.choices and c.choices[0].logprobs
        for t in c.choices[0].logprobs.content or []
    ]
    assert tokens == ["echo:", "count", "with", "me"]
    assert all(c.usage is None for c in chunks)  # include_usage was not asked for


def test_text_completions_are_forwarded_and_streamed(
    api: Api, tenant: Tenant, recorder: Recorder
) -> None:
    sdk = client(api, tenant)
    text = sdk.completions.create(
        model=recorder.name,
        prompt=["Once upon", "A long time"],
        echo=True,
        suffix=" THE END",
        logprobs=2,
        max_tokens=16,
    )
    body = recorder.last()["body"]
    assert recorder.last()["path"] == "/v1/completions"
    assert (body["prompt"], body["echo"], body["suffix"], body["logprobs"]) == (
        ["Once upon", "A long time"],
        True,
        " THE END",
        2,
    )
    assert [c.text for c in text.choices] == [
        "Once uponecho: Once upon THE END",
        "A long timeecho: A long time THE END",
    ]
    assert text.choices[0].logprobs is not None and text.usage is not None
    streamed = list(sdk.completions.create(model=recorder.name, prompt="Hi", stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == "echo: Hi"


def test_responses_are_forwarded_and_their_events_relayed(
    api: Api, tenant: Tenant, recorder: Recorder
) -> None:
    sdk = client(api, tenant)
    said: Any = [{"role": "user", "content": [{"type": "input_text", "text": "hello there"}]}]
    response = sdk.responses.create(
        model=recorder.name,
        input=said,
        instructions="Be brief.",
        tools=[
            {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": False}
        ],
        text={"format": {"type": "text"}},
        store=False,
    )
    assert recorder.last()["path"] == "/v1/responses"
    body = recorder.last()["body"]
    assert body["instructions"] == "Be brief." and body["store"] is False
    assert body["tools"][0]["name"] == "f" and body["model"] == "served-model"
    assert response.output_text == "echo: hello there"
    events = list(sdk.responses.create(model=recorder.name, input="hi", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert (
        "".join(e.delta for e in events if e.type == "response.output_text.delta").strip()
        == "echo: hi"
    )


def test_embeddings_take_dimensions_token_arrays_and_user(
    api: Api, tenant: Tenant, recorder: Recorder
) -> None:
    sdk = client(api, tenant)
    result = sdk.embeddings.create(
        model=recorder.name, input=[[1, 2, 3], [4, 5]], dimensions=3, user="someone"
    )
    body = recorder.last()["body"]
    assert body["input"] == [[1, 2, 3], [4, 5]]
    assert (body["dimensions"], body["user"], body["encoding_format"]) == (3, "someone", "float")
    assert len(result.data) == 2 and result.data[0].embedding == [9.0, 1.0, 0.0]
    encoded = sdk.embeddings.create(model=recorder.name, input="abc", encoding_format="base64")
    raw = base64.b64decode(encoded.data[0].embedding)  # type: ignore[arg-type]
    assert list(struct.unpack("<3f", raw)) == [3.0, 1.0, 0.0]


def test_a_long_request_is_stored_by_reference_and_reaches_the_server_whole(
    api: Api, tenant: Tenant, recorder: Recorder, redis_server: RedisServer
) -> None:
    # Three messages of 900,000 characters: 2.7 MB, well under the body limit.
    long = "word " * 180_000
    messages: Any = [{"role": "user", "content": long} for _ in range(3)]
    completion = client(api, tenant).chat.completions.with_raw_response.create(
        model=recorder.name, messages=messages, max_tokens=4
    )
    assert completion.parse().choices[0].message.content
    name = completion.headers["x-llmloom-task"]
    job = tenant.get("llmjob", name)
    assert len(json.dumps(job)) < 4096 and "word word" not in json.dumps(job)
    ref = job["spec"]["request"]
    assert ref["bytes"] > 2_700_000 and ref["key"].startswith("llmloom:request:")
    assert recorder.last()["body"]["messages"] == messages
    # 20 MB reaches the server whole too.
    huge = [{"role": "user", "content": "x" * 20_000_000}]
    reply = httpx.post(
        f"{api.url}/v1/chat/completions?wait=120",
        headers={"Authorization": f"Bearer {tenant.token}"},
        json={"model": recorder.name, "messages": huge, "max_tokens": 2},
        timeout=300,
    )
    assert reply.status_code == 200, reply.text[:500]
    assert len(recorder.last()["body"]["messages"][0]["content"]) == 20_000_000


def test_a_stream_waiting_in_the_queue_is_kept_alive(
    api: Api,
    tenant: Tenant,
    fault_server: FaultServer,
    start_worker: Callable[..., Proc],
) -> None:
    made = Recorder(tenant, fault_server, "later")
    lines: list[str] = []
    body = {"model": made.name, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream(
        "POST",
        f"{api.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {tenant.token}"},
        timeout=120,
    ) as reply:
        for line in reply.iter_lines():
            if not line:
                continue  # between events
            lines.append(line)
            if lines.count(": keep-alive") == 2 and len(lines) < 10:
                start_worker(f"{tenant.namespace}/{made.name}")  # no worker until now
    assert lines.count(": keep-alive") >= 2  # one a second here (15 s by default)
    data = [json.loads(x[6:]) for x in lines if x.startswith("data: {")]
    assert "".join(d["choices"][0]["delta"].get("content") or "" for d in data if d["choices"])
    assert lines[-1] == "data: [DONE]"


@pytest.fixture
def quick_api(
    cluster: Cluster, redis_server: RedisServer, identities: Identities, tmp_path: Path
) -> Iterator[Api]:
    """An API whose requests' jobs leave one second after they finished."""
    started = start_api(
        cluster, redis_server, identities, tmp_path, LLMLOOM_REQUEST_JOB_TTL_SECONDS="1"
    )
    yield started
    started.proc.stop()


def test_a_requests_job_leaves_once_answered_and_its_task_stays_readable(
    quick_api: Api, tenant: Tenant, recorder: Recorder, redis_server: RedisServer
) -> None:
    sdk = client(quick_api, tenant)
    raw = sdk.chat.completions.with_raw_response.create(
        model=recorder.name, messages=[{"role": "user", "content": "bye"}]
    )
    name = raw.headers["x-llmloom-task"]
    ref = tenant.get("llmjob", name)["spec"]["request"]
    wait_for(
        lambda: tenant.kubectl("get", "llmjob", name, check=False).strip() == "",
        30,
        "the job to leave",
    )
    # Its task answers from Redis, as long as the result lives; the stored request went.
    task = httpx.get(
        f"{quick_api.url}/v1/tasks/{name}", headers={"Authorization": f"Bearer {tenant.token}"}
    ).json()
    assert task["status"] == "succeeded"
    assert task["response"]["choices"][0]["message"]["content"] == "echo: bye"
    redis = Redis.from_url(redis_server.url)
    wait_for(lambda: not redis.exists(ref["key"]), 10, "the stored request to go")


def test_a_request_whose_stored_body_is_lost_fails_with_a_reason_the_client_sees(
    api: Api,
    tenant: Tenant,
    fault_server: FaultServer,
    start_worker: Callable[..., Proc],
    redis_server: RedisServer,
) -> None:
    made = Recorder(tenant, fault_server, "lossy")
    auth = {"Authorization": f"Bearer {tenant.token}"}
    queued = httpx.post(
        f"{api.url}/v1/chat/completions?wait=0",
        headers=auth,
        json={"model": made.name, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert queued.status_code == 202
    name = queued.json()["id"]
    # Redis loses the stored request before a worker takes the job.
    Redis.from_url(redis_server.url).delete(tenant.get("llmjob", name)["spec"]["request"]["key"])
    start_worker(f"{tenant.namespace}/{made.name}")
    task = httpx.get(f"{api.url}/v1/tasks/{name}?wait=60", headers=auth).json()
    assert task["status"] == "failed" and task["error"]["code"] == "RequestLost"
    assert "send the request again" in task["error"]["message"]
    assert made.received() == []  # nothing reached the model server
