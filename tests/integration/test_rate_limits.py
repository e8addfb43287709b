"""Rate limits and token budgets as a tenant meets them through the openai SDK: OpenAI's
429s, codes and x-ratelimit-* headers, a Retry-After the SDK honours, budgets, the usage
endpoint, a flavor's own rateLimit, limits that hold each tenant apart, and 503 for a flavor
with nowhere to run."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import httpx2
import openai
import pytest
import yaml

from devstack.faultserver import FaultServer
from devstack.procs import Proc, wait_for

from .conftest import Api, Tenant, flavor_manifest

HI = [{"role": "user", "content": "hi"}]


def limit(tenant: Tenant, **limits: str) -> None:
    """Annotate the tenant's Namespace, as a cluster admin (or GitOps) sets its limits."""
    pairs = [f"llmloom.io/{k.replace('_', '-')}={v}" for k, v in limits.items()]
    tenant.cluster.kubectl("annotate", "namespace", tenant.namespace, *pairs, "--overwrite")


def echo(tenant: Tenant, faults: FaultServer, name: str = "echo", **spec: Any) -> str:
    manifest = flavor_manifest(name, faults.endpoint(), "echo")
    manifest["spec"].update(spec)
    tenant.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    return name


def client(api: Api, tenant: Tenant, retries: int = 0, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{api.url}/v1", api_key=tenant.token, max_retries=retries, timeout=60, **kw
    )


def queue(api: Api, tenant: Tenant, model: str, **body: Any) -> httpx.Response:
    """A chat request that answers at once (202, its job queued) unless refused."""
    return httpx.post(
        f"{api.url}/v1/chat/completions?wait=0",
        json={"model": model, "messages": HI, **body},
        headers={"Authorization": f"Bearer {tenant.token}"},
        timeout=30,
    )


def usage(api: Api, tenant: Tenant) -> dict[str, Any]:
    r = httpx.get(f"{api.url}/v1/usage", headers={"Authorization": f"Bearer {tenant.token}"})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def jobs(tenant: Tenant) -> list[str]:
    return tenant.kubectl("get", "llmjobs", "-o", "name").split()


def test_requests_per_minute_refuse_with_openais_429(
    api: Api, tenant: Tenant, fault_server: FaultServer
) -> None:
    limit(tenant, requests_per_minute="3")
    model = echo(tenant, fault_server)
    answers = [queue(api, tenant, model) for _ in range(3)]
    assert [r.status_code for r in answers] == [202, 202, 202]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in answers] == ["2", "1", "0"]
    assert answers[0].headers["x-ratelimit-limit-requests"] == "3"
    assert answers[-1].headers["x-ratelimit-reset-requests"].endswith("s")

    with pytest.raises(openai.RateLimitError) as err:
        client(api, tenant).chat.completions.create(model=model, messages=HI)  # type: ignore[arg-type]
    assert err.value.code == "rate_limit_exceeded" and err.value.type == "requests"
    assert "Limit 3" in err.value.message
    headers = err.value.response.headers
    # A burst of 3, then one every 20 s.
    assert 15 <= int(headers["retry-after"]) <= 20
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert len(jobs(tenant)) == 3  # a refused request makes no job
    metrics = httpx.get(api.metrics_url).text
    assert f'llmloom_api_rate_limited_total{{limit="requests",tenant="{tenant.namespace}"}}' in (
        metrics
    )


def test_the_sdk_waits_as_retry_after_says_and_gets_its_answer(
    api: Api, tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc]
) -> None:
    limit(tenant, requests_per_minute="20")  # one request every 3 s after a burst of 20
    model = echo(tenant, fault_server)
    start_worker(f"{tenant.namespace}/{model}")
    refused = next(
        (r for r in (queue(api, tenant, model) for _ in range(30)) if r.status_code == 429), None
    )
    assert refused is not None
    # Take the next request as soon as it comes back, so that the SDK's first try meets
    # a whole interval to wait.
    time.sleep(int(refused.headers["retry-after-ms"]) / 1000)
    assert queue(api, tenant, model).status_code == 202

    statuses: list[int] = []
    http = httpx2.Client(event_hooks={"response": [lambda r: statuses.append(r.status_code)]})
    reply = client(api, tenant, retries=2, http_client=http).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "patience"}],
    )
    # Admitted at the first retry: the SDK waited as Retry-After said (a retry sooner would
    # have met a second 429).
    assert statuses == [429, 200]
    assert reply.choices[0].message.content == "echo: patience"


