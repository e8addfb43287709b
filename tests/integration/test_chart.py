"""The Helm chart, checked with the real helm against the real API server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from devstack.cluster import Cluster
from devstack.inprocess import OperatorThread
from devstack.procs import wait_for
from devstack.redisserver import RedisServer
from devstack.stack import CHART
from llmloom.settings import OperatorSettings

from .conftest import Tenant

FULL_VALUES = {
    "image": {"tag": "0.1.0"},
    "api": {
        "autoscaling": {"enabled": True},
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "host": "llm.example.com",
            "tlsSecretName": "llm-tls",
        },
    },
    "redis": {"persistence": {"size": "20Gi"}},
    "flavors": [
        {
            "name": "qwen-7b",
            "namespace": "team-a",
            "spec": {
                "provider": "vllm",
                "model": "Qwen/Qwen2.5-7B-Instruct",
                "deploy": {"gpus": 1, "replicas": {"min": 0, "max": 2}},
            },
        }
    ],
    "clusterFlavors": [
        {
            "name": "llama-70b",
            "spec": {
                "provider": "vllm",
                "model": "meta-llama/Llama-3.3-70B-Instruct",
                "deploy": {"gpus": 4},
                "tenantSelector": {"matchLabels": {"llmloom.io/shared-models": "true"}},
                "sharing": {"tenants": [{"namespace": "team-a", "weight": 3}]},
            },
        }
    ],
    "metrics": {"serviceMonitor": {"enabled": False}},
}


def helm(
    cluster: Cluster, home: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,  # HOME among them: without it, caches land in the working directory
        **cluster.env(),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        # Discovery cached for another test cluster that had the same port would hide kinds.
        "KUBECACHEDIR": str(home / "kube-cache"),
    }
    res = subprocess.run(
        [str(cluster.bin / "helm"), *args], env=env, text=True, capture_output=True
    )
    if check and res.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)}: {res.stderr}")
    return res


def docs(text: str) -> list[dict[str, object]]:
    return [d for d in yaml.safe_load_all(text) if d]


def template(cluster: Cluster, home: Path, namespace: str, *extra: str) -> str:
    """The chart rendered as GitOps tools render it: with the cluster's versions."""
    args = ["template", "llmloom", str(CHART), "-n", namespace, "--kube-version", "1.36.3"]
    args += ["--api-versions", "llmloom.io/v1alpha1/Flavor"]
    args += ["--api-versions", "llmloom.io/v1alpha1/ClusterFlavor", *extra]
    return helm(cluster, home, *args).stdout


def test_lint_and_template_render_valid_objects(
    cluster: Cluster, tenant: Tenant, tmp_path: Path
) -> None:
    assert "0 chart(s) failed" in helm(cluster, tmp_path, "lint", str(CHART)).stdout
    values = tmp_path / "full.yaml"
    values.write_text(yaml.safe_dump(FULL_VALUES))
    cluster.kubectl("create", "namespace", "team-a", check=False)
    for extra in ([], ["-f", str(values)]):
        rendered = template(cluster, tmp_path, tenant.namespace, *extra)
        kinds = {str(d["kind"]) for d in docs(rendered)}
        assert {"Deployment", "StatefulSet", "ClusterRole", "CustomResourceDefinition"} <= kinds
        # The API server accepts every object as rendered (the CRDs are installed already).
        res = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered, check=False)
        assert res.returncode == 0, res.stderr
    assert {"Flavor", "ClusterFlavor", "Ingress", "HorizontalPodAutoscaler"} <= kinds
    objects = docs(rendered)
    # Nothing client-facing publishes /metrics: the API's Service and Ingress carry
    # the http port only.
    api_service = next(
        d
        for d in objects
        if d["kind"] == "Service" and str(d["metadata"]["name"]).endswith("-api")  # type: ignore[index]
    )
    assert [p["name"] for p in api_service["spec"]["ports"]] == ["http"]  # type: ignore[index]
    # Redis admits LLMLoom's pods of the release namespace by the namespace's name.
    redis_policy = next(
        d for d in objects if d["kind"] == "NetworkPolicy" and "redis" in str(d["metadata"])
    )
    first = redis_policy["spec"]["ingress"][0]["from"][0]  # type: ignore[index]
    assert first["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": tenant.namespace}
    }
    roles = {d["metadata"]["name"] for d in objects if d["kind"] == "ClusterRole"}  # type: ignore[index]
    assert {"llmloom-view", "llmloom-edit", "llmloom-clusterflavor-view"} <= roles


def test_unknown_values_are_refused(cluster: Cluster, tmp_path: Path) -> None:
    res = helm(
        cluster,
        tmp_path,
        "template",
        "x",
        str(CHART),
        "--kube-version",
        "1.36.3",
        "--set",
        "api.replica=3",
        check=False,
    )
    assert res.returncode != 0 and "additional properties 'replica' not allowed" in res.stderr


