"""A worker process that keeps many jobs in flight, as an RQ worker.

RQ's own workers run one job at a time per process (a fork per job, or in
process with ``SimpleWorker``); a worker beside a model server must keep up to
the flavor's ``concurrency`` requests in flight. Here three threads share the
work:

- the *taker* takes a job off the queues (BLPOP over the priority bands, as
  RQ's workers do) whenever a slot is free;
- the *main* thread keeps RQ's books as RQ's worker writes them: an Execution
  in the StartedJobRegistry and status ``started`` when a job starts,
  heartbeats while it runs, the Finished or Failed registry, results and
  worker statistics when it ends; so ``rq info`` and RQ's dashboards show the
  worker and every running job;
- the *event loop* (``tasks.Context``) runs the jobs themselves, with pooled
  connections to the model server, Redis and the API server.

A worker of a shared model (a ClusterFlavor) takes from every tenant's queues
of it, tenants in weighted fair order (``TenantQueues``): one tenant's flood
waits behind another's trickle, not the other way round.

SIGTERM or SIGINT stops taking jobs and gives the running ones
``shutdown_grace_seconds`` to finish; the rest are cancelled and put back at
the front of their queue for another worker (a second signal does that at
once). A worker killed with SIGKILL leaves its jobs started but no longer
leased: the operator enqueues them again once the leases lapse.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

from redis import Redis
from rq import Queue, Worker
from rq.exceptions import DequeueTimeout, NoSuchJobError
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.utils import now
from rq.worker import WorkerStatus

from llmloom import queues, redisclients, sharing
from llmloom.sharing import FairOrder
from llmloom.worker.tasks import Context

log = logging.getLogger(__name__)
TAKE_TIMEOUT_SECONDS = 1
"""How long one BLPOP waits; the taker checks for a stop request in between."""
RESULT_TTL_SECONDS = 3600
TENANTS_REFRESH_SECONDS = 1.0
"""How often a shared model's worker looks for tenants' new queues (a new tenant's
first job waits at most this long to be seen)."""


class SharedTerms(Protocol):
    """What a shared model's worker needs of its ClusterFlavor, as read lately."""

    def weight(self, tenant: str) -> int: ...

    def reserve(self, slots: int) -> int: ...