def test_tokens_per_minute_count_the_estimate_until_the_job_settles(
    api: Api, tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc]
) -> None:
    limit(tenant, tokens_per_minute="60")  # one token a second
    model = echo(tenant, fault_server)
    # "hi" is 7 tokens as OpenAI counts a chat; with max_tokens, 52 are held.
    first = queue(api, tenant, model, max_tokens=45)
    assert first.status_code == 202 and first.headers["x-ratelimit-remaining-tokens"] == "8"
    second = queue(api, tenant, model, max_tokens=20)
    assert second.status_code == 429
    assert second.json()["error"]["type"] == "tokens"
    assert second.json()["error"]["code"] == "rate_limit_exceeded"
    assert second.headers["x-ratelimit-limit-tokens"] == "60"

    with pytest.raises(openai.RateLimitError) as err:
        client(api, tenant, retries=2).chat.completions.create(
            model=model,
            messages=HI,  # type: ignore[arg-type]
            max_tokens=100,
        )
    assert "Request too large" in err.value.message
    assert err.value.response.headers["x-should-retry"] == "false"

    # The first job spends 3 tokens in fact (nobody waits for it): the other 49 come
    # back at once, long before a minute's refill would have made room.
    start_worker(f"{tenant.namespace}/{model}")
    wait_for(
        lambda: queue(api, tenant, model, max_tokens=20).status_code == 202,
        20,
        "the first job's tokens to be settled",
    )


def test_a_spent_budget_is_insufficient_quota_and_usage_adds_up(
    api: Api, tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc]
) -> None:
    limit(tenant, token_budget="20")
    model = echo(tenant, fault_server)
    start_worker(f"{tenant.namespace}/{model}")
    statuses: list[int] = []
    http = httpx2.Client(event_hooks={"response": [lambda r: statuses.append(r.status_code)]})
    sdk = client(api, tenant, retries=2, http_client=http)
    spent, prompt, answered = 0, 0, 0
    with pytest.raises(openai.RateLimitError) as err:
        for _ in range(5):
            reply = sdk.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "one two three"}]
            )
            assert reply.usage is not None
            spent += reply.usage.total_tokens
            prompt += reply.usage.prompt_tokens
            answered += 1
    assert err.value.code == "insufficient_quota" and err.value.type == "insufficient_quota"
    assert answered == 2 and statuses[-1] == 429
    assert statuses.count(429) == 1  # the SDK does not retry a spent budget

    seen = usage(api, tenant)
    assert (seen["total_tokens"], seen["prompt_tokens"]) == (spent, prompt)
    assert seen["requests"] == answered and seen["pending_tokens"] == 0
    assert seen["budget_remaining"] == 20 - spent
    assert seen["limits"] == {
        "requests_per_minute": None,
        "tokens_per_minute": None,
        "token_budget": 20,
    }
    assert seen["period"]["type"] == "month" and seen["tenant"] == tenant.namespace
    assert seen["flavors"] == [
        {
            "flavor": model,
            "requests": answered,
            "prompt_tokens": prompt,
            "completion_tokens": spent - prompt,
            "total_tokens": spent,
            "cost": None,  # the flavor has no pricing
            "shared": False,
            "limits": None,
            "budget_remaining": None,
        }
    ]


