"""What an operator of LLMLoom sees: Events in `kubectl describe`, Prometheus metrics."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import openai
import yaml

from devstack.faultserver import FaultServer
from devstack.inprocess import OperatorThread
from devstack.procs import Proc, wait_for

from .conftest import Api, Tenant, flavor_manifest


def reasons(tenant: Tenant, name: str) -> list[str]:
    out = tenant.kubectl(
        "get",
        "events",
        "--field-selector",
        f"involvedObject.name={name}",
        "-o",
        "jsonpath={.items[*].reason}",
    )
    return out.split()


def job(name: str, flavor: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "llmloom.io/v1alpha1",
            "kind": "LLMJob",
            "metadata": {"name": name},
            "spec": {"flavor": flavor, "messages": [{"role": "user", "content": "hi"}]},
        }
    )


def test_state_changes_are_events(
    tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc], api: Api
) -> None:
    tenant.kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump(flavor_manifest("echo", fault_server.endpoint(), "echo")),
    )
    tenant.kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump(
            flavor_manifest("broken", fault_server.endpoint("status/401"), "echo")
        ),
    )
    start_worker(f"{tenant.namespace}/echo")
    start_worker(f"{tenant.namespace}/broken")
    # A request's job: its answer is the HTTP response, so no routine Events.
    client = openai.OpenAI(base_url=f"{api.url}/v1", api_key=tenant.token, max_retries=0)
    client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
    [requested] = tenant.kubectl("get", "llmjobs", "-o", "name").split()
    tenant.kubectl("apply", "-f", "-", input=job("fine", "echo"))
    tenant.kubectl("apply", "-f", "-", input=job("doomed", "broken"))
    tenant.kubectl("wait", "llmjob/fine", "--for=condition=Succeeded", "--timeout=30s")
    tenant.kubectl("wait", "llmjob/doomed", "--for=condition=Failed", "--timeout=30s")
    wait_for(
        lambda: {"Accepted", "Completed"} <= set(reasons(tenant, "fine")),
        15,
        "the job's events",
    )
    # Posted before fine's (the request had finished when fine was applied), if at all.
    assert reasons(tenant, requested.removeprefix("llmjob.llmloom.io/")) == []
    wait_for(lambda: "ProviderUnauthorized" in reasons(tenant, "doomed"), 15, "the failure event")
    described = tenant.kubectl("describe", "llmjob", "doomed")
    assert "Warning  ProviderUnauthorized" in described and "injected failure 401" in described
    wait_for(lambda: "EndpointReady" in reasons(tenant, "echo"), 15, "the flavor's Ready event")


def test_operator_metrics(
    tenant: Tenant,
    fault_server: FaultServer,
    start_worker: Callable[..., Proc],
    operator: OperatorThread,
    api: Api,
) -> None:
    tenant.kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump(flavor_manifest("echo", fault_server.endpoint(), "echo")),
    )
    start_worker(f"{tenant.namespace}/echo")
    tenant.kubectl("apply", "-f", "-", input=job("counted", "echo"))
    tenant.kubectl("wait", "llmjob/counted", "--for=condition=Succeeded", "--timeout=30s")
    url = f"http://127.0.0.1:{operator.settings.metrics_port}/metrics"
    ns = tenant.namespace

    def scraped() -> bool:
        text = httpx.get(url).text
        return (
            f'llmloom_jobs{{namespace="{ns}",state="Succeeded"}} 1.0' in text
            and f'llmloom_queue_pending{{flavor="echo",namespace="{ns}"}} 0.0' in text
        )

    wait_for(scraped, 15, "the job and the queue in /metrics")
    assert "llmloom_reconcile_errors_total" in httpx.get(url).text
    # Liveness is answered by kopf on the operator's own loop (not the metrics thread).
    live = f"http://127.0.0.1:{operator.settings.liveness_port}/healthz"
    assert httpx.get(live).status_code == 200
