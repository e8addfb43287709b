"""Running the API: request ids, overhead, readiness, metrics, limits, cancelling."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import yaml

from devstack.faultserver import FaultServer
from devstack.procs import Proc, wait_for

from .conftest import MAX_BODY_BYTES, Api, Tenant, flavor_manifest


def echo(tenant: Tenant, faults: FaultServer, name: str = "echo", behaviour: str = "") -> str:
    tenant.kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump(flavor_manifest(name, faults.endpoint(behaviour), "echo")),
    )
    return name


def chat(api: Api, tenant: Tenant, model: str, **kw: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {tenant.token}", **kw.pop("headers", {})}  # type: ignore[dict-item]
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **kw}
    return httpx.post(f"{api.url}/v1/chat/completions", json=body, headers=headers, timeout=60)


def test_request_ids_and_overhead(
    api: Api, tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc]
) -> None:
    model = echo(tenant, fault_server, "paced", "delay/0.5")
    start_worker(f"{tenant.namespace}/{model}")
    r = chat(api, tenant, model, headers={"X-Request-Id": "trace-123"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "trace-123"
    # What LLMLoom added to the provider's time (bench/ measures how much).
    assert float(r.headers["x-llmloom-overhead-ms"]) >= 0
    assert len(chat(api, tenant, model).headers["x-request-id"]) == 32  # generated


def test_readiness_and_metrics(
    api: Api, tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc]
) -> None:
    ready = httpx.get(f"{api.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {
        "redis": "ok",
        "kubernetes": "ok",
        "flavors": "ok",
        "tokens": "ok",
    }
    model = echo(tenant, fault_server)
    start_worker(f"{tenant.namespace}/{model}")
    assert chat(api, tenant, model).status_code == 200
    text = httpx.get(api.metrics_url).text
    # Not on the client-facing port: tenants' names and token counts are not for clients.
    assert httpx.get(f"{api.url}/metrics").status_code == 404
    assert (
        'llmloom_api_requests_total{method="POST",route="/v1/chat/completions",status="200"}'
        in text
    )
    assert (
        f'llmloom_api_tokens_total{{flavor="echo",kind="prompt",tenant="{tenant.namespace}"}}'
        in text
    )
    assert "llmloom_api_overhead_seconds_bucket" in text


def test_oversized_bodies_are_refused(api: Api, tenant: Tenant) -> None:
    huge = "x" * (MAX_BODY_BYTES + 1)
    r = chat(api, tenant, "anything", messages=[{"role": "user", "content": huge}])
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    # Sent in chunks, with no Content-Length to refuse it by: held to the limit as read.
    body = json.dumps({"model": "anything", "messages": [{"role": "user", "content": huge}]})

    def chunks() -> Iterator[bytes]:
        data = body.encode()
        for i in range(0, len(data), 1 << 20):
            yield data[i : i + (1 << 20)]

    r = httpx.post(
        f"{api.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {tenant.token}", "Content-Type": "application/json"},
        content=chunks(),
        timeout=60,
    )
    assert "content-length" not in r.request.headers
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_cancelling_a_task(
    api: Api, tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc]
) -> None:
    model = echo(tenant, fault_server, "slow", "delay/30")
    worker = start_worker(f"{tenant.namespace}/{model}")
    r = httpx.post(
        f"{api.url}/v1/chat/completions?wait=0",
        headers={"Authorization": f"Bearer {tenant.token}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 202
    task = r.headers["location"]
    auth = {"Authorization": f"Bearer {tenant.token}"}
    wait_for(
        lambda: httpx.get(f"{api.url}{task}", headers=auth).json()["status"] == "running",
        20,
        "the task to run",
    )
    cancelled = httpx.delete(f"{api.url}{task}", headers=auth)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert httpx.get(f"{api.url}{task}", headers=auth).status_code == 404
    wait_for(lambda: "stopped: deleted" in worker.tail(), 10, "the worker to stop the call")
