"""Tenants cannot reach each other: with tenant B's token, every route of the API is
tried on tenant A's ids (jobs, results by version, events, tasks, files, batches,
models, usage), and with B's namespace rights, A's objects are named as documents of
B's jobs. Every try must be refused (404, or the refusal a route gives to what does
not exist), and the suite says how many it made."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import yaml

from devstack.faultserver import FaultServer
from devstack.procs import Proc, wait_for

from .conftest import Api, Tenant, flavor_manifest


def test_tenant_b_reaches_nothing_of_tenant_a(
    api: Api,
    tenant: Tenant,
    other_tenant: Tenant,
    fault_server: FaultServer,
    start_worker: Callable[..., Proc],
) -> None:
    a, b = tenant, other_tenant
    a_auth = {"Authorization": f"Bearer {a.token}"}
    b_auth = {"Authorization": f"Bearer {b.token}"}
    a.kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump(flavor_manifest("echo", fault_server.endpoint(), "echo")),
    )
    start_worker(f"{a.namespace}/echo")
    hi = [{"role": "user", "content": "A's secret prompt"}]

    # What A owns: a job (with a result), a task, a file, a batch, a Secret and a
    # ConfigMap in its namespace.
    job = httpx.post(
        f"{api.url}/v1/jobs",
        json={"name": "a-job", "spec": {"flavor": "echo", "messages": hi}},
        headers=a_auth,
    )
    assert job.status_code == 201, job.text
    wait_for(
        lambda: httpx.get(f"{api.url}/v1/jobs/a-job/result", headers=a_auth).status_code == 200,
        30,
        "A's job to finish",
    )
    chat = httpx.post(
        f"{api.url}/v1/chat/completions", json={"model": "echo", "messages": hi}, headers=a_auth
    )
    assert chat.status_code == 200, chat.text
    task = httpx.post(
        f"{api.url}/v1/chat/completions?wait=0",
        json={"model": "echo", "messages": hi},
        headers=a_auth,
    ).json()["id"]
    line = {
        "custom_id": "1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "echo", "messages": hi},
    }
    upload = httpx.post(
        f"{api.url}/v1/files",
        files={"file": ("in.jsonl", (json.dumps(line) + "\n").encode())},
        data={"purpose": "batch"},
        headers=a_auth,
    )
    assert upload.status_code == 200, upload.text
    file_id = upload.json()["id"]
    batch = httpx.post(
        f"{api.url}/v1/batches",
        json={
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
        headers=a_auth,
    )
    assert batch.status_code == 200, batch.text
    batch_id = batch.json()["id"]
    a.kubectl("create", "secret", "generic", "a-doc", "--from-literal=doc=A's secret doc")
    a.kubectl("label", "secret", "a-doc", "llmloom.io/document=true")
    a.kubectl("create", "configmap", "a-map", "--from-literal=doc=A's doc")

    # B's tries through the API, with B's token on A's ids.
    tries: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/v1/jobs/a-job", None),
        ("GET", "/v1/jobs/a-job/result", None),
        ("GET", "/v1/jobs/a-job/result?version=1", None),
        ("GET", "/v1/jobs/a-job/events", None),
        ("DELETE", "/v1/jobs/a-job", None),
        ("GET", f"/v1/tasks/{task}", None),
        ("DELETE", f"/v1/tasks/{task}", None),
        ("GET", f"/v1/files/{file_id}", None),
        ("GET", f"/v1/files/{file_id}/content", None),
        ("DELETE", f"/v1/files/{file_id}", None),
        ("GET", f"/v1/batches/{batch_id}", None),
        ("POST", f"/v1/batches/{batch_id}/cancel", None),
        (
            "POST",
            "/v1/batches",
            {
                "input_file_id": file_id,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        ),
        ("GET", "/v1/models/echo", None),
        ("POST", "/v1/chat/completions", {"model": "echo", "messages": hi}),
        ("POST", "/v1/completions", {"model": "echo", "prompt": "x"}),
        ("POST", "/v1/responses", {"model": "echo", "input": "x"}),
        ("POST", "/v1/embeddings", {"model": "echo", "input": "x"}),
        ("POST", "/v1/jobs", {"spec": {"flavor": "echo", "messages": hi}}),
    ]
    made = 0
    for method, path, body in tries:
        r = httpx.request(method, f"{api.url}{path}", json=body, headers=b_auth, timeout=30)
        made += 1
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert "A's secret" not in r.text
    # Lists and usage show B's own (nothing), never A's.
    for path in ("/v1/jobs", "/v1/files", "/v1/batches", "/v1/models"):
        r = httpx.get(f"{api.url}{path}", headers=b_auth)
        made += 1
        assert r.status_code == 200 and r.json()["data"] == [], (path, r.text)
    usage = httpx.get(f"{api.url}/v1/usage", headers=b_auth).json()
    made += 1
    assert usage["tenant"] == b.namespace and usage["requests"] == 0 and usage["flavors"] == []

    # B's namespace rights: its jobs name A's Secret and ConfigMap (as B would write them),
    # and A's flavor; each fails without reading A's.
    b.kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump(flavor_manifest("echo", fault_server.endpoint(), "echo")),
    )
    start_worker(f"{b.namespace}/echo")
    sources = {
        "a-secret": {"secretKeyRef": {"name": "a-doc", "key": "doc"}},
        "a-map": {"configMapKeyRef": {"name": "a-map", "key": "doc"}},
    }
    for name, source in sources.items():
        doc_job = {
            "apiVersion": "llmloom.io/v1alpha1",
            "kind": "LLMJob",
            "metadata": {"name": name},
            "spec": {"flavor": "echo", "task": "document", "prompt": "p", "document": source},
        }
        b.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc_job))
    for name in sources:
        b.kubectl("wait", f"llmjob/{name}", "--for=condition=Failed", "--timeout=60s")
        made += 1
        status = b.get("llmjob", name)["status"]
        assert "DocumentNotFound" in yaml.safe_dump(status), status
        assert "A's" not in yaml.safe_dump(status)
    # B's kubectl cannot read A's objects either (plain RBAC, shown for completeness).
    for kind in ("llmjob/a-job", "secret/a-doc", "configmap/a-map"):
        res = b.cluster.kubectl(
            "get",
            kind,
            "-n",
            a.namespace,
            "--as",
            f"system:serviceaccount:{b.namespace}:default",
            check=False,
        )
        made += 1
        assert res.returncode != 0
    print(f"\n{made} tries of tenant B on tenant A's work: every one refused")
