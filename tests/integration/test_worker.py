"""The worker process: many jobs in flight, an RQ citizen, and shutdown that loses nothing."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable

import httpx
from redis import Redis
from rq import Worker
from rq.registry import FinishedJobRegistry, StartedJobRegistry

from devstack.cluster import REPO
from devstack.faultserver import FaultServer
from devstack.procs import Proc, wait_for
from devstack.redisserver import RedisServer
from llmloom import queues

from .conftest import RUNNING_AT_ONCE, Api, Tenant
from .test_documents import document_job, paragraphs
from .test_jobs import apply, echo_flavor, job, status


def test_one_worker_runs_its_flavors_concurrency_at_once(
    tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc], api: Api
) -> None:
    # The server answers once eight calls are in flight together: a worker running fewer
    # at once shows a lower peak.
    key = f"wide-{tenant.namespace}"
    slow = echo_flavor(tenant, fault_server, "slow", f"together/{key}/8")
    names = [f"wide-{i}" for i in range(8)]
    apply(tenant, *(job(n, slow) for n in names))
    wait_for(lambda: all(status(tenant, n).get("state") == "Queued" for n in names), 30, "queued")
    start_worker(f"{tenant.namespace}/{slow}", env={"LLMLOOM_CONCURRENCY": "8"})
    for n in names:
        tenant.kubectl("wait", f"llmjob/{n}", "--for=condition=Succeeded", "--timeout=60s")
    assert httpx.get(f"{fault_server.base}/calls/{key}").json() == {"calls": 8, "peak": 8}
    assert all(status(tenant, n)["attempts"] == 1 for n in names)


def test_rq_shows_the_worker_and_each_running_job(
    tenant: Tenant,
    fault_server: FaultServer,
    start_worker: Callable[..., Proc],
    redis_server: RedisServer,
    api: Api,
) -> None:
    slow = echo_flavor(tenant, fault_server, "slow", "delay/4")
    names = [f"seen-{i}" for i in range(3)]
    apply(tenant, *(job(n, slow) for n in names))
    start_worker(f"{tenant.namespace}/{slow}", env={"LLMLOOM_CONCURRENCY": "4"})
    redis = Redis.from_url(redis_server.url)
    q = queues.queue(queues.queue_name(tenant.namespace, slow), redis)
    started = StartedJobRegistry(queue=q)
    wait_for(lambda: len(started.get_job_ids()) == 3, 30, "three jobs started at once")
    workers = Worker.all(queue=q)
    assert len(workers) == 1 and workers[0].get_state() == "busy"
    # What an operator of RQ would look at: `rq info` lists the queue and the busy worker.
    info = subprocess.run(
        [str(REPO / ".venv/bin/rq"), "info", "--url", redis_server.url, q.name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert q.name in info and "busy" in info
    for n in names:
        tenant.kubectl("wait", f"llmjob/{n}", "--for=condition=Succeeded", "--timeout=60s")
    finished = FinishedJobRegistry(queue=q)
    wait_for(lambda: len(finished.get_job_ids()) == 3, 10, "RQ to record three finished jobs")
    assert started.get_job_ids() == []
    wait_for(lambda: Worker.all(queue=q)[0].get_state() == "idle", 10, "the worker to be idle")
    assert Worker.all(queue=q)[0].successful_job_count == 3


def test_sigterm_lets_running_jobs_finish(
    tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc], api: Api
) -> None:
    slow = echo_flavor(tenant, fault_server, "slow", "delay/3")
    names = [f"finish-{i}" for i in range(3)]
    worker = start_worker(
        f"{tenant.namespace}/{slow}", env={"LLMLOOM_CONCURRENCY": "4", **RUNNING_AT_ONCE}
    )
    apply(tenant, *(job(n, slow) for n in names))
    wait_for(lambda: all(status(tenant, n).get("state") == "Running" for n in names), 30, "running")
    worker.popen.send_signal(signal.SIGTERM)
    assert worker.popen.wait(15) == 0
    for n in names:
        st = status(tenant, n)
        assert st["state"] == "Succeeded" and st["attempts"] == 1


def test_sigterm_hands_unfinished_jobs_to_another_worker(
    tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc], api: Api
) -> None:
    slow = echo_flavor(tenant, fault_server, "slow", "delay/6")
    names = [f"handed-{i}" for i in range(3)]
    leaving = start_worker(
        f"{tenant.namespace}/{slow}",
        env={"LLMLOOM_CONCURRENCY": "4", "LLMLOOM_SHUTDOWN_GRACE_SECONDS": "1"},
    )
    apply(tenant, *(job(n, slow) for n in names))
    wait_for(lambda: all(status(tenant, n).get("state") == "Running" for n in names), 30, "running")
    leaving.popen.send_signal(signal.SIGTERM)
    assert leaving.popen.wait(15) == 0
    assert all(status(tenant, n)["state"] != "Succeeded" for n in names)
    start_worker(f"{tenant.namespace}/{slow}", env={"LLMLOOM_CONCURRENCY": "4"})
    for n in names:
        tenant.kubectl("wait", f"llmjob/{n}", "--for=condition=Succeeded", "--timeout=60s")
        assert status(tenant, n)["attempts"] == 2  # handed back, run once more


def test_a_killed_worker_loses_none_of_its_jobs(
    tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc], api: Api
) -> None:
    slow = echo_flavor(tenant, fault_server, "slow", "delay/3")
    names = [f"orphan-{i}" for i in range(4)]
    victim = start_worker(
        f"{tenant.namespace}/{slow}", env={"LLMLOOM_CONCURRENCY": "4", **RUNNING_AT_ONCE}
    )
    apply(tenant, *(job(n, slow) for n in names))
    wait_for(lambda: all(status(tenant, n).get("state") == "Running" for n in names), 30, "running")
    victim.kill()  # SIGKILL with four calls in flight
    start_worker(f"{tenant.namespace}/{slow}", env={"LLMLOOM_CONCURRENCY": "4"})
    for n in names:
        tenant.kubectl("wait", f"llmjob/{n}", "--for=condition=Succeeded", "--timeout=60s")
        assert status(tenant, n)["attempts"] == 2
        described = tenant.kubectl("describe", "llmjob", n)
        assert "Started" in described and f"attempt 2 on flavor {slow}" in described


def test_calls_to_a_flavor_stay_within_its_concurrency_across_document_jobs(
    tenant: Tenant, fault_server: FaultServer, start_worker: Callable[..., Proc], api: Api
) -> None:
    # Two map-reduce jobs of 6 chunks each on a flavor serving 2 calls at once: the worker
    # runs both jobs, but never more than 2 calls in flight against the server.
    paced = echo_flavor(tenant, fault_server, "paced", "delay/0.3")
    tenant.kubectl("patch", "flavor", paced, "--type=merge", "-p", '{"spec":{"concurrency":2}}')
    prompt = f"Summarise for {tenant.namespace}."
    docs = [
        document_job(
            f"doc-{i}",
            paced,
            {"text": paragraphs(6)},
            prompt=prompt,
            strategy="mapReduce",
            chunking={"createNewTurnAfter": 150},
        )
        for i in range(2)
    ]
    apply(tenant, *docs)
    start_worker(f"{tenant.namespace}/{paced}")
    for i in range(2):
        tenant.kubectl("wait", f"llmjob/doc-{i}", "--for=condition=Succeeded", "--timeout=60s")
    calls = [
        (start, end)
        for answer, start, end in httpx.get(f"{fault_server.base}/timeline").json()
        if answer == f"echo: {prompt}"
    ]
    assert len(calls) == 12  # six maps per job
    edges = sorted([(s, 1) for s, _ in calls] + [(e, -1) for _, e in calls])
    in_flight = peak = 0
    for _, step in edges:
        in_flight += step
        peak = max(peak, in_flight)
    assert peak == 2
