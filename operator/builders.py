"""The Kubernetes objects a Flavor owns, built as plain dicts by pure functions.

An external flavor (``spec.endpoint``) gets a worker Deployment with no GPU. A
self-hosted flavor (``spec.deploy``) gets a Deployment whose pods hold the
model server (vLLM or Ollama, on GPU nodes) and the worker side by side, and a
Service in front of the model server. Every object carries an ownerReference
to its flavor, so deleting the flavor deletes them.

A shared model (ClusterFlavor) gets the same objects in the release's
namespace (the builders take it "placed" there: ``placed``), named ``cf-<name>``
so that they never meet a Flavor of the same name, and labelled with
``SHARED_LABEL`` instead of ``FLAVOR_LABEL``; its workers serve every tenant's
queue of it (``--queue <name>@*``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from llmloom import API_VERSION, OPERATOR, queues
from llmloom.resources import Deploy, Flavor
from llmloom.settings import OperatorSettings

Obj = dict[str, Any]
FLAVOR_LABEL = "llmloom.io/flavor"
SHARED_LABEL = "llmloom.io/cluster-flavor"
"""The label of a shared model's objects and pods (its value: the ClusterFlavor's name)."""
SHARED_WORKER_LABEL = "llmloom.io/shared-worker"
"""Marks the RoleBindings that let a shared model's workers serve a tenant's jobs."""
MANAGER = OPERATOR
READY_FILE = "/tmp/llmloom-ready"


@dataclass(frozen=True)
class ProviderDefaults:
    """How a provider's model server is run when a flavor does not say."""

    image: str
    port: int
    api_prefix: str
    """Path of the provider's API on the server: the worker's endpoint is port + prefix."""
    health_path: str
    cache_env: str
    """Environment variable naming the model cache folder."""
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


PROVIDERS: dict[str, ProviderDefaults] = {
    "vllm": ProviderDefaults(
        image="vllm/vllm-openai:v0.11.0",
        port=8000,
        api_prefix="/v1",
        health_path="/health",
        cache_env="HF_HOME",
        args=("--model", "{model}", "--port", "{port}", "--download-dir", "/models"),
    ),
    "ollama": ProviderDefaults(
        image="ollama/ollama:0.12.6",
        port=11434,
        api_prefix="",
        health_path="/",
        cache_env="OLLAMA_MODELS",
        env={"OLLAMA_HOST": "0.0.0.0:{port}", "OLLAMA_KEEP_ALIVE": "-1"},
    ),
}
CACHE_DIR = "/models"


def placed(flavor: Flavor, release_namespace: str) -> Flavor:
    """The flavor as the builders take it: in the namespace its objects live in (a shared
    model's: the release's)."""
    if not flavor.shared:
        return flavor
    meta = flavor.metadata.model_copy(update={"namespace": release_namespace})
    return flavor.model_copy(update={"metadata": meta})


def child_name(flavor: Flavor) -> str:
    """The name of the flavor's Deployment and Service."""
    return f"cf-{flavor.metadata.name}" if flavor.shared else flavor.metadata.name


def labels(flavor: Flavor, component: str) -> dict[str, str]:
    """The labels of every object and pod of a flavor."""
    return {
        "app.kubernetes.io/name": f"llmloom-{component}",
        "app.kubernetes.io/instance": child_name(flavor),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "llmloom",
        "app.kubernetes.io/managed-by": MANAGER,
        **selector(flavor),
    }


def selector(flavor: Flavor) -> dict[str, str]:
    """The labels that select a flavor's pods."""
    return {(SHARED_LABEL if flavor.shared else FLAVOR_LABEL): flavor.metadata.name}


def selector_string(flavor: Flavor) -> str:
    return ",".join(f"{k}={v}" for k, v in selector(flavor).items())


