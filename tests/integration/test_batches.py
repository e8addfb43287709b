"""The OpenAI Batch API through the official SDK: files, batches whose lines run as work
items on the queues (no LLMJob each), their output and error files, cancelling,
refused input, tenants."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from typing import Any, Final, Literal

import openai
import pytest
import rq
import yaml
from openai.types import Batch
from redis import Redis
from rq.registry import StartedJobRegistry

from devstack.embedserver import EmbedServer
from devstack.faultserver import FaultServer
from devstack.procs import Proc, wait_for
from devstack.redisserver import RedisServer

from .conftest import EXAMPLES, Api, Tenant, flavor_manifest
from .test_rate_limits import limit, usage

CHAT: Final = "/v1/chat/completions"


def client(api: Api, tenant: Tenant) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api.url}/v1", api_key=tenant.token, max_retries=0)


def echo(tenant: Tenant, faults: FaultServer, name: str = "echo", behaviour: str = "") -> str:
    manifest = flavor_manifest(name, faults.endpoint(behaviour), "echo")
    tenant.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    return name


def chat_line(custom_id: str, model: str, text: str) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return {"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body}


def upload(sdk: openai.OpenAI, *lines: dict[str, Any]) -> str:
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    return sdk.files.create(file=("requests.jsonl", data), purpose="batch").id


def wait_status(sdk: openai.OpenAI, batch_id: str, *states: str, timeout: float = 60) -> Batch:
    def ended() -> Batch | None:
        batch = sdk.batches.retrieve(batch_id)
        return batch if batch.status in states else None

    return wait_for(ended, timeout, f"batch {batch_id} to be {' or '.join(states)}", 0.3)


def lines(sdk: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    """A JSONL file of the batch, by custom_id."""
    assert file_id is not None
    text = sdk.files.content(file_id).text
    return {item["custom_id"]: item for item in map(json.loads, text.splitlines())}


def test_a_chat_batch_runs_to_completed_with_its_output_and_error_files(
    api: Api, tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc]
) -> None:
    model = echo(tenant, fault_server)
    start_worker(f"{tenant.namespace}/{model}")
    sdk = client(api, tenant)
    input_id = upload(
        sdk,
        chat_line("first", model, "one"),
        chat_line("second", model, "two"),
        chat_line("unknown-model", "no-such-model", "three"),
        chat_line("third", "echo", "four"),  # by the flavor's spec.model
    )
    batch = sdk.batches.create(
        input_file_id=input_id,
        endpoint=CHAT,
        completion_window="24h",
        metadata={"purpose": "test"},
    )
    assert batch.id.startswith("batch_") and batch.object == "batch"
    assert batch.status in ("validating", "in_progress") and batch.input_file_id == input_id
    assert batch.metadata == {"purpose": "test"} and batch.expires_at == batch.created_at + 86400

    done = wait_status(sdk, batch.id, "completed", "failed")
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (4, 3)
    assert done.request_counts.failed == 1
    assert done.completed_at and done.in_progress_at and done.finalizing_at
    assert done.usage is not None and done.usage.total_tokens > 0

    output = lines(sdk, done.output_file_id)
    assert sorted(output) == ["first", "second", "third"]
    first = output["first"]
    assert first["id"].startswith("batch_req_") and first["error"] is None
    assert first["response"]["status_code"] == 200
    assert first["response"]["body"]["choices"][0]["message"]["content"] == "echo: one"
    assert output["third"]["response"]["body"]["choices"][0]["message"]["content"] == "echo: four"
    errors = lines(sdk, done.error_file_id)
    assert list(errors) == ["unknown-model"]
    refused = errors["unknown-model"]["response"]
    assert refused["status_code"] == 404 and refused["body"]["error"]["code"] == "model_not_found"

    out_file = sdk.files.retrieve(done.output_file_id or "")
    assert out_file.purpose == "batch_output" and out_file.filename.endswith("_output.jsonl")
    assert done.id in [b.id for b in sdk.batches.list()]
    listed = {f.id for f in sdk.files.list()}
    assert {input_id, done.output_file_id, done.error_file_id} <= listed
    # kubectl shows the batch; its lines never were objects of their own.
    name = "batch-" + done.id.removeprefix("batch_")
    row = tenant.kubectl("get", "llmbatch", name, "--no-headers").split()
    assert row[1:5] == ["completed", "4", "3", "1"]
    assert tenant.kubectl("get", "llmjobs", "-o", "name") == ""
    assert sdk.files.delete(input_id).deleted
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(input_id)


@pytest.fixture
def minilm(tenant: Tenant, embed_server: EmbedServer, start_worker: Callable[..., Proc]) -> str:
    tenant.kubectl("apply", "-f", str(EXAMPLES / "flavor-minilm-local.yaml"))
    patch = json.dumps({"spec": {"endpoint": embed_server.url}})
    tenant.kubectl("patch", "flavor", "minilm", "--type=merge", "-p", patch)
    start_worker(f"{tenant.namespace}/minilm")
    return "minilm"


def test_an_embeddings_batch_writes_vectors_in_the_encoding_asked_for(
    api: Api, tenant: Tenant, minilm: str
) -> None:
    sdk = client(api, tenant)
    url: Literal["/v1/embeddings"] = "/v1/embeddings"
    input_id = upload(
        sdk,
        {"custom_id": "f", "method": "POST", "url": url, "body": {"model": minilm, "input": "cat"}},
        {
            "custom_id": "b",
            "method": "POST",
            "url": url,
            "body": {"model": minilm, "input": ["dog", "fish"], "encoding_format": "base64"},
        },
    )
    batch = sdk.batches.create(input_file_id=input_id, endpoint=url, completion_window="24h")
    done = wait_status(sdk, batch.id, "completed", "failed")
    assert done.status == "completed" and done.error_file_id is None
    output = lines(sdk, done.output_file_id)
    [vector] = output["f"]["response"]["body"]["data"]
    assert len(vector["embedding"]) == 384
    packed = [d["embedding"] for d in output["b"]["response"]["body"]["data"]]
    assert [len(struct.unpack("<384f", base64.b64decode(p))) for p in packed] == [384, 384]


def test_cancelling_a_batch_stops_its_requests_and_reports_them(
    api: Api,
    tenant: Tenant,
    fault_server: FaultServer,
    start_worker: Callable[..., Proc],
    redis_server: RedisServer,
) -> None:
    model = echo(tenant, fault_server, "slow", "delay/30")
    worker = start_worker(f"{tenant.namespace}/{model}")
    sdk = client(api, tenant)
    input_id = upload(sdk, *(chat_line(f"r{i}", model, str(i)) for i in range(3)))
    batch = sdk.batches.create(input_file_id=input_id, endpoint=CHAT, completion_window="24h")
    # A batch's lines are work items on the flavor's low band, not LLMJobs.
    low = rq.Queue(f"{tenant.namespace}/{model}:low", connection=Redis.from_url(redis_server.url))
    wait_for(lambda: StartedJobRegistry(queue=low).count > 0, 30, "a request of the batch to run")
    assert tenant.kubectl("get", "llmjobs", "-o", "name").strip() == ""
    cancelling = sdk.batches.cancel(batch.id)
    assert cancelling.status == "cancelling"
    done = wait_status(sdk, batch.id, "cancelled", timeout=30)
    assert done.cancelling_at and done.cancelled_at and done.output_file_id is None
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (0, 3)
    errors = lines(sdk, done.error_file_id)
    assert sorted(errors) == ["r0", "r1", "r2"]
    assert {e["error"]["code"] for e in errors.values()} == {"batch_cancelled"}
    # The provider call in flight was dropped, not waited for.
    wait_for(lambda: "stopped: batch-cancelled" in worker.tail(), 10, "the worker to stop the call")
    with pytest.raises(openai.ConflictError):
        sdk.batches.cancel(batch.id)


def test_an_input_file_that_is_not_jsonl_fails_the_batch_with_the_line(
    api: Api, tenant: Tenant
) -> None:
    sdk = client(api, tenant)
    good = chat_line("a", "echo", "hi")
    data = (json.dumps(good) + "\nthis is not json\n").encode()
    input_id = sdk.files.create(file=("bad.jsonl", data), purpose="batch").id
    batch = sdk.batches.create(input_file_id=input_id, endpoint=CHAT, completion_window="24h")
    failed = wait_status(sdk, batch.id, "failed", timeout=30)
    assert failed.failed_at and failed.errors is not None and failed.errors.data
    [error] = failed.errors.data
    assert (error.code, error.line) == ("invalid_json_line", 2)
    assert failed.output_file_id is None and failed.error_file_id is None
    # What OpenAI refuses before a batch exists is refused the same way.
    with pytest.raises(openai.BadRequestError):
        sdk.batches.create(
            input_file_id=input_id,
            endpoint="/v1/moderations",
            completion_window="24h",
        )
    with pytest.raises(openai.NotFoundError):
        sdk.batches.create(input_file_id="file-missing", endpoint=CHAT, completion_window="24h")
    with pytest.raises(openai.BadRequestError) as err:
        sdk.files.create(file=("x.jsonl", data), purpose="fine-tune")
    assert err.value.code == "unsupported_purpose"


def test_another_tenant_sees_neither_files_nor_batches(
    api: Api, tenant: Tenant, other_tenant: Tenant
) -> None:
    mine = client(api, tenant)
    input_id = upload(mine, chat_line("a", "echo", "hi"))
    batch = mine.batches.create(input_file_id=input_id, endpoint=CHAT, completion_window="24h")
    stranger = client(api, other_tenant)
    for call in (
        lambda: stranger.batches.retrieve(batch.id),
        lambda: stranger.batches.cancel(batch.id),
        lambda: stranger.files.retrieve(input_id),
        lambda: stranger.files.content(input_id),
        lambda: stranger.files.delete(input_id),
        lambda: stranger.batches.create(
            input_file_id=input_id, endpoint=CHAT, completion_window="24h"
        ),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert stranger.batches.list().data == [] and stranger.files.list().data == []
    assert mine.batches.retrieve(batch.id).id == batch.id


def test_a_batchs_tokens_count_in_the_tenants_usage_and_budget(
    api: Api, tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc]
) -> None:
    """The Batch API is no way around a budget: its lines are counted as requests are,
    and a tenant whose budget is spent cannot start another batch."""
    limit(tenant, token_budget="1")
    model = echo(tenant, fault_server)
    start_worker(f"{tenant.namespace}/{model}")
    sdk = client(api, tenant)
    said = [chat_line(f"r{i}", model, "one two three") for i in range(3)]
    input_id = upload(sdk, *said)
    batch = sdk.batches.create(input_file_id=input_id, endpoint=CHAT, completion_window="24h")
    done = wait_status(sdk, batch.id, "completed")
    answers = lines(sdk, done.output_file_id)
    spent = sum(a["response"]["body"]["usage"]["total_tokens"] for a in answers.values())
    prompt = sum(a["response"]["body"]["usage"]["prompt_tokens"] for a in answers.values())
    seen = usage(api, tenant)
    assert (seen["requests"], seen["total_tokens"], seen["prompt_tokens"]) == (3, spent, prompt)
    assert seen["flavors"][0]["flavor"] == model and seen["flavors"][0]["requests"] == 3
    assert seen["budget_remaining"] == 0
    with pytest.raises(openai.RateLimitError) as err:
        sdk.batches.create(input_file_id=input_id, endpoint=CHAT, completion_window="24h")
    assert err.value.code == "insufficient_quota" and "token budget" in str(err.value)
