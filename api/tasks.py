"""GET /v1/tasks/{id}: the state of a request that outlived its wait, and its answer.

A request's task is read from Redis (``results.TaskRecord``): it stays readable
for its result's lifetime, after its LLMJob was deleted, and a poll costs the
API server nothing. The task id of a job made through ``/v1/jobs`` (kept, as a
person's) is that job's name, read from the API server.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Query

from llmloom import results
from llmloom.api import serving
from llmloom.api.deps import ServicesDep, TenantDep
from llmloom.api.errors import APIError, responses
from llmloom.api.protocol import TaskInfo
from llmloom.api.services import Services
from llmloom.kube import LLMJOBS, Obj, is_name

router = APIRouter()


def _not_found(task_id: str) -> APIError:
    return APIError(
        404, f"No task found with id '{task_id}'.", param="task_id", code="task_not_found"
    )


async def _job(services: Services, tenant: str, task_id: str) -> Obj:
    """The LLMJob behind a task that has no record (a /v1/jobs job), or the OpenAI 404."""
    obj = await serving.find(services, LLMJOBS, tenant, task_id)
    if obj is None:
        raise _not_found(task_id)
    return obj


async def _outcome(
    services: Services, uid: str, generation: int, wait: float | None
) -> results.Outcome | None:
    timeout = serving.wait_limit(services, None, wait) if wait is not None else 0.0
    if timeout > 0:
        outcome = await services.waiter.wait(uid, generation, timeout)
    else:
        outcome = await results.load(services.redis, uid, generation)
    if outcome is not None:
        await serving.settle(services, uid, generation, outcome)
    return outcome


@router.get("/v1/tasks/{task_id}", responses=responses(400, 401, 404))
async def get_task(
    task_id: str,
    services: ServicesDep,
    tenant: TenantDep,
    wait: Annotated[float | None, Query(ge=0)] = None,
) -> TaskInfo:
    """The task's state; with ``?wait=N`` it waits up to N seconds for the answer."""
    if not is_name(task_id):
        raise _not_found(task_id)
    record = await results.task_record(services.redis, tenant, task_id)
    if record is not None:
        outcome = await _outcome(services, record.uid, record.generation, wait)
        return await serving.request_task(services, record, task_id, outcome)
    obj = await _job(services, tenant, task_id)
    uid, gen = obj["metadata"]["uid"], obj["metadata"]["generation"]
    return serving.task_info(obj, await _outcome(services, uid, gen, wait))


@router.delete("/v1/tasks/{task_id}", responses=responses(401, 404))
async def cancel_task(task_id: str, services: ServicesDep, tenant: TenantDep) -> TaskInfo:
    """Cancel a task: its LLMJob is deleted, and a worker running it stops. A task that
    has ended is left as it is."""
    if not is_name(task_id):
        raise _not_found(task_id)
    record = await results.task_record(services.redis, tenant, task_id)
    if record is not None:
        outcome = await results.load(services.redis, record.uid, record.generation)
        if outcome is not None:
            return await serving.request_task(services, record, task_id, outcome)
        await serving.delete_job(services, tenant, task_id)
        await results.forget_task(services.redis, tenant, task_id)
        info = await serving.request_task(services, record, task_id, None)
        info.status = "cancelled"
        return info
    obj = await _job(services, tenant, task_id)
    if not await serving.delete_job(services, tenant, task_id):  # deleted in between
        raise _not_found(task_id)
    info = serving.task_info(obj, None)
    info.status = "cancelled"
    return info


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
