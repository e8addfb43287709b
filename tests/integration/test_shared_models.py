"""One model, many tenants: a ClusterFlavor used by two tenants' tokens and by LLMJobs
applied in their namespaces, refused (404) to a tenant outside its selector, withdrawn
by relabelling a namespace, held to per-tenant limits, and served in fair order when one
tenant floods it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
import yaml

from devstack.cluster import Cluster
from devstack.faultserver import FaultServer
from devstack.procs import Proc, wait_for
from devstack.stack import create_token

from .conftest import Api, Tenant, flavor_manifest

HI = [{"role": "user", "content": "hi"}]


@dataclass
class Shared:
    name: str
    label: str
    """The namespace label (key=value) that grants the model."""


def grant(tenant: Tenant, shared: Shared, granted: bool = True) -> None:
    """Label (or unlabel) a tenant's namespace, as a platform admin grants a shared model."""
    key, _, value = shared.label.partition("=")
    pair = f"{key}={value}" if granted else f"{key}-"
    tenant.cluster.kubectl("label", "namespace", tenant.namespace, pair, "--overwrite")


def apply_shared(tenant: Tenant, name: str, endpoint: str, **spec: Any) -> Shared:
    key = f"share-{uuid.uuid4().hex[:6]}"
    manifest = flavor_manifest(name, endpoint, "echo")
    manifest["kind"] = "ClusterFlavor"
    manifest["spec"].update({"tenantSelector": {"matchLabels": {key: "yes"}}, **spec})
    tenant.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    return Shared(name=name, label=f"{key}=yes")


@pytest.fixture
def shared_name(cluster: Cluster) -> Iterator[str]:
    name = f"shared-{uuid.uuid4().hex[:6]}"
    yield name
    # Cluster-scoped: it outlives the tenants' namespaces unless deleted.
    cluster.kubectl("delete", "clusterflavor", name, "--ignore-not-found", "--wait=false")


def client(api: Api, tenant: Tenant) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api.url}/v1", api_key=tenant.token, max_retries=0)


def model_ids(api: Api, tenant: Tenant) -> dict[str, str]:
    r = httpx.get(f"{api.url}/v1/models", headers={"Authorization": f"Bearer {tenant.token}"})
    assert r.status_code == 200, r.text
    return {m["id"]: m["owned_by"] for m in r.json()["data"]}


def ask(api: Api, tenant: Tenant, model: str, text: str = "hi") -> httpx.Response:
    return httpx.post(
        f"{api.url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": text}]},
        headers={"Authorization": f"Bearer {tenant.token}"},
        timeout=60,
    )


def bindings(tenant: Tenant) -> list[str]:
    out = tenant.kubectl(
        "get", "rolebindings", "-l", "llmloom.io/shared-worker=true", "-o", "name", check=False
    )
    return out.split()


def test_a_shared_model_serves_the_tenants_it_grants_and_no_other(
    api: Api,
    tenant: Tenant,
    other_tenant: Tenant,
    fault_server: FaultServer,
    start_worker: Callable[..., Proc],
    shared_name: str,
) -> None:
    shared = apply_shared(
        tenant,
        shared_name,
        fault_server.endpoint(),
        sharing={"tenants": [{"namespace": other_tenant.namespace, "requestsPerMinute": 1}]},
        pricing={"promptPerMillion": 1000, "completionPerMillion": 2000},
    )
    grant(tenant, shared)
    grant(other_tenant, shared)
    start_worker(f"{shared.name}@*")

    # The operator reports it Ready, with the tenants it is granted to, and lets its
    # workers into those tenants' namespaces (and no other).
    def reported() -> dict[str, Any] | None:
        obj = yaml.safe_load(
            tenant.cluster.kubectl("get", "clusterflavor", shared.name, "-o", "yaml").stdout
        )
        status = obj.get("status") or {}
        return obj if status.get("tenants") == 2 and status.get("endpoint") else None

    wait_for(reported, 30, "the operator to report the shared model's tenants")
    wait_for(lambda: bindings(tenant) and bindings(other_tenant), 30, "the workers' access")
    table = tenant.cluster.kubectl("get", "llmloom", "-A").stdout
    assert f"clusterflavor.llmloom.io/{shared.name}" in table

    # Both tenants' tokens reach it, by its name; it is listed as the cluster's.
    for t in (tenant, other_tenant):
        listed = wait_for(lambda: model_ids(api, t).get(shared.name), 30, "the model listed")  # noqa: B023
        assert listed == "cluster"
        answer = client(api, t).chat.completions.create(model=shared.name, messages=HI)  # type: ignore[arg-type]
        assert answer.choices[0].message.content == "echo: hi"

    # The other tenant's terms hold it to one request a minute; the first tenant's do not.
    refused = ask(api, other_tenant, shared.name)
    assert refused.status_code == 429, refused.text
    assert f"on shared model {shared.name}" in refused.json()["error"]["message"]
    assert ask(api, tenant, shared.name).status_code == 200

    # Each tenant's usage and cost on the shared model, with its own terms.
    def usage_of(t: Tenant) -> dict[str, Any]:
        r = httpx.get(f"{api.url}/v1/usage", headers={"Authorization": f"Bearer {t.token}"})
        found: dict[str, Any] = {f["flavor"]: f for f in r.json()["flavors"]}[shared.name]
        return found

    mine = wait_for(lambda: usage_of(tenant) if usage_of(tenant)["cost"] else None, 10, "cost")
    assert mine["shared"] and mine["requests"] == 2 and mine["total_tokens"] > 0
    assert mine["limits"]["requests_per_minute"] is None
    theirs = usage_of(other_tenant)
    assert theirs["requests"] == 1 and theirs["limits"]["requests_per_minute"] == 1

    # A job applied with kubectl in a granted namespace runs on it.
    job = {
        "apiVersion": "llmloom.io/v1alpha1",
        "kind": "LLMJob",
        "metadata": {"name": "on-shared"},
        "spec": {"flavor": shared.name, "task": "chat", "messages": HI},
    }
    tenant.kubectl("apply", "-f", "-", input=yaml.safe_dump(job))
    tenant.kubectl("wait", "llmjob/on-shared", "--for=condition=Succeeded", "--timeout=60s")

    # A tenant outside the selector: not found, through the API and for its jobs.
    outsider = f"{tenant.namespace[:40]}-out"
    tenant.cluster.kubectl("create", "namespace", outsider)
    try:
        token = create_token(tenant.cluster.kubeconfig, outsider, "t")
        stranger = Tenant(namespace=outsider, token=token, cluster=tenant.cluster)
        r = ask(api, stranger, shared.name)
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        assert shared.name not in model_ids(api, stranger)
        assert bindings(stranger) == []
    finally:
        tenant.cluster.kubectl("delete", "namespace", outsider, "--wait=false", check=False)

    # Withdrawing the grant: new requests are refused within seconds, and the workers
    # lose their access to the namespace.
    grant(tenant, shared, granted=False)
    wait_for(lambda: ask(api, tenant, shared.name).status_code == 404, 10, "the grant to go")
    wait_for(lambda: not bindings(tenant), 30, "the workers' access to be withdrawn")
    assert bindings(other_tenant)


