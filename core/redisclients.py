"""The one way every component connects to Redis.

Redis restarts (a pod rescheduled, a failover): the connections pooled before
it are dead, and redis-py finds out only when it next writes to one. A
periodic health check (a PING before a connection that sat idle is used
again) and retries with a short backoff on connection errors make most of
those invisible; what still fails is answered by each component as a passing
fault (the API: 503, which OpenAI's SDKs retry).
"""

from __future__ import annotations

from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

HEALTH_CHECK_SECONDS = 15
RETRIES = 3
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError)
"""What a Redis that is away (restarting, failing over) raises."""


def _options() -> dict[str, Any]:
    return {
        "health_check_interval": HEALTH_CHECK_SECONDS,
        "socket_keepalive": True,
        "retry_on_error": list(UNAVAILABLE),
    }


def connect(url: str, **kw: Any) -> Redis:
    """A synchronous client (RQ's side)."""
    retry = Retry(ExponentialBackoff(cap=1.0, base=0.05), RETRIES)
    return Redis.from_url(url, retry=retry, **_options(), **kw)


def connect_async(url: str, **kw: Any) -> AsyncRedis:
    """An asyncio client."""
    retry = AsyncRetry(ExponentialBackoff(cap=1.0, base=0.05), RETRIES)
    return AsyncRedis.from_url(url, retry=retry, **_options(), **kw)
