"""The clients one API process owns, created at start-up and closed at shutdown."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from redis import Redis as SyncRedis
from redis.asyncio import Redis

from llmloom import ratelimit
from llmloom.api.auth import TokenAuth
from llmloom.api.observability import ApiMetrics
from llmloom.api.waiter import ResultWaiter
from llmloom.informer import Informer
from llmloom.kube import FLAVORS, Kube
from llmloom.resources import Flavor
from llmloom.settings import ApiSettings

FLAVOR_SYNC_SECONDS = 10.0
"""How long the API waits at start for its first list of the flavors."""


@dataclass
class Services:
    """Settings and clients shared by every request."""

    settings: ApiSettings
    kube: Kube
    redis: Redis
    sync_redis: SyncRedis  # RQ's enqueue is synchronous; it runs in a thread
    waiter: ResultWaiter
    auth: TokenAuth
    limits: ratelimit.TenantLimitsSource
    metrics: ApiMetrics
    flavors: Informer[Flavor]
    """Every flavor, from a watch: a request resolves its model in memory."""

    @classmethod
    async def start(cls, settings: ApiSettings, metrics: ApiMetrics) -> Services:
        kube = Kube.connect(settings.kubeconfig)
        redis = Redis.from_url(settings.redis_url)
        waiter = ResultWaiter(redis)
        await waiter.start()
        flavors = Informer(
            kube,
            FLAVORS,
            Flavor.model_validate,
            {"model": lambda f: (f.metadata.namespace, f.spec.model)},
        )
        flavors.start()
        with contextlib.suppress(TimeoutError):  # /readyz says so until it has listed them
            await flavors.wait_synced(FLAVOR_SYNC_SECONDS)
        return cls(
            settings=settings,
            kube=kube,
            redis=redis,
            sync_redis=SyncRedis.from_url(settings.redis_url),
            waiter=waiter,
            auth=TokenAuth(kube, settings.token_cache_seconds),
            limits=ratelimit.TenantLimitsSource(
                kube,
                ratelimit.TenantLimits(
                    requests_per_minute=settings.requests_per_minute,
                    tokens_per_minute=settings.tokens_per_minute,
                    token_budget=settings.token_budget,
                    budget_period=settings.token_budget_period,
                ),
                settings.limits_cache_seconds,
            ),
            metrics=metrics,
            flavors=flavors,
        )

    async def close(self) -> None:
        await self.flavors.stop()
        await self.waiter.stop()
        await self.kube.aclose()
        await self.redis.aclose()
        self.sync_redis.close()
