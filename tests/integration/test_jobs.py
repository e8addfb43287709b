"""The job lifecycle as kubectl shows it: cancel, suspend, deadlines, TTL,
priority, versions, and recovery when Redis or a worker is lost."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import yaml
from redis import Redis

from devstack.faultserver import FaultServer
from devstack.inprocess import OperatorThread
from devstack.procs import Proc, wait_for
from devstack.redisserver import RedisServer
from llmloom import queues

from .conftest import RUNNING_AT_ONCE, Api, Tenant, flavor_manifest


def job(name: str, flavor: str, text: str = "hi", **spec: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": text}]
    return {
        "apiVersion": "llmloom.io/v1alpha1",
        "kind": "LLMJob",
        "metadata": {"name": name},
        "spec": {"flavor": flavor, "messages": messages, **spec},
    }


def apply(tenant: Tenant, *objs: dict[str, Any]) -> None:
    tenant.kubectl("apply", "-f", "-", input="\n---\n".join(yaml.safe_dump(o) for o in objs))


def status(tenant: Tenant, name: str) -> dict[str, Any]:
    st: dict[str, Any] = tenant.get("llmjob", name).get("status", {})
    return st


def condition(tenant: Tenant, name: str, ctype: str) -> dict[str, Any]:
    conds = status(tenant, name).get("conditions", [])
    found: dict[str, Any] = next((c for c in conds if c["type"] == ctype), {})
    return found


def echo_flavor(
    tenant: Tenant, faults: FaultServer, name: str = "echo", behaviour: str = ""
) -> str:
    apply(tenant, flavor_manifest(name, faults.endpoint(behaviour), model="echo"))
    return name


def test_deleting_a_running_job_stops_it(
    tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc], api: Api
) -> None:
    slow = echo_flavor(tenant, fault_server, "slow", "delay/30")
    worker = start_worker(f"{tenant.namespace}/{slow}")
    apply(tenant, job("long", slow))
    wait_for(lambda: status(tenant, "long").get("state") == "Running", 30, "the job to run")
    tenant.kubectl("delete", "llmjob", "long")
    # The worker drops the 30 s call at once and is free for the next job.
    wait_for(lambda: "stopped: deleted" in worker.tail(), 10, "the worker to stop the deleted job")


def test_suspend_holds_a_job_and_resuming_runs_it(
    tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc], api: Api
) -> None:
    echo = echo_flavor(tenant, fault_server)
    start_worker(f"{tenant.namespace}/{echo}")
    apply(tenant, job("held", echo, suspend=True))
    wait_for(lambda: status(tenant, "held").get("state") == "Suspended", 30, "Suspended")
    time.sleep(1.5)
    assert status(tenant, "held")["state"] == "Suspended"  # the worker did not run it
    tenant.kubectl("patch", "llmjob", "held", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    tenant.kubectl("wait", "llmjob/held", "--for=condition=Succeeded", "--timeout=30s")
    assert condition(tenant, "held", "Suspended")["status"] == "False"


def test_deadline_fails_a_job_that_waits_too_long(
    tenant: Tenant, fault_server: FaultServer, api: Api
) -> None:
    echo = echo_flavor(tenant, fault_server)  # no worker: the job waits in the queue
    apply(tenant, job("hurry", echo, activeDeadlineSeconds=2))
    tenant.kubectl("wait", "llmjob/hurry", "--for=condition=Failed", "--timeout=30s")
    failed = condition(tenant, "hurry", "Failed")
    assert failed["reason"] == "DeadlineExceeded"
    assert "activeDeadlineSeconds=2" in failed["message"]


def test_deadline_stops_a_running_job(
    tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc], api: Api
) -> None:
    slow = echo_flavor(tenant, fault_server, "slow", "delay/30")
    start_worker(f"{tenant.namespace}/{slow}")
    apply(tenant, job("bounded", slow, activeDeadlineSeconds=3))
    tenant.kubectl("wait", "llmjob/bounded", "--for=condition=Failed", "--timeout=20s")
    assert condition(tenant, "bounded", "Failed")["reason"] == "DeadlineExceeded"


def test_finished_jobs_and_their_results_expire_after_their_ttl(
    tenant: Tenant,
    fault_server: FaultServer,
    start_worker: Callable[..., Proc],
    redis_server: RedisServer,
    api: Api,
) -> None:
    echo = echo_flavor(tenant, fault_server)
    start_worker(f"{tenant.namespace}/{echo}")
    apply(tenant, job("brief", echo, ttlSecondsAfterFinished=2))
    tenant.kubectl("wait", "llmjob/brief", "--for=condition=Succeeded", "--timeout=30s")
    key = status(tenant, "brief")["result"]["key"]
    redis = Redis.from_url(redis_server.url)
    assert redis.exists(key)
    tenant.kubectl("wait", "llmjob/brief", "--for=delete", "--timeout=30s")
    wait_for(lambda: not redis.exists(key), 10, "the stored result to be deleted")


def test_priority_orders_the_queue(
    tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc], api: Api
) -> None:
    paced = echo_flavor(tenant, fault_server, "paced", "delay/1")
    apply(tenant, job("normal-1", paced), job("normal-2", paced))
    apply(tenant, job("urgent", paced, priority=10), job("later", paced, priority=-5))
    names = ("normal-1", "normal-2", "urgent", "later")
    wait_for(lambda: all(status(tenant, n).get("state") == "Queued" for n in names), 30, "queued")
    # One slot: the worker takes the jobs one after another, in priority order.
    start_worker(f"{tenant.namespace}/{paced}", env={"LLMLOOM_CONCURRENCY": "1"})
    for name in ("normal-1", "normal-2", "urgent", "later"):
        tenant.kubectl("wait", f"llmjob/{name}", "--for=condition=Succeeded", "--timeout=60s")
    order = sorted(
        ("normal-1", "normal-2", "urgent", "later"),
        key=lambda n: status(tenant, n)["completionTime"],
    )
    assert order[0] == "urgent" and order[-1] == "later"


def test_editing_a_finished_job_produces_a_new_result_version(
    tenant: Tenant,
    fault_server: FaultServer,
    start_worker: Callable[..., Proc],
    redis_server: RedisServer,
    api: Api,
) -> None:
    echo = echo_flavor(tenant, fault_server)
    start_worker(f"{tenant.namespace}/{echo}")
    apply(tenant, job("draft", echo, "first"))
    tenant.kubectl("wait", "llmjob/draft", "--for=condition=Succeeded", "--timeout=30s")
    v1 = status(tenant, "draft")["result"]
    apply(tenant, job("draft", echo, "second"))
    wait_for(lambda: status(tenant, "draft").get("result", {}).get("version") == 2, 30, "version 2")
    st = status(tenant, "draft")
    assert st["state"] == "Succeeded" and st["observedGeneration"] == 2
    redis = Redis.from_url(redis_server.url)

    def answer(key: str) -> str:
        stored = redis.get(key)
        assert isinstance(stored, bytes)
        text: str = json.loads(stored)["response"]["choices"][0]["message"]["content"]
        return text

    assert answer(st["result"]["key"]) == "echo: second"
    assert answer(v1["key"]) == "echo: first"  # the old version stays readable


def test_jobs_survive_redis_losing_its_data(
    tenant: Tenant,
    fault_server: FaultServer,
    start_worker: Callable[..., Proc],
    redis_server: RedisServer,
    api: Api,
) -> None:
    echo = echo_flavor(tenant, fault_server)
    names = [f"survivor-{i}" for i in range(5)]
    apply(tenant, *(job(n, echo) for n in names))
    wait_for(lambda: all(status(tenant, n).get("state") == "Queued" for n in names), 30, "queued")
    Redis.from_url(redis_server.url).flushall()
    start_worker(f"{tenant.namespace}/{echo}")
    for n in names:
        tenant.kubectl("wait", f"llmjob/{n}", "--for=condition=Succeeded", "--timeout=60s")
        assert status(tenant, n)["attempts"] == 1  # each ran exactly once


def test_a_job_whose_worker_dies_is_run_again(
    tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc], api: Api
) -> None:
    slow = echo_flavor(tenant, fault_server, "slow", "delay/3")
    victim = start_worker(f"{tenant.namespace}/{slow}", env=RUNNING_AT_ONCE)
    apply(tenant, job("orphaned", slow))
    wait_for(lambda: status(tenant, "orphaned").get("state") == "Running", 30, "the job to run")
    victim.kill()  # SIGKILL mid-call
    start_worker(f"{tenant.namespace}/{slow}")
    tenant.kubectl("wait", "llmjob/orphaned", "--for=condition=Succeeded", "--timeout=60s")
    st = status(tenant, "orphaned")
    assert st["attempts"] == 2


def test_an_operator_restart_does_nothing_twice(
    tenant: Tenant,
    fault_server: FaultServer,
    start_worker: Callable[..., Proc],
    redis_server: RedisServer,
    operator: OperatorThread,
    api: Api,
) -> None:
    echo = echo_flavor(tenant, fault_server)
    names = [f"steady-{i}" for i in range(3)]
    apply(tenant, *(job(n, echo) for n in names))
    wait_for(lambda: all(status(tenant, n).get("state") == "Queued" for n in names), 30, "queued")
    operator.restart()
    time.sleep(3)  # the new operator resumes every job and resyncs a few times
    depth = queues.depth(Redis.from_url(redis_server.url), tenant.namespace, echo)
    assert depth.pending == 3  # nothing enqueued twice
    start_worker(f"{tenant.namespace}/{echo}")
    for n in names:
        tenant.kubectl("wait", f"llmjob/{n}", "--for=condition=Succeeded", "--timeout=30s")
        assert status(tenant, n)["attempts"] == 1
        accepted = tenant.kubectl(
            "get",
            "events",
            "--field-selector",
            f"involvedObject.name={n},reason=Accepted",
            "-o",
            "name",
        )
        assert len(accepted.split()) == 1  # one Accepted event per job, not one per operator
