"""Faults of the model server, as a job's status shows them: retried, failed over,
fallen back, or failed at once with the provider's reason."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import yaml

from devstack.faultserver import FaultServer
from devstack.procs import Proc

from .conftest import Api, Tenant, flavor_manifest


def flavor(tenant: Tenant, name: str, endpoint: str, **spec: Any) -> str:
    manifest = flavor_manifest(name, endpoint, model="echo")
    manifest["spec"].update(spec)
    tenant.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    return name


def run(
    tenant: Tenant, name: str, flavor_name: str, condition: str = "Succeeded"
) -> dict[str, Any]:
    job = {
        "apiVersion": "llmloom.io/v1alpha1",
        "kind": "LLMJob",
        "metadata": {"name": name},
        "spec": {"flavor": flavor_name, "messages": [{"role": "user", "content": "ping"}]},
    }
    tenant.kubectl("apply", "-f", "-", input=yaml.safe_dump(job))
    tenant.kubectl("wait", f"llmjob/{name}", f"--for=condition={condition}", "--timeout=60s")
    status: dict[str, Any] = tenant.get("llmjob", name)["status"]
    return status


def failed(status: dict[str, Any]) -> dict[str, Any]:
    cond: dict[str, Any] = next(c for c in status["conditions"] if c["type"] == "Failed")
    return cond


FAST_RETRY = {"retry": {"attempts": 3, "minDelaySeconds": 0.1, "maxDelaySeconds": 0.2}}


def test_passing_errors_are_retried(
    tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc], api: Api
) -> None:
    key = uuid.uuid4().hex
    flaky = flavor(tenant, "flaky", fault_server.endpoint(f"flaky/{key}/2"), **FAST_RETRY)
    start_worker(f"{tenant.namespace}/{flaky}")
    status = run(tenant, "persistent", flaky)
    assert status["flavorUsed"] == "flaky" and status["attempts"] == 1
    assert httpx.get(f"{fault_server.base}/calls/{key}").json()["calls"] == 3


def test_retry_after_is_honoured(
    tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc], api: Api
) -> None:
    key = uuid.uuid4().hex
    limited = flavor(tenant, "limited", fault_server.endpoint(f"limited/{key}/2"), **FAST_RETRY)
    start_worker(f"{tenant.namespace}/{limited}")
    run(tenant, "patient", limited)
    # The server answers 429 again to a call before its Retry-After: two calls, not
    # one more per 0.1 s backoff.
    assert httpx.get(f"{fault_server.base}/calls/{key}").json()["calls"] == 2


def test_failover_after_retries(
    tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc], api: Api
) -> None:
    flavor(tenant, "backup", fault_server.endpoint())
    down = flavor(
        tenant,
        "down",
        fault_server.endpoint("status/503"),
        failoverFlavors=["backup"],
        **FAST_RETRY,
    )
    start_worker(f"{tenant.namespace}/{down}")
    status = run(tenant, "resilient", down)
    assert status["flavorUsed"] == "backup"


def test_without_failover_the_job_fails_with_the_providers_reason(
    tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc], api: Api
) -> None:
    down = flavor(tenant, "down", fault_server.endpoint("status/503"), **FAST_RETRY)
    start_worker(f"{tenant.namespace}/{down}")
    cond = failed(run(tenant, "unlucky", down, "Failed"))
    assert cond["reason"] == "ProviderUnavailable"
    assert "injected failure 503" in cond["message"] and "gave up after retries" in cond["message"]


def test_errors_retrying_cannot_fix_fail_at_once(
    tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc], api: Api
) -> None:
    key, backup = uuid.uuid4().hex, uuid.uuid4().hex
    flavor(tenant, "backup", fault_server.endpoint(f"flaky/{backup}/0"))
    locked = flavor(
        tenant,
        "locked",
        fault_server.endpoint(f"status/401/{key}"),
        failoverFlavors=["backup"],
        retry={"attempts": 5, "minDelaySeconds": 30, "maxDelaySeconds": 30},
    )
    start_worker(f"{tenant.namespace}/{locked}")
    cond = failed(run(tenant, "denied", locked, "Failed"))
    assert cond["reason"] == "ProviderUnauthorized" and "injected failure 401" in cond["message"]
    # One call: no retry, and no failover.
    assert httpx.get(f"{fault_server.base}/calls/{key}").json()["calls"] == 1
    assert httpx.get(f"{fault_server.base}/calls/{backup}").json()["calls"] == 0


def test_context_overflow_falls_back_to_a_bigger_model(
    tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc], api: Api
) -> None:
    flavor(tenant, "big", fault_server.endpoint())
    small = flavor(tenant, "small", fault_server.endpoint("context/16"), fallbackFlavor="big")
    start_worker(f"{tenant.namespace}/{small}")
    assert run(tenant, "long-prompt", small)["flavorUsed"] == "big"
    tiny = flavor(tenant, "tiny", fault_server.endpoint("context/16"))
    start_worker(f"{tenant.namespace}/{tiny}")
    cond = failed(run(tenant, "too-long", tiny, "Failed"))
    assert cond["reason"] == "ContextLengthExceeded" and "maximum context length" in cond["message"]


def test_cost_follows_the_pricing_of_the_flavor_that_answered(
    tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc], api: Api
) -> None:
    priced = flavor(
        tenant,
        "priced",
        fault_server.endpoint(),
        pricing={"promptPerMillion": 2.5, "completionPerMillion": 10},
    )
    start_worker(f"{tenant.namespace}/{priced}")
    usage = run(tenant, "billed", priced)["usage"]
    expected = (usage["promptTokens"] * 2.5 + usage["completionTokens"] * 10) / 1e6
    assert usage["cost"] == expected > 0