def owner_reference(flavor: Flavor) -> Obj:
    return {
        "apiVersion": API_VERSION,
        "kind": flavor.kind,
        "name": flavor.metadata.name,
        "uid": flavor.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(flavor: Flavor, name: str, component: str) -> Obj:
    return {
        "name": name,
        "namespace": flavor.metadata.namespace,
        "labels": labels(flavor, component),
        "ownerReferences": [owner_reference(flavor)],
    }


def model_port(flavor: Flavor) -> int:
    deploy = flavor.spec.deploy or Deploy()
    return deploy.port or PROVIDERS[flavor.spec.provider].port


def service_endpoint(flavor: Flavor) -> str:
    """The in-cluster URL of a self-hosted flavor's model server (its API base)."""
    d = PROVIDERS[flavor.spec.provider]
    ns, name = flavor.metadata.namespace, child_name(flavor)
    return f"http://{name}.{ns}.svc:{model_port(flavor)}{d.api_prefix}"


def endpoint(flavor: Flavor) -> str:
    """Where the flavor's model is served: its endpoint, or its Service."""
    return flavor.spec.endpoint or service_endpoint(flavor)


_RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def worker_container(flavor: Flavor, settings: OperatorSettings, local_endpoint: str | None) -> Obj:
    """The LLMLoom worker, taking the flavor's jobs (from its pod's model server, if any)."""
    env = [
        {"name": "LLMLOOM_REDIS_URL", "value": settings.worker_redis_url or settings.redis_url},
        {"name": "LLMLOOM_READY_FILE", "value": READY_FILE},
        {"name": "LLMLOOM_LOG_LEVEL", "value": settings.log_level},
        {"name": "LLMLOOM_RELEASE_NAMESPACE", "value": settings.release_namespace},
    ]
    if settings.worker_document_allowed_networks:
        allowed = json.dumps(settings.worker_document_allowed_networks)
        env.append({"name": "LLMLOOM_DOCUMENT_ALLOWED_NETWORKS", "value": allowed})
    if local_endpoint is not None:
        env += [
            {"name": "LLMLOOM_ENDPOINT", "value": local_endpoint},
            {"name": "LLMLOOM_WAIT_FOR_MODEL", "value": "true"},
        ]
    return {
        "name": "worker",
        "image": settings.worker_image,
        "args": ["worker", "--queue", worker_queue(flavor)],
        "env": env,
        "readinessProbe": {"exec": {"command": ["test", "-f", READY_FILE]}, "periodSeconds": 5},
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": _RESTRICTED,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def worker_queue(flavor: Flavor) -> str:
    """What a flavor's workers take: its queue, or every tenant's queue of a shared model."""
    if flavor.shared:
        return f"{flavor.metadata.name}@*"
    return queues.queue_name(flavor.metadata.namespace, flavor.metadata.name)


def _fill(text: str, flavor: Flavor) -> str:
    return text.format(model=flavor.spec.model, port=model_port(flavor))


def _cache_volume(deploy: Deploy) -> Obj:
    cache = deploy.model_cache
    if cache.claim_name:
        return {"name": "models", "persistentVolumeClaim": {"claimName": cache.claim_name}}
    if cache.host_path:
        return {
            "name": "models",
            "hostPath": {"path": cache.host_path, "type": "DirectoryOrCreate"},
        }
    return {"name": "models", "emptyDir": {"sizeLimit": cache.size_limit}}


def model_container(flavor: Flavor) -> Obj:
    """The model server (vLLM or Ollama) with the flavor's GPUs."""
    deploy = flavor.spec.deploy or Deploy()
    d = PROVIDERS[flavor.spec.provider]
    port = model_port(flavor)
    env = {d.cache_env: CACHE_DIR, **{k: _fill(v, flavor) for k, v in d.env.items()}}
    env.update({e.name: e.value for e in deploy.env})
    resources: Obj = {"requests": {}, "limits": {}}
    if deploy.resources is not None:
        resources["requests"].update(deploy.resources.requests or {})
        resources["limits"].update(deploy.resources.limits or {})
    if deploy.gpus:
        resources["requests"]["nvidia.com/gpu"] = str(deploy.gpus)
        resources["limits"]["nvidia.com/gpu"] = str(deploy.gpus)
    args = deploy.args if deploy.args is not None else [_fill(a, flavor) for a in d.args]
    probe = {"httpGet": {"path": d.health_path, "port": port}}
    return {
        "name": "model-server",
        "image": deploy.image or d.image,
        "args": args,
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "ports": [{"name": "http", "containerPort": port}],
        "resources": resources,
        "readinessProbe": {**probe, "periodSeconds": 5},
        # Loading weights can take many minutes; only a server that stops
        # answering after it started is restarted.
        "startupProbe": {**probe, "periodSeconds": 10, "failureThreshold": 180},
        "livenessProbe": {**probe, "periodSeconds": 30, "failureThreshold": 5},
        "volumeMounts": [
            {"name": "models", "mountPath": CACHE_DIR},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }


GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def model_deployment(flavor: Flavor, settings: OperatorSettings, replicas: int) -> Obj:
    """The self-hosted flavor's Deployment: model server and worker in each pod."""
    deploy = flavor.spec.deploy or Deploy()
    d = PROVIDERS[flavor.spec.provider]
    local = f"http://127.0.0.1:{model_port(flavor)}{d.api_prefix}"
    tolerations = [t.wire() for t in deploy.tolerations]
    if deploy.gpus and GPU_TOLERATION not in tolerations:
        tolerations.append(GPU_TOLERATION)
    pod_labels = labels(flavor, "model-server")
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(flavor, child_name(flavor), "model-server"),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector(flavor)},
            # GPUs are scarce: replace pods one by one instead of surging.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
            },
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "serviceAccountName": settings.worker_service_account,
                    "containers": [
                        model_container(flavor),
                        worker_container(flavor, settings, local),
                    ],
                    "nodeSelector": dict(deploy.node_selector),
                    "tolerations": tolerations,
                    "volumes": [
                        _cache_volume(deploy),
                        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                    "terminationGracePeriodSeconds": 120,
                },
            },
        },
    }