@pytest.fixture
def bare_cluster() -> Iterator[Cluster]:
    """A cluster of its own: the chart installs CRDs and RBAC the session's cluster holds."""
    c = Cluster(gpu_nodes=1)
    yield c
    c.stop()


def test_install_upgrade_uninstall(bare_cluster: Cluster, tmp_path: Path) -> None:
    c = bare_cluster
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"flavors": FULL_VALUES["flavors"]}))
    release = ["llmloom", "-n", "llmloom-system", "-f", str(values)]
    c.kubectl("create", "namespace", "team-a")
    installed = helm(c, tmp_path, "install", *release, str(CHART), "--create-namespace").stdout
    c.kubectl(
        "wait", "--for=condition=Established", "crd/flavors.llmloom.io", "crd/llmjobs.llmloom.io"
    )
    # Helm maps every object before it applies any: the flavors from values come with the
    # next upgrade, and the release notes say so.
    assert "Run the same `helm upgrade --install` once more" in installed
    wait_for(
        lambda: "Flavor" in c.kubectl("api-resources", "--api-group=llmloom.io").stdout,
        30,
        "the Flavor kind in discovery",
    )
    helm(c, tmp_path, "upgrade", "--install", *release, str(CHART))
    assert c.kubectl("get", "flavor", "qwen-7b", "-n", "team-a", "-o", "name").stdout.strip()

    # RBAC works as granted, and no further.
    sa = "system:serviceaccount:llmloom-system:llmloom-operator"

    def can(*args: str) -> str:
        return c.kubectl("auth", "can-i", *args, "--as", sa, check=False).stdout.strip()

    assert can("patch", "llmjobs.llmloom.io/status", "-A") == "yes"
    assert can("create", "deployments", "-n", "team-a") == "yes"
    assert can("delete", "secrets", "-n", "team-a") == "no"
    assert can("create", "pods", "-n", "team-a") == "no"

    # The operator, run (as a local process, in place of its pod) with the token of the
    # chart's account, takes the flavor from values onto the GPU node.
    redis = RedisServer(tmp_path / "redis")
    operator = OperatorThread(
        OperatorSettings(
            redis_url=redis.url,
            metrics_port=0,
            flavor_resync_seconds=1,
            kubeconfig=str(c.service_account_kubeconfig("llmloom-system", "llmloom-operator")),
        )
    ).start()
    try:
        c.kubectl(
            "wait",
            "-n",
            "team-a",
            "flavor/qwen-7b",
            "--for=jsonpath={.status.replicas.desired}=0",
            "--timeout=30s",
        )  # min 0: scaled to zero, and Ready
        c.kubectl(
            "wait", "-n", "team-a", "flavor/qwen-7b", "--for=condition=Ready", "--timeout=30s"
        )
        assert c.kubectl(
            "get", "deployment", "qwen-7b", "-n", "team-a", "-o", "name"
        ).stdout.strip()
    finally:
        operator.stop()
        redis.stop()

    # An upgrade that changes a CRD reaches the cluster (CRDs are templates, not crds/).
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    crd_file = chart / "files" / "crds" / "llmloom.io_llmjobs.yaml"
    crd = yaml.safe_load(crd_file.read_text())
    crd["spec"]["versions"][0]["additionalPrinterColumns"].append(
        {"name": "Attempts", "type": "integer", "jsonPath": ".status.attempts"}
    )
    crd_file.write_text(yaml.safe_dump(crd))
    helm(c, tmp_path, "upgrade", *release, str(chart))
    live = json.loads(c.kubectl("get", "crd", "llmjobs.llmloom.io", "-o", "json").stdout)
    columns = [col["name"] for col in live["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert "Attempts" in columns

    # Uninstalling keeps the CRDs, and so every job.
    job = {
        "apiVersion": "llmloom.io/v1alpha1",
        "kind": "LLMJob",
        "metadata": {"name": "keepme", "namespace": "team-a"},
        "spec": {"flavor": "qwen-7b", "messages": [{"role": "user", "content": "hi"}]},
    }
    c.kubectl("apply", "-f", "-", input=yaml.safe_dump(job))
    helm(c, tmp_path, "uninstall", "llmloom", "-n", "llmloom-system")
    assert c.kubectl("get", "crd", "llmjobs.llmloom.io", check=False).returncode == 0
    assert c.kubectl("get", "llmjob", "keepme", "-n", "team-a", check=False).returncode == 0
    assert c.kubectl("get", "deployment", "-n", "llmloom-system", "-o", "name").stdout.strip() == ""
