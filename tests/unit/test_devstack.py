"""The dev stack's own logic: which pods get a local worker, and how crashed processes
are started again (with a clock of the test's own)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devstack.kubelet import LocalWorker, local_worker
from devstack.supervisor import Supervisor, backoff


def pod(**spec: Any) -> dict[str, Any]:
    worker = {
        "name": "worker",
        "image": "llmloom/worker:0.1.0",
        "args": ["worker", "--queue", "team-a/qwen"],
        "env": [
            {"name": "LLMLOOM_REDIS_URL", "value": "redis://in-cluster:6379/0"},
            {"name": "LLMLOOM_ENDPOINT", "value": "http://127.0.0.1:8000/v1"},
            {"name": "LLMLOOM_WAIT_FOR_MODEL", "value": "true"},
            {"name": "OTHER", "value": "x"},
        ],
    }
    return {
        "metadata": {"name": "qwen-abc", "namespace": "team-a"},
        "spec": {
            "nodeName": "gpu-node-0",
            "serviceAccountName": "llmloom-worker",
            "containers": [{"name": "model-server", "image": "vllm/vllm-openai:v0.11.0"}, worker],
            **spec,
        },
    }


def test_a_flavors_pod_runs_its_worker_with_only_the_settings_that_mean_the_same_here() -> None:
    worker = local_worker(pod())
    assert worker == LocalWorker(
        namespace="team-a",
        pod="qwen-abc",
        service_account="llmloom-worker",
        args=("worker", "--queue", "team-a/qwen"),
        env=(("LLMLOOM_ENDPOINT", "http://127.0.0.1:8000/v1"), ("LLMLOOM_WAIT_FOR_MODEL", "true")),
        model_server="vllm/vllm-openai:v0.11.0",
    )
    assert worker.key == "team-a/qwen-abc" and worker.queues == ["team-a/qwen"]


@pytest.mark.parametrize(
    "change",
    [
        {"nodeName": None},  # not scheduled (no GPU free)
        {"containers": [{"name": "model-server", "image": "vllm"}]},  # no worker
        {"containers": [{"name": "worker", "args": ["worker", "--queue", "team-b/x"]}]},
        {"containers": [{"name": "worker", "args": ["sh", "-c", "curl evil"]}]},
        {"containers": [{"name": "worker", "command": ["sh"], "args": ["worker"]}]},
        {"containers": [{"name": "worker", "args": ["worker", "--queue", "team-a/x", "--burst"]}]},
    ],
)
def test_nothing_else_runs(change: dict[str, Any]) -> None:
    assert local_worker(pod(**change)) is None


def test_a_shared_models_worker_runs_in_the_release_namespace_only() -> None:
    shared = pod(containers=[{"name": "worker", "args": ["worker", "--queue", "llama@*"]}])
    shared["metadata"]["namespace"] = "llmloom-system"
    assert local_worker(shared) is not None
    shared["metadata"]["namespace"] = "team-a"  # a tenant's pod claiming a shared queue
    assert local_worker(shared) is None


def test_a_pod_being_deleted_runs_nothing() -> None:
    deleting = pod()
    deleting["metadata"]["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    assert local_worker(deleting) is None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeProc:
    """A process that has exited (``exit``) or runs; restarting makes it run."""

    def __init__(self, name: str) -> None:
        self.name, self.log_path = name, Path(f"/logs/{name}.log")
        self.code: int | None = None

    def alive(self) -> bool:
        return self.code is None

    @property
    def returncode(self) -> int | None:
        return self.code

    def exit(self, code: int) -> None:
        self.code = code

    def restart(self) -> None:
        self.code = None


def test_backoff_doubles_up_to_its_ceiling() -> None:
    assert [backoff(n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]


def test_a_crashed_process_is_restarted_after_its_backoff_and_the_console_says_so() -> None:
    clock, said = Clock(), list[str]()
    supervisor = Supervisor(said.append, clock)
    proc = supervisor.watch(FakeProc("crashy"))
    proc.exit(3)
    supervisor.tick()
    assert said == [f"crashy exited (exit code 3); restarting in 1s. Its log: {proc.log_path}"]
    supervisor.tick()  # not yet due
    assert len(said) == 1 and supervisor.restarts("crashy") == 0
    clock.now = 1.0
    supervisor.tick()
    assert said[-1] == "crashy restarted (restart 1)" and supervisor.restarts("crashy") == 1
    assert proc.alive()
    proc.exit(-9)
    supervisor.tick()
    assert said[-1].startswith("crashy exited (killed by signal 9); restarting in 2s")
    clock.now = 100.0
    supervisor.tick()  # due: started again; it exits at once again, and backs off further
    proc.exit(1)
    supervisor.tick()
    assert "restarting in 4s" in said[-1]


def test_a_process_that_ran_a_while_starts_its_backoff_again() -> None:
    clock, said = Clock(), list[str]()
    supervisor = Supervisor(said.append, clock)
    proc = supervisor.watch(FakeProc("steady"))
    proc.exit(1)
    supervisor.tick()
    clock.now = 1.0
    supervisor.tick()  # restart 1
    proc.exit(1)
    clock.now = 70.0  # it had run for more than a minute when it exited
    supervisor.tick()
    assert "restarting in 1s" in said[-1]


def test_a_forgotten_process_is_left_alone() -> None:
    said: list[str] = []
    supervisor = Supervisor(said.append, Clock())
    proc = supervisor.watch(FakeProc("done"))
    supervisor.forget(proc)
    proc.exit(0)
    supervisor.tick()
    assert said == []
