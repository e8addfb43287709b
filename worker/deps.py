"""What job processing needs from its worker process, and how a job fails."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from redis.asyncio import Redis

from llmloom.kube import Kube
from llmloom.resources import Flavor
from llmloom.settings import WorkerSettings


@dataclass
class Deps:
    """What processing needs from its process: clients and settings."""

    settings: WorkerSettings
    kube: Kube
    redis: Redis
    http: httpx.AsyncClient
    flavors: dict[tuple[str, str], tuple[float, Flavor]] = field(default_factory=dict)
    """Flavors read lately, by (namespace, name), with when they were read."""


class JobFailed(Exception):
    """The job cannot succeed; the reason goes into its Failed condition."""

    def __init__(self, reason: str, message: str, status_code: int = 502) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason, self.message, self.status_code = reason, message, status_code