def model_service(flavor: Flavor) -> Obj:
    """A Service in front of a self-hosted flavor's model servers."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(flavor, child_name(flavor), "model-server"),
        "spec": {
            "selector": selector(flavor),
            "ports": [{"name": "http", "port": model_port(flavor), "targetPort": "http"}],
        },
    }


def worker_deployment(flavor: Flavor, settings: OperatorSettings, replicas: int = 1) -> Obj:
    """An external flavor's workers: no GPU, calling the flavor's endpoint."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(flavor, f"{child_name(flavor)}-worker", "worker"),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector(flavor)},
            "template": {
                "metadata": {"labels": labels(flavor, "worker")},
                "spec": {
                    "serviceAccountName": settings.worker_service_account,
                    "containers": [worker_container(flavor, settings, None)],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                    "terminationGracePeriodSeconds": 120,
                },
            },
        },
    }


def worker_service_account(namespace: str, settings: OperatorSettings) -> Obj:
    """The ServiceAccount the worker containers of a namespace run as."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": settings.worker_service_account,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/part-of": "llmloom",
                "app.kubernetes.io/managed-by": MANAGER,
            },
        },
    }


def worker_role_binding(namespace: str, settings: OperatorSettings) -> Obj:
    """Grants the workers of one namespace the llmloom-worker ClusterRole there, and only there."""
    return _worker_binding(namespace, settings.worker_service_account, namespace, settings)


def shared_worker_role_binding(tenant: str, settings: OperatorSettings) -> Obj:
    """Grants the workers of shared models (the release's worker ServiceAccount) the
    llmloom-worker ClusterRole in one tenant's namespace, which a ClusterFlavor is granted
    to: they write its jobs' status and read its documents there, and only there. Deleted
    when no ClusterFlavor grants the namespace any more."""
    name = f"{settings.worker_service_account}-shared"
    binding = _worker_binding(tenant, name, settings.release_namespace, settings)
    binding["metadata"]["labels"][SHARED_WORKER_LABEL] = "true"
    return binding


def _worker_binding(
    namespace: str, name: str, account_namespace: str, settings: OperatorSettings
) -> Obj:
    """A RoleBinding in ``namespace`` of the workers' ClusterRole to the worker
    ServiceAccount of ``account_namespace``."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/part-of": "llmloom",
                "app.kubernetes.io/managed-by": MANAGER,
            },
        },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": settings.worker_cluster_role,
        },
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": settings.worker_service_account,
                "namespace": account_namespace,
            }
        ],
    }