def test_a_tenants_own_flavor_of_the_same_name_wins(
    api: Api, tenant: Tenant, fault_server: FaultServer, shared_name: str
) -> None:
    shared = apply_shared(tenant, shared_name, fault_server.endpoint())
    grant(tenant, shared)
    own = flavor_manifest(shared.name, fault_server.endpoint(), "echo")
    tenant.kubectl("apply", "-f", "-", input=yaml.safe_dump(own))
    wait_for(
        lambda: model_ids(api, tenant).get(shared.name) == tenant.namespace,
        30,
        "the tenant's own flavor in /v1/models",
    )


def test_a_flood_from_one_tenant_waits_behind_another_tenants_requests(
    api: Api,
    tenant: Tenant,
    other_tenant: Tenant,
    fault_server: FaultServer,
    start_worker: Callable[..., Proc],
    shared_name: str,
) -> None:
    key = uuid.uuid4().hex[:8]
    shared = apply_shared(tenant, shared_name, fault_server.endpoint(f"record/{key}"))
    grant(tenant, shared)
    grant(other_tenant, shared)
    wait_for(lambda: shared.name in model_ids(api, other_tenant), 30, "the grant")

    def queue(t: Tenant, text: str) -> None:
        r = httpx.post(
            f"{api.url}/v1/chat/completions?wait=0",
            json={"model": shared.name, "messages": [{"role": "user", "content": text}]},
            headers={"Authorization": f"Bearer {t.token}"},
            timeout=30,
        )
        assert r.status_code == 202, r.text

    # The flood is queued before the trickle, and before any worker runs.
    for i in range(24):
        queue(tenant, f"flood-{i}")
    for i in range(3):
        queue(other_tenant, f"trickle-{i}")
    start_worker(f"{shared.name}@*", env={"LLMLOOM_CONCURRENCY": "1"})

    def received() -> list[str] | None:
        got = httpx.get(f"{fault_server.base}/received/{key}").json()
        texts = [r["body"]["messages"][-1]["content"] for r in got]
        return texts if len(texts) == 27 else None

    order = wait_for(received, 60, "every request to reach the model")
    # Equal weights: the tenants take turns while both have work, so the trickle's three
    # are among the first six calls, not behind the flood's twenty-four.
    trickle = [i for i, text in enumerate(order) if text.startswith("trickle-")]
    assert max(trickle) < 6, order
    assert [order[i] for i in trickle] == ["trickle-0", "trickle-1", "trickle-2"]


def test_cancelling_a_task_on_a_shared_model_stops_its_call(
    api: Api,
    tenant: Tenant,
    fault_server: FaultServer,
    start_worker: Callable[..., Proc],
    shared_name: str,
) -> None:
    shared = apply_shared(tenant, shared_name, fault_server.endpoint("delay/30"))
    grant(tenant, shared)
    wait_for(lambda: shared.name in model_ids(api, tenant), 30, "the grant")
    worker = start_worker(f"{shared.name}@*")
    auth = {"Authorization": f"Bearer {tenant.token}"}
    r = httpx.post(
        f"{api.url}/v1/chat/completions?wait=0",
        headers=auth,
        json={"model": shared.name, "messages": HI},
    )
    assert r.status_code == 202, r.text
    task = r.headers["location"]
    wait_for(
        lambda: httpx.get(f"{api.url}{task}", headers=auth).json()["status"] == "running",
        30,
        "the task to run",
    )
    assert httpx.delete(f"{api.url}{task}", headers=auth).json()["status"] == "cancelled"
    wait_for(lambda: "stopped: deleted" in worker.tail(), 10, "the worker to stop the call")
