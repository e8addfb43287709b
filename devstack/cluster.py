"""A real Kubernetes control plane as local processes, on loopback, state on /dev/shm.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as they
would in a cluster; kwok plays the kubelet of fake GPU nodes (pods scheduled
there are marked Running without running containers). Certificates are made
with openssl; the kubeconfig embeds them. Binaries come from
``hack/build-testbed.sh`` (or ``$LLMLOOM_TESTBED_BIN``).
"""

from __future__ import annotations

import base64
import os
import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import httpx
import yaml

from devstack.procs import Proc, free_port, wait_for

REPO = Path(__file__).resolve().parents[1]
STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)
BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
)


def testbed_bin() -> Path:
    """The folder with the control-plane binaries, building them if needed."""
    env = os.environ.get("LLMLOOM_TESTBED_BIN")
    if env:
        folder = Path(env)
    else:
        script = REPO / "hack" / "build-testbed.sh"
        if not script.exists():
            raise RuntimeError(
                "set LLMLOOM_TESTBED_BIN to a folder with the control-plane binaries"
            )
        out = subprocess.run(["bash", str(script)], check=True, stdout=subprocess.PIPE, text=True)
        folder = Path(out.stdout.strip().splitlines()[-1])
    missing = [b for b in BINARIES if not (folder / b).exists()]
    if missing:
        raise RuntimeError(f"{folder} lacks {', '.join(missing)}: run hack/build-testbed.sh")
    return folder


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path) -> None:
    """CA, API server certificate, admin client certificate, service-account keys."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "30",
        "-subj",
        "/CN=llmloom-testbed-ca",
        cwd=d,
    )
    (d / "server.ext").write_text(
        "subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,IP:127.0.0.1,IP:10.0.0.1\n"
        "extendedKeyUsage=serverAuth\n"
    )
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, subj, ext in (
        ("apiserver", "/CN=kube-apiserver", "server.ext"),
        ("admin", "/O=system:masters/CN=llmloom-admin", "client.ext"),
    ):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            subj,
            cwd=d,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "30",
            "-extfile",
            ext,
            cwd=d,
        )
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


def kubeconfig(server: str, pki: Path, user: dict[str, str] | None = None) -> dict[str, Any]:
    """A kubeconfig with embedded certificates (admin by default)."""

    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    creds = user or {
        "client-certificate-data": b64("admin.crt"),
        "client-key-data": b64("admin.key"),
    }
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "llmloom",
                "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")},
            }
        ],
        "users": [{"name": "llmloom", "user": creds}],
        "contexts": [{"name": "llmloom", "context": {"cluster": "llmloom", "user": "llmloom"}}],
        "current-context": "llmloom",
    }


def kwok_config(stages_dir: Path) -> str:
    """kwok's configuration with the node and pod lifecycles it ships as stages."""
    # Only Stage documents: a KwokConfiguration document here would replace
    # kwok's defaults (parallelism, leases) with zeros; the cidr and node IP
    # are passed as flags instead.
    docs: list[str] = []
    # The stages kwokctl uses by default: nodes go Ready at once and keep a
    # lease; pods go Running at once, complete, and are deleted when asked.
    for rel in STAGES:
        docs.append((stages_dir / rel).read_text())
    return "\n---\n".join(d.strip() for d in docs) + "\n"


def gpu_node(name: str, gpus: int = 8, product: str = "NVIDIA-H100-80GB-HBM3") -> dict[str, Any]:
    """A fake GPU node that kwok manages, labelled and tainted as the NVIDIA stack does."""
    resources = {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": product,
                "nvidia.com/gpu.count": str(gpus),
            },
        },
        # The taint the NVIDIA GPU operator puts on GPU nodes. No kwok taint: the
        # test bed has no real nodes, and LLMLoom's pods must land here exactly
        # as they would on a real cluster, without a test-only toleration.
        "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
        "status": {"capacity": resources, "allocatable": dict(resources)},
    }


def cpu_node(name: str) -> dict[str, Any]:
    """A fake node without GPUs, for the pods that need none (external flavors' workers)."""
    node = gpu_node(name, gpus=0)
    labels = node["metadata"]["labels"]
    for key in [k for k in labels if k.startswith("nvidia.com/")]:
        del labels[key]
    del (
        node["status"]["capacity"]["nvidia.com/gpu"],
        node["status"]["allocatable"]["nvidia.com/gpu"],
    )
    node["spec"]["taints"] = []
    return node


