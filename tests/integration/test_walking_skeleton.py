"""One thin slice of every part, end to end, as users drive it.

An application calls the API with the official openai SDK; a platform engineer
applies the examples with kubectl. Both reach the real small model through an
LLMJob, the operator, Redis and a worker; bad input gets a clear error.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable

import httpx
import openai
import pytest
import yaml
from redis import Redis

from devstack.modelserver import ModelServer
from devstack.procs import Proc, free_port, wait_for
from devstack.redisserver import RedisServer
from llmloom import apitokens

from .conftest import EXAMPLES, Api, Tenant, flavor_manifest


def client(api: Api, tenant: Tenant) -> openai.OpenAI:
    # No SDK retries: a retried POST is a second job, and the tests count jobs.
    return openai.OpenAI(base_url=f"{api.url}/v1", api_key=tenant.token, max_retries=0, timeout=120)


def test_chat_completion_through_the_openai_sdk(
    api: Api,
    tenant: Tenant,
    smollm2: str,
    start_worker: Callable[..., Proc],
    redis_server: RedisServer,
) -> None:
    start_worker(f"{tenant.namespace}/{smollm2}")
    raw = client(api, tenant).chat.completions.with_raw_response.create(
        model="smollm2",
        messages=[
            {"role": "system", "content": "You answer in one word."},
            {"role": "user", "content": "Name a colour."},
        ],
        max_tokens=8,
        temperature=0,
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert (
        completion.usage is not None
        and completion.usage.total_tokens > completion.usage.prompt_tokens
    )

    # The request was an LLMJob: kubectl shows it finished, with the provider's token counts,
    # and the request by reference: no prompt in the object.
    name = raw.headers["x-llmloom-task"]
    tenant.kubectl("wait", f"llmjob/{name}", "--for=condition=Succeeded", "--timeout=30s")
    job = tenant.get("llmjob", name)
    status = job["status"]
    assert status["state"] == "Succeeded"
    assert status["usage"]["totalTokens"] == completion.usage.total_tokens
    assert status["usage"]["promptTokens"] == completion.usage.prompt_tokens
    assert status["flavorUsed"] == "smollm2" and status["attempts"] == 1
    assert job["metadata"]["labels"]["llmloom.io/origin"] == "request"
    assert "messages" not in job["spec"] and "Name a colour" not in json.dumps(job)
    assert job["spec"]["request"]["endpoint"] == "/v1/chat/completions"
    assert job["spec"]["ttlSecondsAfterFinished"] > 0  # it leaves once delivered
    # No kopf annotation, no Accepted: the operator wrote nothing on it.
    assert not [a for a in job["metadata"].get("annotations") or {} if a.startswith("llmloom")]
    assert [c["type"] for c in status["conditions"]] == ["Succeeded"]

    # The answer lives in Redis under the versioned key the status points to.
    stored = Redis.from_url(redis_server.url).get(status["result"]["key"])
    assert stored is not None and len(stored) == status["result"]["bytes"]
    assert json.loads(stored)["response"]["id"] == completion.id


def test_kubectl_apply_of_the_examples_runs_to_succeeded(
    tenant: Tenant, model_server: ModelServer, start_worker: Callable[..., Proc], api: Api
) -> None:
    tenant.kubectl("apply", "-f", str(EXAMPLES / "flavor-smollm2-local.yaml"))
    # The example points at the dev stack's fixed port; the test's model server has its own.
    endpoint = model_server.url
    tenant.kubectl(
        "patch",
        "flavor",
        "smollm2",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"endpoint": endpoint}}),
    )
    start_worker(f"{tenant.namespace}/smollm2")
    tenant.kubectl("apply", "-f", str(EXAMPLES / "chat-job.yaml"))
    tenant.kubectl("wait", "llmjob/hello", "--for=condition=Succeeded", "--timeout=120s")

    table = tenant.kubectl("get", "llmjob", "hello")
    assert table.split("\n")[0].split() == ["NAME", "FLAVOR", "TASK", "STATE", "TOKENS", "AGE"]
    row = table.split("\n")[1].split()
    assert row[:4] == ["hello", "smollm2", "chat", "Succeeded"] and int(row[4]) > 0
    status = tenant.get("llmjob", "hello")["status"]
    accepted = next(c for c in status["conditions"] if c["type"] == "Accepted")
    assert accepted["status"] == "True" and accepted["observedGeneration"] == 1
    assert status["observedGeneration"] == 1
    # `kubectl get llmloom` lists both kinds.
    both = tenant.kubectl("get", "llmloom", "-o", "name")
    assert "flavor.llmloom.io/smollm2" in both and "llmjob.llmloom.io/hello" in both


def test_job_naming_a_missing_flavor_fails_with_a_reason(tenant: Tenant, api: Api) -> None:
    job = {
        "apiVersion": "llmloom.io/v1alpha1",
        "kind": "LLMJob",
        "metadata": {"name": "orphan"},
        "spec": {"flavor": "no-such-flavor", "messages": [{"role": "user", "content": "hi"}]},
    }
    tenant.kubectl("apply", "-f", "-", input=yaml.safe_dump(job))
    tenant.kubectl("wait", "llmjob/orphan", "--for=condition=Failed", "--timeout=30s")
    status = tenant.get("llmjob", "orphan")["status"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "FlavorNotFound"
    assert "'no-such-flavor' does not exist" in failed["message"]
    assert status["state"] == "Failed"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"flavor": "x", "messages": []}, "should have at least 1 items"),
        ({"flavor": "x"}, "a chat job takes spec.messages or spec.request (and no spec.texts)"),
        (
            {"flavor": "x", "task": "poetry", "messages": [{"role": "user", "content": "x"}]},
            'supported values: "chat", "embeddings"',
        ),
        (
            {
                "flavor": "x",
                "messages": [{"role": "user", "content": "x"}],
                "parameters": {"temperature": 7},
            },
            "should be less than or equal to 2",
        ),
        (
            {"flavor": "x", "task": "embeddings", "messages": [{"role": "user", "content": "x"}]},
            "an embeddings job takes spec.texts or spec.request (and no spec.messages)",
        ),
    ],
    ids=["empty-messages", "no-messages", "unknown-task", "temperature", "embeddings-messages"],
)
def test_invalid_jobs_are_rejected_by_the_api_server(
    tenant: Tenant, spec: dict[str, object], expected: str
) -> None:
    job = {
        "apiVersion": "llmloom.io/v1alpha1",
        "kind": "LLMJob",
        "metadata": {"name": "bad"},
        "spec": spec,
    }
    res = tenant.cluster.kubectl(
        "apply", "-n", tenant.namespace, "-f", "-", input=yaml.safe_dump(job), check=False
    )
    assert res.returncode != 0
    assert expected in res.stderr


def test_api_errors_use_the_openai_envelope(api: Api, tenant: Tenant, smollm2: str) -> None:
    c = client(api, tenant)
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError) as nf:
        c.chat.completions.create(model="gpt-17", messages=msgs)  # type: ignore[arg-type]
    assert nf.value.code == "model_not_found" and "gpt-17" in nf.value.message
    with pytest.raises(openai.BadRequestError) as br:
        c.chat.completions.create(model="smollm2", messages=[])
    assert br.value.param == "messages"
    bad = openai.OpenAI(base_url=f"{api.url}/v1", api_key="llmloom-not-a-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="smollm2", messages=msgs)  # type: ignore[arg-type]
    # No request above created a job.
    assert tenant.kubectl("get", "llmjobs", "-o", "name").strip() == ""


def test_a_slow_answer_becomes_a_task_to_poll(
    api: Api, tenant: Tenant, smollm2: str, start_worker: Callable[..., Proc]
) -> None:
    headers = {"Authorization": f"Bearer {tenant.token}"}
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Say hi."}],
        "max_tokens": 8,
    }
    # No worker yet: the job waits in the queue, the request answers at once.
    r = httpx.post(f"{api.url}/v1/chat/completions?wait=0", json=body, headers=headers)
    assert r.status_code == 202
    location = r.headers["location"]
    assert location == f"/v1/tasks/{r.json()['id']}"
    assert httpx.get(f"{api.url}{location}", headers=headers).json()["status"] in (
        "queued",
        "pending",
    )
    start_worker(f"{tenant.namespace}/{smollm2}")
    done = httpx.get(f"{api.url}{location}?wait=60", headers=headers, timeout=90).json()
    assert done["status"] == "succeeded"
    assert done["response"]["choices"][0]["message"]["content"]
    # Another tenant cannot see it.
    assert (
        httpx.get(f"{api.url}{location}", headers={"Authorization": "Bearer x"}).status_code == 401
    )


def test_unreachable_endpoint_fails_the_job_and_the_request(
    api: Api, tenant: Tenant, start_worker: Callable[..., Proc]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    tenant.kubectl("apply", "-f", "-", input=yaml.safe_dump(flavor_manifest("down", dead)))
    start_worker(f"{tenant.namespace}/down")
    with pytest.raises(openai.APIStatusError) as err:
        client(api, tenant).chat.completions.create(
            model="down", messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.status_code == 502
    assert err.value.code == "EndpointUnreachable"
    jobs = tenant.kubectl("get", "llmjobs", "-o", "jsonpath={.items[*].status.state}")
    assert jobs == "Failed"


def test_the_examples_apply_as_gitops_does_and_again_change_nothing(
    tenant: Tenant, model_server: ModelServer, api: Api
) -> None:
    """Every example is valid to the API server, and applying the set twice (server-side,
    one field manager, as Argo CD and Flux do) changes nothing, even after the operator
    acted on them: it writes their status only (no annotation of its own)."""
    apply = ["apply", "--server-side", "--field-manager=gitops", "-k", str(EXAMPLES)]
    tenant.kubectl(*apply)
    tenant.kubectl("wait", "llmjob/hello", "--for=condition=Accepted", "--timeout=30s")
    tenant.kubectl(
        "wait", "flavor/qwen-7b", "--for=jsonpath={.status.observedGeneration}=1", "--timeout=90s"
    )
    hello = tenant.get("llmjob", "hello")
    assert not any(k.startswith("llmloom.io/") for k in hello["metadata"].get("annotations", {}))
    again = tenant.kubectl(*apply)
    assert again.count("serverside-applied") == len(again.strip().splitlines()), again
    diff = tenant.cluster.kubectl(
        "diff",
        "--server-side",
        "--field-manager=gitops",
        "-n",
        tenant.namespace,
        "-k",
        str(EXAMPLES),
        check=False,
    )
    assert diff.returncode == 0, diff.stdout


def test_models_lists_the_tenants_ready_flavors(api: Api, tenant: Tenant, smollm2: str) -> None:
    tenant.kubectl("wait", f"flavor/{smollm2}", "--for=condition=Ready", "--timeout=30s")
    dead = flavor_manifest("down", f"http://127.0.0.1:{free_port()}/v1")
    tenant.kubectl("apply", "-f", "-", input=yaml.safe_dump(dead))
    c = client(api, tenant)
    assert [m.id for m in c.models.list()] == ["smollm2"]  # "down" is not Ready
    model = c.models.retrieve("smollm2")
    assert model.owned_by == tenant.namespace
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("gpt-17")


def test_a_token_made_with_the_cli_and_kubectl_works(api: Api, tenant: Tenant) -> None:
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmloom.cli",
            "token",
            "create",
            "-n",
            tenant.namespace,
            "--name",
            "cli-token",
            "--manifest",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    tenant.kubectl("apply", "-f", "-", input=made.stdout)
    token = made.stderr.split("token (shown once): ")[1].strip()
    c = openai.OpenAI(base_url=f"{api.url}/v1", api_key=token, max_retries=0)
    assert c.models.list().data == []  # the tenant has no Ready flavor yet; the token is valid
    tenant.kubectl("delete", "apitoken", "cli-token")  # revoking it ends it (the API's watch)

    def refused() -> bool:
        try:
            c.models.list()
        except openai.AuthenticationError:
            return True
        return False

    wait_for(refused, 10, "the revoked token to be refused")


def test_a_token_secret_of_old_keeps_working_once_migrated(api: Api, tenant: Tenant) -> None:
    token = apitokens.new_token()
    digest = base64.b64encode(apitokens.token_hash(token).encode()).decode()
    legacy = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "old-token", "labels": {apitokens.LEGACY_LABEL: "true"}},
        "data": {"sha256": digest},
    }
    tenant.kubectl("apply", "-f", "-", input=yaml.safe_dump(legacy))
    c = openai.OpenAI(base_url=f"{api.url}/v1", api_key=token, max_retries=0)
    with pytest.raises(openai.AuthenticationError):  # the API reads no Secret
        c.models.list()
    subprocess.run(
        [sys.executable, "-m", "llmloom.cli", "token", "migrate", "-n", tenant.namespace],
        env={**os.environ, **tenant.cluster.env()},
        capture_output=True,
        text=True,
        check=True,
    )
    assert tenant.get("apitoken", "old-token")["spec"]["description"] == "migrated"
    wait_for(lambda: c.models.list().data == [], 10, "the migrated token to work")
