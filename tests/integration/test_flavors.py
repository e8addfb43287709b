"""Flavors on the cluster: checked endpoints, worker pods, GPU pods, scaling.

Pods land on kwok's fake nodes (two with 8 GPUs, one without) and are marked
Running without running containers; where a test needs jobs to run, a worker
runs as a local process in place of the pod's worker container.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from devstack.modelserver import ModelServer
from devstack.procs import Proc, free_port, wait_for

from .conftest import Tenant, flavor_manifest


def ready(tenant: Tenant, name: str) -> dict[str, Any]:
    status = tenant.get("flavor", name).get("status", {})
    cond: dict[str, Any] = next(
        (c for c in status.get("conditions", []) if c["type"] == "Ready"), {}
    )
    return cond


def wait_reason(tenant: Tenant, name: str, reason: str, timeout: float = 30) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        cond = ready(tenant, name)
        return cond if cond.get("reason") == reason else None

    return wait_for(check, timeout, f"flavor {name} to be Ready with reason {reason}")


def gpu_flavor(name: str, gpus: int = 1, **deploy: Any) -> dict[str, Any]:
    return {
        "apiVersion": "llmloom.io/v1alpha1",
        "kind": "Flavor",
        "metadata": {"name": name},
        "spec": {
            "provider": "vllm",
            "model": "smollm2-135m",
            "concurrency": 1,
            "deploy": {"gpus": gpus, **deploy},
        },
    }


def apply(tenant: Tenant, obj: dict[str, Any]) -> None:
    tenant.kubectl("apply", "-f", "-", input=yaml.safe_dump(obj))


def pods(tenant: Tenant, flavor: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(
        tenant.kubectl("get", "pods", "-l", f"llmloom.io/flavor={flavor}", "-o", "json")
    )["items"]
    return items


def test_external_flavor_is_checked_and_gets_a_worker(
    tenant: Tenant, smollm2: str, api: object
) -> None:
    tenant.kubectl("wait", f"flavor/{smollm2}", "--for=condition=Ready", "--timeout=30s")
    cond = ready(tenant, smollm2)
    assert cond["reason"] == "EndpointReady" and "smollm2-135m" in cond["message"]
    row = tenant.kubectl("get", "flavor", smollm2).splitlines()[1].split()
    assert row[:4] == [smollm2, "openai", "smollm2-135m", "True"]

    deployment = json.loads(tenant.kubectl("get", "deployment", f"{smollm2}-worker", "-o", "json"))
    owner = deployment["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Flavor", smollm2, True)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["worker", "--queue", f"{tenant.namespace}/{smollm2}"]
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])
    # The worker pod runs on the node without GPUs.
    wait_for(
        lambda: [p for p in pods(tenant, smollm2) if p["status"].get("phase") == "Running"],
        30,
        "the worker pod to run",
    )
    assert pods(tenant, smollm2)[0]["spec"]["nodeName"] == "cpu-node-0"


@pytest.mark.parametrize(
    ("spec", "reason", "words"),
    [
        ({"endpoint": "DEAD"}, "EndpointUnreachable", "ConnectError"),
        ({"model": "gpt-17"}, "ModelNotServed", "'gpt-17' is not among the models"),
        ({"apiKeySecretRef": {"name": "no-such-secret"}}, "SecretMissing", "'no-such-secret'"),
    ],
    ids=["unreachable", "model-not-served", "secret-missing"],
)
def test_external_flavor_not_ready_says_why(
    tenant: Tenant,
    model_server: ModelServer,
    api: object,
    spec: dict[str, Any],
    reason: str,
    words: str,
) -> None:
    flavor = flavor_manifest("ext", model_server.url)
    flavor["spec"].update(spec)
    if flavor["spec"]["endpoint"] == "DEAD":
        flavor["spec"]["endpoint"] = f"http://127.0.0.1:{free_port()}/v1"
    apply(tenant, flavor)
    cond = wait_reason(tenant, "ext", reason)
    assert cond["status"] == "False" and words in cond["message"]
    # Fixing the cause makes it Ready on the next check.
    if reason == "SecretMissing":
        tenant.kubectl("create", "secret", "generic", "no-such-secret", "--from-literal=api-key=k")
        wait_reason(tenant, "ext", "EndpointReady")


def test_gpu_flavor_runs_its_model_server_on_gpu_nodes(tenant: Tenant, api: object) -> None:
    apply(tenant, gpu_flavor("llama", gpus=2, nodeSelector={"nvidia.com/gpu.present": "true"}))
    tenant.kubectl("wait", "flavor/llama", "--for=condition=Ready", "--timeout=60s")
    assert ready(tenant, "llama")["reason"] == "ModelServerReady"
    (pod,) = pods(tenant, "llama")
    assert pod["spec"]["nodeName"].startswith("gpu-node-")
    server, worker = pod["spec"]["containers"]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert server["image"].startswith("vllm/vllm-openai:")
    assert server["args"][:2] == ["--model", "smollm2-135m"]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["LLMLOOM_ENDPOINT"] == "http://127.0.0.1:8000/v1"
    assert env["LLMLOOM_WAIT_FOR_MODEL"] == "true"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"][
        "tolerations"
    ]

    status = tenant.get("flavor", "llama")["status"]
    assert status["endpoint"] == f"http://llama.{tenant.namespace}.svc:8000/v1"
    assert status["replicas"] == {"desired": 1, "ready": 1}
    service = json.loads(tenant.kubectl("get", "service", "llama", "-o", "json"))
    assert service["spec"]["ports"][0]["port"] == 8000
    row = tenant.kubectl("get", "flavor", "llama").splitlines()[1].split()
    assert row[3:5] == ["True", "1"]

    # Changing the flavor rolls its pods; deleting it removes them.
    tenant.kubectl(
        "patch",
        "flavor",
        "llama",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"deploy": {"image": "vllm/vllm-openai:v0.12.0"}}}),
    )

    def rolled() -> bool:
        current = pods(tenant, "llama")
        return bool(current) and all(
            p["spec"]["containers"][0]["image"].endswith("v0.12.0") for p in current
        )

    wait_for(rolled, 60, "the pods to roll to the new image")
    tenant.kubectl("delete", "flavor", "llama")
    wait_for(
        lambda: "llama" not in tenant.kubectl("get", "deployments,services", "-o", "name"),
        60,
        "garbage collection of the flavor's Deployment and Service",
    )


def test_flavor_asking_for_more_gpus_than_exist_is_not_ready(tenant: Tenant, api: object) -> None:
    apply(tenant, gpu_flavor("huge", gpus=16))
    cond = wait_reason(tenant, "huge", "Unschedulable", timeout=60)
    assert cond["status"] == "False"
    assert "Insufficient nvidia.com/gpu" in cond["message"]


def test_scale_follows_the_queue_from_zero_and_back(
    tenant: Tenant, model_server: ModelServer, start_worker: Callable[..., Proc], api: object
) -> None:
    apply(tenant, gpu_flavor("burst", replicas={"min": 0, "max": 3}, scaleDownDelaySeconds=3))
    wait_reason(tenant, "burst", "ScaledToZero")
    assert pods(tenant, "burst") == []

    jobs: list[dict[str, Any]] = [
        {
            "apiVersion": "llmloom.io/v1alpha1",
            "kind": "LLMJob",
            "metadata": {"name": f"job-{i}"},
            "spec": {
                "flavor": "burst",
                "messages": [{"role": "user", "content": f"Count to {i}."}],
                "parameters": {"maxTokens": 8},
            },
        }
        for i in range(4)
    ]
    tenant.kubectl("apply", "-f", "-", input="\n---\n".join(yaml.safe_dump(j) for j in jobs))

    # Four queued jobs at concurrency 1: as many pods as allowed, all placed on GPU nodes.
    def running() -> int:
        return len([p for p in pods(tenant, "burst") if p["status"].get("phase") == "Running"])

    wait_for(lambda: running() == 3, 60, "3 running model-server pods")

    def recorded() -> bool:
        # The status is written after the Deployment; under load the pods can be faster.
        status = tenant.get("flavor", "burst")["status"]
        return bool(status["replicas"]["desired"] == 3 and status["queue"]["pending"] == 4)

    wait_for(recorded, 15, "the status to show 3 pods for 4 waiting jobs")

    # A worker in place of the pods' workers drains the queue; nothing was lost while scaling.
    start_worker(f"{tenant.namespace}/burst", env={"LLMLOOM_ENDPOINT": model_server.url})
    for job in jobs:
        tenant.kubectl(
            "wait",
            f"llmjob/{job['metadata']['name']}",
            "--for=condition=Succeeded",
            "--timeout=120s",
        )
    wait_for(
        lambda: tenant.get("flavor", "burst")["status"]["replicas"]["desired"] == 0,
        60,
        "scale back to zero after the delay",
    )
    wait_for(lambda: pods(tenant, "burst") == [], 60, "the pods to go")


def test_kubectl_scale_sets_the_floor(tenant: Tenant, api: object) -> None:
    apply(tenant, gpu_flavor("floor", replicas={"min": 0, "max": 3}))
    wait_reason(tenant, "floor", "ScaledToZero")
    tenant.kubectl("scale", "flavor", "floor", "--replicas=2")
    assert tenant.get("flavor", "floor")["spec"]["deploy"]["replicas"] == {"min": 2, "max": 3}
    wait_for(
        lambda: tenant.get("flavor", "floor")["status"]["replicas"]["ready"] == 2,
        60,
        "two ready model-server pods",
    )
    scale = json.loads(
        tenant.kubectl(
            "get",
            "--raw",
            f"/apis/llmloom.io/v1alpha1/namespaces/{tenant.namespace}/flavors/floor/scale",
        )
    )
    assert scale["spec"]["replicas"] == 2 and scale["status"]["replicas"] == 2
    assert scale["status"]["selector"] == "llmloom.io/flavor=floor"
    bad = tenant.cluster.kubectl(
        "scale", "flavor", "floor", "--replicas=5", "-n", tenant.namespace, check=False
    )
    assert bad.returncode != 0 and "replicas.min must not exceed replicas.max" in bad.stderr