class Cluster:
    """A running control plane. ``stop()`` ends every process and removes its state."""

    def __init__(self, root: Path | None = None, gpu_nodes: int = 2, cpu_nodes: int = 1) -> None:
        self.bin = testbed_bin()
        base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
        self.root = root or Path(tempfile.mkdtemp(prefix="llmloom-cluster-", dir=base))
        self.logs = self.root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []
        self.pki = self.root / "pki"
        try:
            self._start(gpu_nodes, cpu_nodes)
        except BaseException:
            print(self.dump_logs())
            self.stop()
            raise

    # ---------------------------------------------------------------- start
    def _proc(self, name: str, *args: str) -> Proc:
        proc = Proc(name, [str(self.bin / name), *args], self.logs)
        self.procs.append(proc)
        return proc

    def _start(self, gpu_nodes: int, cpu_nodes: int) -> None:
        make_pki(self.pki)
        p = self.pki
        client, peer, secure = free_port(), free_port(), free_port()
        etcd = self._proc(
            "etcd",
            "--name=llmloom",
            f"--data-dir={self.root / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{client}",
            f"--advertise-client-urls=http://127.0.0.1:{client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=llmloom=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync",
            "--log-level=warn",
            "--quota-backend-bytes=4294967296",
        )
        wait_for(
            lambda: (
                etcd.check_alive() and httpx.get(f"http://127.0.0.1:{client}/health").is_success
            ),
            30,
            "etcd",
        )
        self.server = f"https://127.0.0.1:{secure}"
        apiserver = self._proc(
            "kube-apiserver",
            f"--etcd-servers=http://127.0.0.1:{client}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={secure}",
            f"--cert-dir={p}",
            f"--tls-cert-file={p / 'apiserver.crt'}",
            f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--endpoint-reconciler-type=none",
            "--disable-admission-plugins=ServiceAccount",
            "--enable-priority-and-fairness=false",
        )
        self.kubeconfig = self.root / "kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig(self.server, p)))
        ctx = ssl.create_default_context(cafile=str(p / "ca.crt"))
        ctx.load_cert_chain(str(p / "admin.crt"), str(p / "admin.key"))
        self.http = httpx.Client(base_url=self.server, verify=ctx, timeout=10)

        def ready() -> bool:
            apiserver.check_alive()
            return self.http.get("/readyz").text == "ok"

        wait_for(ready, 90, "kube-apiserver /readyz")
        kc = f"--kubeconfig={self.kubeconfig}"
        self._proc(
            "kube-controller-manager",
            kc,
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            f"--service-account-private-key-file={p / 'sa.key'}",
            f"--root-ca-file={p / 'ca.crt'}",
            f"--cluster-signing-cert-file={p / 'ca.crt'}",
            f"--cluster-signing-key-file={p / 'ca.key'}",
            "--controllers=*,-nodeipam",
            "--concurrent-deployment-syncs=10",
            "--concurrent-replicaset-syncs=10",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
        )
        self._proc(
            "kube-scheduler",
            kc,
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
        )
        config = self.root / "kwok.yaml"
        config.write_text(kwok_config(self.bin / "kwok-stages"))
        self._proc(
            "kwok",
            kc,
            f"--config={config}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--cidr=10.244.0.0/16",
            "--node-ip=127.0.0.1",
            f"--server-address=127.0.0.1:{free_port()}",
        )
        for i in range(gpu_nodes):
            self.apply(gpu_node(f"gpu-node-{i}"))
        for i in range(cpu_nodes):
            self.apply(cpu_node(f"cpu-node-{i}"))
        if gpu_nodes or cpu_nodes:
            wait_for(self._nodes_ready, 60, "the fake GPU nodes to be Ready")
        # The namespace "default" and its service account appear once the
        # controllers run; tests and users expect both.
        wait_for(
            lambda: self.http.get("/api/v1/namespaces/default/serviceaccounts/default").is_success,
            60,
            "the default service account",
        )

    def _nodes_ready(self) -> bool:
        nodes = self.http.get("/api/v1/nodes").json()["items"]

        def ready(n: dict[str, Any]) -> bool:
            conds = n.get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

        return bool(nodes) and all(ready(n) for n in nodes)

    # ---------------------------------------------------------------- use
    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the test bed's kubectl against this cluster."""
        res = subprocess.run(
            [str(self.bin / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            text=True,
            capture_output=True,
        )
        if check and res.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {res.stderr.strip()}")
        return res

    def apply(self, *objs: dict[str, Any]) -> None:
        """kubectl apply (server-side) of in-memory manifests."""
        text = "\n---\n".join(yaml.safe_dump(o) for o in objs)
        res = self.kubectl(
            "apply",
            "--server-side",
            "--field-manager=llmloom-testbed",
            "-f",
            "-",
            input=text,
            check=False,
        )
        if res.returncode != 0:
            raise RuntimeError(f"kubectl apply failed: {res.stderr}")

    def service_account_kubeconfig(self, namespace: str, name: str, hours: int = 2) -> Path:
        """A kubeconfig that acts as a ServiceAccount (a TokenRequest token), to run a
        component with exactly the permissions its role grants."""
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": hours * 3600},
        }
        resp = self.http.post(
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", json=request
        )
        resp.raise_for_status()
        user = {"token": resp.json()["status"]["token"]}
        path = self.root / f"kubeconfig-{namespace}-{name}"
        path.write_text(yaml.safe_dump(kubeconfig(self.server, self.pki, user)))
        return path

    def env(self) -> dict[str, str]:
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin}:{os.environ.get('PATH', '')}",
        }

    def dump_logs(self, lines: int = 60) -> str:
        """The last lines of every control-plane process, for a failed test's report."""
        return "\n".join(
            f"===== {p.name} ({'running' if p.alive() else 'exited'})\n{p.tail(lines)}"
            for p in self.procs
        )

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        if hasattr(self, "http"):
            self.http.close()
        shutil.rmtree(self.root, ignore_errors=True)


def main() -> None:
    """Run a control plane in the foreground until Ctrl-C (``hack/cluster.sh``)."""
    import signal
    import threading

    nodes = int(os.environ.get("LLMLOOM_GPU_NODES", "2"))
    cluster = Cluster(gpu_nodes=nodes)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"control plane at {cluster.server} with {nodes} fake GPU nodes")
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    print(f"export PATH={cluster.bin}:$PATH   # kubectl of the same version")
    print("Ctrl-C stops it and removes its state.", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
