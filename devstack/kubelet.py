"""Runs the worker container of every flavor's pod as a local process.

The dev stack's nodes are kwok's: pods scheduled there are marked Running but
run nothing. So that a Flavor applied to a running ``make dev`` (in any
namespace, before or after it started) is served as a cluster would serve it,
this plays the kubelet for one container: it watches the pods that the
operator makes for flavors and runs each pod's ``worker`` container here, with
the pod's arguments, as the pod's ServiceAccount, and stops it when the pod
goes (scaled down, flavor deleted).

It runs nothing else: only a container named ``worker`` whose arguments are
``worker --queue <the pod's own namespace>/<flavor>`` (or, in the release's
namespace, ``worker --queue <shared model>@*``), with the few settings
the operator gives it. A model server beside it (a flavor with ``spec.deploy``:
vLLM or Ollama on GPUs) cannot run here; the console says so, and that worker
waits for its server as it would on a node where the server does not start.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

Obj = dict[str, Any]
MANAGED = "app.kubernetes.io/managed-by=llmloom-operator"
"""The label of every pod the operator makes for a flavor or a shared model."""
RELEASE_NAMESPACE = "llmloom-system"
"""Where shared models' workers run (``--queue <name>@*``)."""
PASSED_ENV = (
    "LLMLOOM_ENDPOINT",
    "LLMLOOM_WAIT_FOR_MODEL",
    "LLMLOOM_LOG_LEVEL",
    "LLMLOOM_DOCUMENT_ALLOWED_NETWORKS",
)
"""The worker container's settings that mean the same here; the Redis URL, the
kubeconfig and the ready file are the dev stack's own."""
RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class LocalWorker:
    """What to run for one pod's worker container."""

    namespace: str
    pod: str
    service_account: str
    args: tuple[str, ...]
    """The container's arguments (``worker --queue ns/flavor``)."""
    env: tuple[tuple[str, str], ...] = ()
    model_server: str | None = None
    """The image of the model server beside the worker in its pod, if any."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.pod}"

    @property
    def queues(self) -> list[str]:
        return _queues(self.args)


def _queues(args: tuple[str, ...]) -> list[str]:
    return [a for prev, a in itertools.pairwise(args) if prev == "--queue"]


def local_worker(pod: Obj, release_namespace: str = RELEASE_NAMESPACE) -> LocalWorker | None:
    """The worker to run for a pod; None for a pod that runs none here (not scheduled,
    being deleted, no worker container, or one this stack would not run)."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    if meta.get("deletionTimestamp") or not spec.get("nodeName"):
        return None
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    containers = spec.get("containers") or []
    worker = next((c for c in containers if c.get("name") == "worker"), None)
    if worker is None:
        return None
    args = tuple(str(a) for a in worker.get("args") or [])
    if not args or args[0] != "worker" or worker.get("command"):
        return None
    queues = _queues(args)
    if not queues or len(args) != 1 + 2 * len(queues):
        return None

    def own(queue: str) -> bool:
        if queue.endswith("@*"):  # a shared model's: the release's workers only
            return namespace == release_namespace and "/" not in queue
        return queue.startswith(f"{namespace}/")

    if not all(own(q) for q in queues):
        return None  # a worker serves its own namespace's flavors only
    env = tuple(
        (e["name"], str(e.get("value", "")))
        for e in worker.get("env") or []
        if e.get("name") in PASSED_ENV and "value" in e
    )
    beside = next((c.get("image") for c in containers if c.get("name") != "worker"), None)
    return LocalWorker(
        namespace=namespace,
        pod=name,
        service_account=spec.get("serviceAccountName") or "default",
        args=args,
        env=env,
        model_server=beside,
    )


@dataclass
class PodWatch:
    """The flavors' pods, kept current by a list and a watch in a thread.

    ``workers()`` is what should run now; the supervisor loop starts and stops
    processes to match it.
    """

    http: httpx.Client
    say: Callable[[str], None]
    _pods: dict[str, LocalWorker] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="devstack-kubelet", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def workers(self) -> dict[str, LocalWorker]:
        with self._lock:
            return dict(self._pods)

    def _set(self, pod: Obj, deleted: bool = False) -> None:
        meta = pod.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        wanted = None if deleted else local_worker(pod)
        with self._lock:
            if wanted is None:
                self._pods.pop(key, None)
            else:
                self._pods[key] = wanted

    def _run(self) -> None:
        path = "/api/v1/pods"
        params = {"labelSelector": MANAGED}
        while not self._stop.is_set():
            try:
                listed = self.http.get(path, params=params)
                listed.raise_for_status()
                body = listed.json()
                with self._lock:
                    self._pods.clear()
                for pod in body.get("items", []):
                    self._set(pod)
                version = body["metadata"]["resourceVersion"]
                watch = {**params, "watch": "1", "resourceVersion": version}
                watch["timeoutSeconds"] = "300"
                with self.http.stream("GET", path, params=watch, timeout=330) as resp:
                    resp.raise_for_status()
                    for line in resp.iter_lines():
                        if self._stop.is_set():
                            return
                        if not line:
                            continue
                        event = json.loads(line)
                        if event.get("type") == "ERROR":
                            break  # too old a version: list again
                        if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                            self._set(event["object"], deleted=event["type"] == "DELETED")
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                if not self._stop.is_set():
                    self.say(f"watching the flavors' pods failed ({exc!r}); trying again")
                self._stop.wait(RETRY_SECONDS)
