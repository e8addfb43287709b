"""/v1/jobs: the LLMJob resources over HTTP, with results by version and live events."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import yaml

from devstack.faultserver import FaultServer
from devstack.procs import Proc, wait_for
from devstack.stack import create_token

from .conftest import Api, Tenant, flavor_manifest


def test_jobs_over_http(
    api: Api, tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc]
) -> None:
    manifest = flavor_manifest("echo", fault_server.endpoint("delay/1"), "echo")
    tenant.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    # Marked Running after 0.3 s, not the default 2 s, so that the 1 s job shows it.
    start_worker(f"{tenant.namespace}/echo", env={"LLMLOOM_RUNNING_STATUS_AFTER_SECONDS": "0.3"})
    auth = {"Authorization": f"Bearer {tenant.token}"}
    base = f"{api.url}/v1/jobs"
    spec = {"flavor": "echo", "messages": [{"role": "user", "content": "first"}]}
    created = httpx.post(base, json={"name": "report", "spec": spec}, headers=auth)
    assert created.status_code == 201 and created.headers["location"] == "/v1/jobs/report"
    # The same resource kubectl sees.
    assert tenant.get("llmjob", "report")["spec"]["messages"][0]["content"] == "first"

    # Events: the states as they change, ending when the job finishes.
    states = []
    with httpx.stream("GET", f"{base}/report/events", headers=auth, timeout=30) as events:
        for line in events.iter_lines():
            if line.startswith("data: "):
                states.append(json.loads(line[6:])["status"].get("state"))
    assert states[-1] == "Succeeded" and "Running" in states

    result = httpx.get(f"{base}/report/result", headers=auth).json()
    assert result["version"] == 1
    assert result["response"]["choices"][0]["message"]["content"] == "echo: first"
    # A new spec version; the first result stays readable by version.
    tenant.kubectl(
        "patch",
        "llmjob",
        "report",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"messages": [{"role": "user", "content": "second"}]}}),
    )
    wait_for(
        lambda: (
            httpx.get(f"{base}/report", headers=auth)
            .json()["status"]
            .get("result", {})
            .get("version")
            == 2
        ),
        30,
        "result version 2",
    )
    latest = httpx.get(f"{base}/report/result", headers=auth).json()
    assert latest["response"]["choices"][0]["message"]["content"] == "echo: second"
    first = httpx.get(f"{base}/report/result?version=1", headers=auth).json()
    assert first["response"]["choices"][0]["message"]["content"] == "echo: first"

    listed = httpx.get(base, headers=auth).json()["data"]
    assert [j["id"] for j in listed] == ["report"]
    assert httpx.post(base, json={"name": "report", "spec": spec}, headers=auth).status_code == 409
    bad = httpx.post(base, json={"spec": {"flavor": "echo", "messages": []}}, headers=auth)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "spec.messages"
    typo = {**spec, "parameters": {"temprature": 0.5}}  # would silently be dropped
    bad = httpx.post(base, json={"spec": typo}, headers=auth)
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "spec.parameters.temprature"
    assert [j["id"] for j in httpx.get(base, headers=auth).json()["data"]] == ["report"]
    assert httpx.delete(f"{base}/report", headers=auth).json()["deleted"] is True
    assert httpx.get(f"{base}/report", headers=auth).status_code == 404


def test_a_quick_job_is_not_marked_running(
    api: Api, tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc]
) -> None:
    """Under 2 s, a job goes from Pending to Succeeded in one status write that still
    says when it started and that it ran once."""
    manifest = flavor_manifest("quick", fault_server.endpoint("delay/1"), "echo")
    tenant.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    start_worker(f"{tenant.namespace}/quick")
    auth = {"Authorization": f"Bearer {tenant.token}"}
    spec = {"flavor": "quick", "messages": [{"role": "user", "content": "fast"}]}
    created = httpx.post(f"{api.url}/v1/jobs", json={"name": "fast", "spec": spec}, headers=auth)
    assert created.status_code == 201
    seen = []
    with httpx.stream("GET", f"{api.url}/v1/jobs/fast/events", headers=auth, timeout=30) as events:
        for line in events.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:])["status"])
    assert [s.get("state") for s in seen][-1] == "Succeeded"
    assert "Running" not in [s.get("state") for s in seen]
    assert seen[-1]["attempts"] == 1 and seen[-1]["startTime"] <= seen[-1]["completionTime"]


def test_another_tenant_sees_nothing(api: Api, tenant: Tenant, fault_server: FaultServer) -> None:
    manifest = flavor_manifest("echo", fault_server.endpoint(), "echo")
    tenant.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    auth = {"Authorization": f"Bearer {tenant.token}"}
    spec = {"flavor": "echo", "messages": [{"role": "user", "content": "mine"}]}
    assert (
        httpx.post(
            f"{api.url}/v1/jobs", json={"name": "private", "spec": spec}, headers=auth
        ).status_code
        == 201
    )
    other = tenant.cluster.kubectl("create", "namespace", f"{tenant.namespace}-other")
    assert other.returncode == 0

    token = create_token(tenant.cluster.kubeconfig, f"{tenant.namespace}-other", "t")
    stranger = {"Authorization": f"Bearer {token}"}
    for path in ("/v1/jobs/private", "/v1/jobs/private/result", "/v1/tasks/private"):
        assert httpx.get(f"{api.url}{path}", headers=stranger).status_code == 404
    assert httpx.get(f"{api.url}/v1/jobs", headers=stranger).json()["data"] == []
    assert httpx.get(f"{api.url}/v1/models", headers=stranger).json()["data"] == []
    tenant.cluster.kubectl("delete", "namespace", f"{tenant.namespace}-other", "--wait=false")
