"""GET /v1/tasks/{id}: the state of a request that outlived its wait, and its answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Query

from llmloom import results
from llmloom.api import serving
from llmloom.api.deps import ServicesDep, TenantDep
from llmloom.api.errors import APIError, responses
from llmloom.api.protocol import TaskInfo
from llmloom.api.services import Services
from llmloom.kube import LLMJOBS, Obj

router = APIRouter()


async def _task(services: Services, tenant: str, task_id: str) -> Obj:
    """The LLMJob behind a task of the tenant, or the OpenAI 404."""
    obj = await serving.find(services, LLMJOBS, tenant, task_id)
    if obj is None:
        raise _not_found(task_id)
    return obj


def _not_found(task_id: str) -> APIError:
    return APIError(
        404, f"No task found with id '{task_id}'.", param="task_id", code="task_not_found"
    )


@router.get("/v1/tasks/{task_id}", responses=responses(400, 401, 404))
async def get_task(
    task_id: str,
    services: ServicesDep,
    tenant: TenantDep,
    wait: Annotated[float | None, Query(ge=0)] = None,
) -> TaskInfo:
    """The task's state; with ``?wait=N`` it waits up to N seconds for the answer."""
    obj = await _task(services, tenant, task_id)
    uid, gen = obj["metadata"]["uid"], obj["metadata"]["generation"]
    timeout = serving.wait_limit(services, None, wait) if wait is not None else 0.0
    if timeout > 0:
        outcome = await services.waiter.wait(uid, gen, timeout)
    else:
        outcome = await results.load(services.redis, uid, gen)
    if outcome is not None:
        await serving.settle(services, uid, gen, outcome)
    return serving.task_info(obj, outcome)


@router.delete("/v1/tasks/{task_id}", responses=responses(401, 404))
async def cancel_task(task_id: str, services: ServicesDep, tenant: TenantDep) -> TaskInfo:
    """Cancel a task: its LLMJob is deleted, and a worker running it stops."""
    obj = await _task(services, tenant, task_id)
    if not await serving.delete_job(services, tenant, task_id):  # deleted in between
        raise _not_found(task_id)
    info = serving.task_info(obj, None)
    info.status = "cancelled"
    return info


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
