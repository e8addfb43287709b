"""The objects a flavor owns, as built for the cluster."""

from __future__ import annotations

from typing import Any

from llmloom.operator import builders
from llmloom.resources import ClusterFlavor, Flavor
from llmloom.settings import OperatorSettings

SETTINGS = OperatorSettings(
    redis_url="redis://redis.llmloom:6379/0", worker_image="llmloom/worker:9"
)


def flavor(spec: dict[str, Any]) -> Flavor:
    return Flavor.model_validate(
        {"metadata": {"name": "llama", "namespace": "team-a", "uid": "u-1"}, "spec": spec}
    )


VLLM = flavor(
    {
        "provider": "vllm",
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "deploy": {
            "gpus": 2,
            "nodeSelector": {"nvidia.com/gpu.product": "H100"},
            "tolerations": [{"key": "dedicated", "value": "llm", "effect": "NoSchedule"}],
            "resources": {"requests": {"cpu": "8", "memory": "64Gi"}},
            "modelCache": {"claimName": "hf-cache"},
        },
    }
)


def test_vllm_pod_holds_the_server_with_gpus_and_the_worker() -> None:
    d = builders.model_deployment(VLLM, SETTINGS, replicas=2)
    assert d["spec"]["replicas"] == 2
    assert d["metadata"]["ownerReferences"][0] == {
        "apiVersion": "llmloom.io/v1alpha1",
        "kind": "Flavor",
        "name": "llama",
        "uid": "u-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    pod = d["spec"]["template"]["spec"]
    server, worker = pod["containers"]
    assert server["image"].startswith("vllm/vllm-openai:")
    assert server["args"] == [
        "--model",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--port",
        "8000",
        "--download-dir",
        "/models",
    ]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert server["resources"]["requests"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "2"}
    assert {"name": "HF_HOME", "value": "/models"} in server["env"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "H100"}
    assert builders.GPU_TOLERATION in pod["tolerations"] and len(pod["tolerations"]) == 2
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "hf-cache"}} in pod["volumes"]
    env = {e["name"]: e["value"] for e in worker["env"]}
    assert env["LLMLOOM_ENDPOINT"] == "http://127.0.0.1:8000/v1"
    assert env["LLMLOOM_REDIS_URL"] == "redis://redis.llmloom:6379/0"
    assert worker["image"] == "llmloom/worker:9"
    assert worker["args"] == ["worker", "--queue", "team-a/llama"]
    assert worker["securityContext"]["runAsNonRoot"] is True


def test_ollama_defaults() -> None:
    f = flavor({"provider": "ollama", "model": "llama3.2:1b", "deploy": {}})
    pod = builders.model_deployment(f, SETTINGS, 1)["spec"]["template"]["spec"]
    server, worker = pod["containers"]
    assert server["image"].startswith("ollama/ollama:") and server["args"] == []
    env = {e["name"]: e["value"] for e in server["env"]}
    assert env["OLLAMA_MODELS"] == "/models" and env["OLLAMA_HOST"] == "0.0.0.0:11434"
    assert {e["name"]: e["value"] for e in worker["env"]}[
        "LLMLOOM_ENDPOINT"
    ] == "http://127.0.0.1:11434"
    assert {"name": "models", "emptyDir": {"sizeLimit": "100Gi"}} in pod["volumes"]
    assert builders.endpoint(f) == "http://llama.team-a.svc:11434"


def test_external_flavor_gets_a_worker_without_gpus() -> None:
    f = flavor({"provider": "openai", "model": "gpt-4o-mini", "endpoint": "https://x/v1"})
    d = builders.worker_deployment(f, SETTINGS)
    assert d["metadata"]["name"] == "llama-worker"
    (worker,) = d["spec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in str(worker)
    assert "LLMLOOM_ENDPOINT" not in str(worker["env"])
    assert builders.endpoint(f) == "https://x/v1"


SHARED = ClusterFlavor.model_validate(
    {
        "metadata": {"name": "llama", "uid": "u-2"},
        "spec": {**VLLM.spec.wire(), "tenantSelector": {}},
    }
)


def test_a_shared_models_objects_live_in_the_release_namespace_under_their_own_names() -> None:
    placed = builders.placed(SHARED, SETTINGS.release_namespace)
    d = builders.model_deployment(placed, SETTINGS, replicas=1)
    assert d["metadata"]["namespace"] == "llmloom-system"
    assert d["metadata"]["name"] == "cf-llama"  # never a Flavor's "llama" there
    assert d["metadata"]["ownerReferences"][0]["kind"] == "ClusterFlavor"
    assert d["spec"]["selector"]["matchLabels"] == {builders.SHARED_LABEL: "llama"}
    assert builders.FLAVOR_LABEL not in d["spec"]["template"]["metadata"]["labels"]
    worker = d["spec"]["template"]["spec"]["containers"][1]
    assert worker["args"] == ["worker", "--queue", "llama@*"]
    assert {"name": "LLMLOOM_RELEASE_NAMESPACE", "value": "llmloom-system"} in worker["env"]
    assert builders.service_endpoint(placed) == "http://cf-llama.llmloom-system.svc:8000/v1"
    # A namespaced flavor is placed where it is.
    assert builders.placed(VLLM, "llmloom-system") is VLLM


def test_a_grant_binds_the_release_workers_in_the_tenants_namespace_only() -> None:
    rb = builders.shared_worker_role_binding("team-a", SETTINGS)
    assert rb["metadata"]["namespace"] == "team-a"
    assert rb["metadata"]["labels"][builders.SHARED_WORKER_LABEL] == "true"
    assert rb["subjects"] == [
        {"kind": "ServiceAccount", "name": "llmloom-worker", "namespace": "llmloom-system"}
    ]
    assert rb["roleRef"]["kind"] == "ClusterRole"
