"""Per-caller rate limits by GCRA (a token bucket kept as one timestamp), in Redis or in this
process. services.http.auth asks before it lets a request through."""

from __future__ import annotations

import logging
import time
from typing import Any

from fabcity.core.settings import Settings

log = logging.getLogger(__name__)

# KEYS[1]: the key's bucket. ARGV: emission interval and burst tolerance, in microseconds.
# Returns 0 when allowed, else how many microseconds until the next request would be.
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat + interval - tonumber(ARGV[2]) - now
if wait > 0 then return wait end
redis.call('SET', KEYS[1], tat + interval, 'PX', math.ceil((tat + interval - now) / 1000) + 1000)
return 0
"""


class RateLimiter:
    """`rate` requests per second per key, `burst` at once. Redis holds the buckets when the
    API runs beside Celery (several API processes share one limit); each process keeps its own
    otherwise, or while Redis does not answer."""

    def __init__(self, settings: Settings) -> None:
        self.rate = settings.rate_limit_per_s
        self.burst = settings.rate_limit_burst
        self.prefix = settings.redis_prefix + "ratelimit:"
        self._tat: dict[str, float] = {}
        self._redis: Any = None
        self._redis_down_until = 0.0
        if self.rate > 0 and settings.worker_mode == "celery":
            import redis.asyncio

            self._redis = redis.asyncio.Redis.from_url(
                settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
            )
            self._script = self._redis.register_script(GCRA_LUA)

    async def wait_s(self, who: str) -> float:
        """0 when `who` may go on; else the seconds until it may."""
        if self.rate <= 0:
            return 0.0
        if self._redis is not None and time.monotonic() >= self._redis_down_until:
            interval_us = 1e6 / self.rate
            try:
                wait_us = await self._script(
                    keys=[self.prefix + who], args=[int(interval_us), int(interval_us * self.burst)]
                )
                return float(wait_us) / 1e6
            except Exception as exc:  # Redis down: limit in this process meanwhile
                log.warning("rate limits counted locally for 30 s: Redis: %s", exc)
                self._redis_down_until = time.monotonic() + 30
        return self._local(who)

    def _local(self, who: str) -> float:
        now = time.monotonic()
        interval = 1.0 / self.rate
        tat = max(self._tat.get(who, now), now)
        wait = tat + interval - interval * self.burst - now
        if wait > 0:
            return wait
        self._tat[who] = tat + interval
        if len(self._tat) > 100_000:  # forget idle buckets rather than grow without bound
            self._tat = {k: v for k, v in self._tat.items() if v > now}
        return 0.0
