"""The clients one API process owns, created at start-up and closed at shutdown."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from redis import Redis as SyncRedis
from redis.asyncio import Redis

from llmloom import ratelimit, redisclients
from llmloom.api.auth import TokenAuth
from llmloom.api.observability import ApiMetrics
from llmloom.api.waiter import ResultWaiter
from llmloom.kube import Kube
from llmloom.settings import ApiSettings
from llmloom.sharing import Catalog

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
    catalog: Catalog
    """Every Flavor, ClusterFlavor and Namespace, from watches: a request resolves its
    model (and the grant of a shared one) in memory."""

    @classmethod
    async def start(cls, settings: ApiSettings, metrics: ApiMetrics) -> Services:
        kube = Kube.connect(settings.kubeconfig)
        redis = redisclients.connect_async(settings.redis_url)
        waiter = ResultWaiter(redis)
        await waiter.start()
        catalog = Catalog.watching(kube)
        catalog.start()
        auth = TokenAuth.watching(kube)
        auth.tokens.start()
        with contextlib.suppress(TimeoutError):  # /readyz says so until it has listed them
            await catalog.wait_synced(FLAVOR_SYNC_SECONDS)
            await auth.tokens.wait_synced(FLAVOR_SYNC_SECONDS)
        return cls(
            settings=settings,
            kube=kube,
            redis=redis,
            sync_redis=redisclients.connect(settings.redis_url),
            waiter=waiter,
            auth=auth,
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
            catalog=catalog,
        )

    async def close(self) -> None:
        await self.catalog.stop()
        await self.auth.tokens.stop()
        await self.waiter.stop()
        await self.kube.aclose()
        await self.redis.aclose()
        self.sync_redis.close()