def test_each_tenant_has_its_own_limits_and_usage(
    api: Api, tenant: Tenant, other_tenant: Tenant, fault_server: FaultServer
) -> None:
    for t in (tenant, other_tenant):
        limit(t, requests_per_minute="2")
        echo(t, fault_server)
    assert [queue(api, tenant, "echo").status_code for _ in range(3)] == [202, 202, 429]
    # The other tenant's flavor has the same name; its limit is untouched.
    answers = [queue(api, other_tenant, "echo") for _ in range(2)]
    assert [r.status_code for r in answers] == [202, 202]
    assert answers[0].headers["x-ratelimit-remaining-requests"] == "1"
    assert usage(api, tenant)["requests"] == 2 and usage(api, other_tenant)["requests"] == 2
    # Jobs through /v1/jobs count too.
    spec = {"flavor": "echo", "messages": HI}
    auth = {"Authorization": f"Bearer {other_tenant.token}"}
    assert httpx.post(f"{api.url}/v1/jobs", json={"spec": spec}, headers=auth).status_code == 429


def test_a_flavors_rate_limit_holds_only_that_flavor(
    api: Api, tenant: Tenant, fault_server: FaultServer
) -> None:
    metered = echo(tenant, fault_server, "metered", rateLimit={"requestsPerMinute": 2})
    free = echo(tenant, fault_server, "free")
    answers = [queue(api, tenant, metered) for _ in range(3)]
    assert [r.status_code for r in answers] == [202, 202, 429]
    assert answers[0].headers["x-ratelimit-limit-requests"] == "2"
    assert "flavor metered" in answers[2].json()["error"]["message"]
    assert [queue(api, tenant, free).status_code for _ in range(3)] == [202, 202, 202]
    # The tenant itself has no limit: nothing to report on the free flavor's answers.
    assert "x-ratelimit-limit-requests" not in queue(api, tenant, free).headers


def test_a_flavor_with_nowhere_to_run_answers_503(api: Api, tenant: Tenant) -> None:
    flavor = {
        "apiVersion": "llmloom.io/v1alpha1",
        "kind": "Flavor",
        "metadata": {"name": "huge"},
        "spec": {"provider": "vllm", "model": "smollm2-135m", "deploy": {"gpus": 16}},
    }
    tenant.kubectl("apply", "-f", "-", input=yaml.safe_dump(flavor))
    tenant.kubectl(
        "wait",
        "flavor/huge",
        "--for=jsonpath={.status.conditions[?(@.type=='Ready')].reason}=Unschedulable",
        "--timeout=60s",
    )
    with pytest.raises(openai.InternalServerError) as err:
        client(api, tenant).chat.completions.create(model="huge", messages=HI)  # type: ignore[arg-type]
    assert err.value.status_code == 503 and err.value.code == "service_unavailable"
    assert "Insufficient nvidia.com/gpu" in err.value.message
    assert err.value.response.headers["retry-after"] == "30"
    assert jobs(tenant) == []


def test_unclaimed_and_cancelled_requests_give_their_estimates_back(
    api: Api, tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc]
) -> None:
    """A 202 whose task nobody asks about again is charged what it spent, and a cancelled
    one nothing: neither estimate holds the budget once its job has ended or gone."""
    limit(tenant, token_budget="100000")
    model = echo(tenant, fault_server)
    parked = echo(tenant, fault_server, "parked")  # no worker: its job waits in the queue
    start_worker(f"{tenant.namespace}/{model}")
    answered = queue(api, tenant, model)
    cancelled = queue(api, tenant, parked)
    assert answered.status_code == cancelled.status_code == 202
    assert usage(api, tenant)["pending_tokens"] > 0
    auth = {"Authorization": f"Bearer {tenant.token}"}
    gone = httpx.delete(f"{api.url}/v1/tasks/{cancelled.json()['id']}", headers=auth)
    assert gone.status_code == 200
    job = answered.json()["id"]
    tenant.kubectl("wait", f"llmjob/{job}", "--for=condition=Succeeded", "--timeout=30s")
    spent = tenant.get("llmjob", job)["status"]["usage"]["totalTokens"]
    wait_for(lambda: usage(api, tenant)["pending_tokens"] == 0, 40, "the estimates to settle")
    seen = usage(api, tenant)
    assert seen["total_tokens"] == spent and seen["budget_remaining"] == 100000 - spent