class TenantQueues:
    """The queues of a shared model, one set of priority bands per tenant, in the order
    the next take should try them: tenants in weighted fair order, each tenant's bands
    highest first, and only tenants with nothing running once just the reserved slots
    are left (``sharing.eligible``). One BLPOP over them takes from the first that has
    work."""

    def __init__(
        self,
        redis: Redis,
        flavor: str,
        terms: SharedTerms,
        slots: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis, self.flavor, self.terms, self.clock = redis, flavor, terms, clock
        self.slots = slots
        self.fair = FairOrder()
        self.running: dict[str, int] = {}
        """Jobs running per tenant (the taker adds, the main thread removes)."""
        self.last_taken: dict[str, float] = {}
        """When each tenant's last job was taken (``clock``)."""
        self._lock = threading.Lock()
        self.restricted = False
        """The last order held only tenants with nothing running (reserved slots left)."""
        self.tenants: list[str] = []
        self._queues: dict[str, list[Queue]] = {}
        self._tenant_of: dict[str, str] = {}
        self._seen_at: float | None = None

    def _refresh(self) -> None:
        now = self.clock()
        if self._seen_at is not None and now - self._seen_at < TENANTS_REFRESH_SECONDS:
            return
        self._seen_at = now
        self.tenants = queues.shared_tenants(self.redis, self.flavor)
        for tenant in self.tenants:
            if tenant not in self._queues:
                base = queues.queue_name(tenant, self.flavor, shared=True)
                bands = [queues.queue(n, self.redis) for n in queues.queue_names(base)]
                self._queues[tenant] = bands
                self._tenant_of.update({q.name: tenant for q in bands})

    def order(self) -> list[Queue]:
        """The queues of the tenants that may take a slot now, in the order to try them."""
        self._refresh()
        fair = self.fair.order(self.tenants)
        with self._lock:
            running = dict(self.running)
        now = self.clock()
        active = {t for t, at in self.last_taken.items() if now - at < sharing.ACTIVE_SECONDS}
        reserve = self.terms.reserve(self.slots)
        allowed = sharing.eligible(fair, running, active, self.slots, reserve)
        self.restricted = len(allowed) < len(fair)
        return [q for t in allowed for q in self._queues[t]]

    def took(self, q: Queue) -> None:
        """A job was taken from ``q``: its tenant's turn is used, and one of its slots."""
        tenant = self._tenant_of.get(q.name)
        if tenant is not None:
            self.fair.served(tenant, self.terms.weight(tenant))
            self.last_taken[tenant] = self.clock()
            with self._lock:
                self.running[tenant] = self.running.get(tenant, 0) + 1

    def ended(self, q: Queue) -> None:
        """A job taken from ``q`` ended (or was handed back)."""
        tenant = self._tenant_of.get(q.name)
        if tenant is not None:
            with self._lock:
                left = self.running.get(tenant, 0) - 1
                if left > 0:
                    self.running[tenant] = left
                else:
                    self.running.pop(tenant, None)


@dataclass
class Running:
    """A job this worker has started."""

    job: Job
    queue: Queue
    execution: Execution
    future: concurrent.futures.Future[str]


@dataclass
class Stats:
    """What one ``work`` call did."""

    succeeded: int = 0
    failed: int = 0
    handed_back: int = 0


class ConcurrentWorker:
    """Runs up to ``concurrency`` jobs of the given queues at once."""

    def __init__(
        self,
        context: Context,
        redis: Redis,
        queues: list[Queue],
        concurrency: int,
        tenants: TenantQueues | None = None,
    ) -> None:
        self.context = context
        self.settings = context.deps.settings
        self.redis = redis
        self.queues = queues
        self.tenants = tenants
        """A shared model's tenant queues (``queues`` is then empty until tenants come)."""
        self.concurrency = concurrency
        # RQ's Worker object only for its records: registration, state, heartbeat, stats.
        self.rq = Worker(queues, connection=redis, serializer=JSONSerializer)
        self.slots = threading.BoundedSemaphore(concurrency)
        self.events: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        self.running: dict[str, Running] = {}
        self.stopping = threading.Event()
        self.drained = threading.Event()
        self.force = False
        self.stats = Stats()
        self._tasks: dict[str, asyncio.Task[str]] = {}
        self.untaken: list[tuple[Job, Queue]] = []
        """Jobs taken off their queue that could not start (Redis went away between the two):
        pushed back to the front of their queue as soon as Redis answers again, since
        nothing else knows they left it."""

    @property
    def name(self) -> str:
        return str(self.rq.name)

    # --- signals -----------------------------------------------------------------

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping.is_set():
            log.warning("second stop signal: handing running jobs back now")
            self.force = True
        else:
            log.info(
                "stopping: no new jobs; %d running get %.0fs to finish",
                len(self.running),
                self.settings.shutdown_grace_seconds,
            )
        self.stopping.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    # --- the main loop -------------------------------------------------------------

    def work(self, burst: bool = False) -> Stats:
        """Run jobs until stopped (or, in burst mode, until the queues are empty)."""
        self.rq.register_birth()  # type: ignore[no-untyped-call]
        self.rq.set_state(WorkerStatus.IDLE)
        log.info(
            "worker %s: up to %d jobs at once from %s",
            self.name,
            self.concurrency,
            f"every tenant's queues of {self.tenants.flavor}"
            if self.tenants
            else ", ".join(q.name for q in self.queues),
        )
        taker = threading.Thread(target=self._take, args=(burst,), name="llmloom-taker")
        taker.start()
        beat_every = self.settings.heartbeat_seconds
        next_beat = time.monotonic() + beat_every
        deadline: float | None = None
        try:
            while True:
                if self.stopping.is_set():
                    deadline = deadline or time.monotonic() + self.settings.shutdown_grace_seconds
                    if not self.running:
                        break
                    if self.force or time.monotonic() >= deadline:
                        self._hand_back_running()
                        break
                elif burst and self.drained.is_set() and not self.running and self.events.empty():
                    break
                try:
                    kind, a, b = self.events.get(timeout=0.2)
                except queue.Empty:
                    pass
                else:
                    try:
                        if kind == "start":
                            self._start(a, b)
                        elif kind == "done":
                            self._finish(a)
                    except redisclients.UNAVAILABLE as exc:
                        # RQ's records of this job are lost; the job itself is not: its
                        # result is written or its lease lapses and it runs again.
                        log.warning("Redis is away; RQ's records of a job are lost: %s", exc)
                if time.monotonic() >= next_beat:
                    with contextlib.suppress(*redisclients.UNAVAILABLE):
                        self._heartbeat()
                        self._push_back_untaken()
                    next_beat = time.monotonic() + beat_every
        finally:
            self.stopping.set()
            taker.join(TAKE_TIMEOUT_SECONDS + 5)
            self._hand_back_untaken()
            with contextlib.suppress(*redisclients.UNAVAILABLE):
                self._push_back_untaken()
            self.rq.register_death()  # type: ignore[no-untyped-call]
        log.info("worker %s stopped: %s", self.name, self.stats)
        return self.stats

    def _take(self, burst: bool) -> None:
        """The taker thread: a job off the queues for every free slot."""
        while not self.stopping.is_set():
            if not self.slots.acquire(timeout=0.2):
                continue
            got: tuple[Job, Queue] | None = None
            try:
                order = self.tenants.order() if self.tenants else self.queues
                if not order:  # a shared model no tenant has sent work to yet
                    time.sleep(TENANTS_REFRESH_SECONDS / 2)
                    raise DequeueTimeout(TAKE_TIMEOUT_SECONDS)
                if self.tenants is not None and self.tenants.restricted and not burst:
                    got = self._take_reserved(order)
                else:
                    got = Queue.dequeue_any(
                        order,
                        None if burst else TAKE_TIMEOUT_SECONDS,
                        connection=self.redis,
                        serializer=JSONSerializer,
                    )
                if got is not None and self.tenants:
                    self.tenants.took(got[1])
            except DequeueTimeout:
                pass
            except Exception as exc:  # Redis went away: wait, and try again
                log.warning("could not take a job: %s", exc)
                time.sleep(1)
            if got is None:
                self.slots.release()
                if burst:
                    self.drained.set()
                    time.sleep(0.05)
                continue
            self.drained.clear()
            self.events.put(("start", got[0], got[1]))

    @property
    def doorbell(self) -> str:
        """A list the main thread pushes to when a job ends, waking a taker that waits
        for a reserved slot: a slot of anyone's is free again."""
        return f"llmloom:doorbell:{self.name}"

    def _take_reserved(self, order: list[Queue]) -> tuple[Job, Queue] | None:
        """Wait for work of the tenants that may take a reserved slot, or for a job to end
        (the doorbell), whichever comes first; RQ's dequeue, with the doorbell added."""
        by_key = {q.key: q for q in order}
        popped = self.redis.blpop([*by_key, self.doorbell], TAKE_TIMEOUT_SECONDS)
        if popped is None:
            return None
        key, job_id = (v.decode() if isinstance(v, bytes) else str(v) for v in popped)
        if key not in by_key:
            return None  # the doorbell: look at the slots again
        try:
            job = Job.fetch(job_id, connection=self.redis, serializer=JSONSerializer)
        except NoSuchJobError:
            return None  # deleted while queued, as RQ's dequeue skips it
        return job, by_key[key]

    def _start(self, job: Job, q: Queue) -> None:
        if self.stopping.is_set():
            q.push_job_id(job.id, at_front=True)  # taken as the stop came: not ours to run
            self.slots.release()
            return
        try:
            with self.redis.pipeline() as pipe:
                tries = queues.attempts_key(job.id)
                pipe.incr(tries)
                pipe.expire(tries, queues.ATTEMPTS_TTL_SECONDS)
                execution = Execution.create(job, self._ttl, pipeline=pipe, worker_name=self.name)
                job.prepare_for_execution(self.name, pipeline=pipe)
                self.rq.set_state(WorkerStatus.BUSY, pipeline=pipe)
                attempt = int(pipe.execute()[0])
        except redisclients.UNAVAILABLE:
            # Taken off its queue, not started: its RQ record still says queued, so no
            # one would queue it again. It goes back once Redis answers.
            self.slots.release()
            self.untaken.append((job, q))
            raise
        future = self.context.submit(self._run(job.id, job.args[0], job.timeout, attempt))
        self.running[job.id] = Running(job, q, execution, future)
        future.add_done_callback(functools.partial(self._done, job.id))

    def _done(self, job_id: str, _: concurrent.futures.Future[str]) -> None:
        self.events.put(("done", job_id, None))  # on the loop's thread: the main one ends it

    async def _run(
        self, job_id: str, payload: dict[str, Any], limit: float | None, attempt: int
    ) -> str:
        task = asyncio.current_task()
        if task is not None:  # always, in a coroutine run by the loop
            self._tasks[job_id] = task
        try:
            # RQ's job timeout bounds an attempt, as RQ's own workers do.
            async with asyncio.timeout(limit if limit and limit > 0 else None):
                return await self.context.run(payload, attempt)
        finally:
            self._tasks.pop(job_id, None)

    def _finish(self, job_id: str) -> None:
        r = self.running.pop(job_id, None)
        if r is None:
            return  # handed back
        self.slots.release()
        if self.tenants:
            self.tenants.ended(r.queue)
            if self.tenants.restricted:
                with self.redis.pipeline(transaction=False) as ring:
                    ring.rpush(self.doorbell, "1")
                    ring.expire(self.doorbell, 60)
                    ring.execute()
        job = r.job
        job.ended_at = now()
        try:
            result, exc_string = r.future.result(), ""
        except BaseException as exc:
            result, exc_string = None, "".join(traceback.format_exception(exc))
            log.error("job %s raised: %s", job_id, exc_string)
        # RQ's worker writes these records in the same pipelines (rq.worker.base,
        # handle_job_success / handle_job_failure); the Job methods are its own.
        with self.redis.pipeline() as pipe:
            if not exc_string:
                job._result = result
                job._handle_success(
                    RESULT_TTL_SECONDS,
                    pipeline=pipe,
                    worker_name=self.name,
                    execution_id=r.execution.id,
                    execution_started_at=r.execution.created_at,
                    execution_ended_at=job.ended_at,
                )
                job.cleanup(RESULT_TTL_SECONDS, pipeline=pipe, remove_from_queue=False)
                self.rq.increment_successful_job_count(pipeline=pipe)
                self.stats.succeeded += 1
            else:
                job.set_status(JobStatus.FAILED, pipeline=pipe)
                job._handle_failure(
                    exc_string,
                    pipeline=pipe,
                    worker_name=self.name,
                    execution_id=r.execution.id,
                    execution_started_at=r.execution.created_at,
                    execution_ended_at=job.ended_at,
                )
                self.rq.increment_failed_job_count(pipeline=pipe)
                self.stats.failed += 1
            r.execution.delete(job=job, pipeline=pipe)
            if job.started_at is not None:
                self.rq.increment_total_working_time(job.ended_at - job.started_at, pipe)
            if not self.running:
                self.rq.set_state(WorkerStatus.IDLE, pipeline=pipe)
            pipe.execute()

    @property
    def _ttl(self) -> int:
        """Lifetime of the worker's and executions' records between heartbeats (RQ: + 60 s)."""
        return int(self.settings.heartbeat_seconds) + 60

    def _heartbeat(self) -> None:
        with self.redis.pipeline() as pipe:
            self.rq.heartbeat(self._ttl, pipeline=pipe)
            for r in self.running.values():
                r.execution.heartbeat(r.job.started_job_registry, self._ttl, pipeline=pipe)
                r.job.heartbeat(now(), self._ttl, pipeline=pipe, xx=True)
            pipe.execute()

    # --- handing jobs back -----------------------------------------------------------

    def _push_back_untaken(self) -> None:
        """Jobs that could not start go back to the front of their queues."""
        while self.untaken:
            job, q = self.untaken[0]
            q.push_job_id(job.id, at_front=True)
            self.untaken.pop(0)
            log.info("job %s went back to %s (it could not start: Redis was away)", job.id, q.name)

    async def _cancel_all(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        await self.context.inflight.flush()  # their leases are dropped before the hand-back

    def _hand_back_running(self) -> None:
        """Cancel the running jobs and put them back at the front of their queues."""
        log.warning("handing %d unfinished jobs back to the queue", len(self.running))
        # Cancelling runs each job's cleanup (its lease is dropped) before the job is
        # queued again, so the next worker does not find it leased.
        self.context.call(self._cancel_all())
        running, self.running = self.running, {}
        with self.redis.pipeline() as pipe:
            for r in running.values():
                if self.tenants:
                    self.tenants.ended(r.queue)
                r.execution.delete(job=r.job, pipeline=pipe)
                r.job.set_status(JobStatus.QUEUED, pipeline=pipe)
                r.queue.push_job_id(r.job.id, pipeline=pipe, at_front=True)
            pipe.execute()
        self.stats.handed_back += len(running)

    def _hand_back_untaken(self) -> None:
        """Jobs the taker took that never started go back where they were."""
        while True:
            try:
                kind, job, q = self.events.get_nowait()
            except queue.Empty:
                return
            if kind == "start":
                with contextlib.suppress(Exception):
                    q.push_job_id(job.id, at_front=True)
