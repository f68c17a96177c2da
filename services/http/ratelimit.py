"""Per-caller rate limits by GCRA (a token bucket kept as one timestamp), in Redis or in this
process. services.http.auth asks before it lets a request through, and counts each failed key
lookup against the address that made it."""

from __future__ import annotations

import logging
import time
from typing import Any

from fabcity.core.settings import Settings

log = logging.getLogger(__name__)

# KEYS[1]: the caller's bucket. ARGV: emission interval and burst tolerance, in microseconds,
# and 1 to only look (a blocked address is checked before a key is looked up; only a failure
# spends). Returns 0 when allowed, else how many microseconds until the next request would be.
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat + interval - tonumber(ARGV[2]) - now
if wait > 0 then return wait end
if ARGV[3] == '1' then return 0 end
redis.call('SET', KEYS[1], tat + interval, 'PX', math.ceil((tat + interval - now) / 1000) + 1000)
return 0
"""


class RedisStore:
    """The Redis that holds the buckets of several limiters, and whether it answers: one
    timeout while it is gone, not one per limiter."""

    def __init__(self, settings: Settings) -> None:
        import redis.asyncio

        self.client: Any = redis.asyncio.Redis.from_url(
            settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        self.script: Any = self.client.register_script(GCRA_LUA)
        self.down_until = 0.0


class RateLimiter:
    """`rate` requests per second per caller, `burst` at once. Redis holds the buckets when the
    API runs beside Celery (several API processes share one limit); each process keeps its own
    otherwise, or while Redis does not answer. `name` keeps limits of different things apart."""

    def __init__(
        self, settings: Settings, rate: float, burst: int, name: str, store: RedisStore | None
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.prefix = f"{settings.redis_prefix}{name}:"
        self._tat: dict[str, float] = {}
        self._store = store if rate > 0 else None

    async def wait_s(self, who: str) -> float:
        """0 when `who` may go on (and one request is counted); else the seconds until it may."""
        return await self._ask(who, spend=True)

    async def blocked_s(self, who: str) -> float:
        """What `wait_s` would answer, without counting a request."""
        return await self._ask(who, spend=False)

    async def _ask(self, who: str, spend: bool) -> float:
        if self.rate <= 0:
            return 0.0
        store = self._store
        if store is not None and time.monotonic() >= store.down_until:
            interval_us = 1e6 / self.rate
            try:
                wait_us = await store.script(
                    keys=[self.prefix + who],
                    args=[int(interval_us), int(interval_us * self.burst), 0 if spend else 1],
                )
                return float(wait_us) / 1e6
            except Exception as exc:  # Redis down: limit in this process meanwhile
                log.warning("rate limits counted locally for 30 s: Redis: %s", exc)
                store.down_until = time.monotonic() + 30
        return self._local(who, spend)

    def _local(self, who: str, spend: bool) -> float:
        now = time.monotonic()
        interval = 1.0 / self.rate
        tat = max(self._tat.get(who, now), now)
        wait = tat + interval - interval * self.burst - now
        if wait > 0:
            return wait
        if not spend:
            return 0.0
        self._tat[who] = tat + interval
        if len(self._tat) > 100_000:  # forget idle buckets rather than grow without bound
            self._tat = {k: v for k, v in self._tat.items() if v > now}
        return 0.0
