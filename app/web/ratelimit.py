"""Per-client sliding-window rate limits: in the process, or shared by every web worker through
Redis (MONOSCOPE_REDIS_URL).

    limiter = rate_limiter(settings, "sign-in", per_minute=10)
    wait = limiter.check(client_ip)   # None: go ahead; else seconds until the next slot

In one process an in-memory window is the real limit. With `--workers 4`, or several machines,
each process counting its own window would let a client through four times as often, so the
windows then live in Redis: one sorted set per client, trimmed, counted and added to in one
Lua script on the Redis server's clock, so the workers and machines agree on every slot.
"""

import math
import secrets
import threading
import time
from collections import deque
from typing import Protocol

from app.settings import Settings


class Limiter(Protocol):
    def check(self, key: str) -> int | None: ...


class RateLimiter:
    def __init__(self, per_minute: int, window: float = 60.0, clock=time.monotonic):
        self.limit, self.window, self.clock = per_minute, window, clock
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> int | None:
        """Record one use by `key` if it is allowed; otherwise the whole seconds to wait."""
        now = self.clock()
        with self._lock:
            events = self._events.setdefault(key, deque())
            while events and events[0] <= now - self.window:
                events.popleft()
            if len(events) >= self.limit:
                return max(1, math.ceil(events[0] + self.window - now))
            events.append(now)
            if len(self._events) > 10_000:  # forget idle clients
                for idle in [k for k, v in self._events.items() if not v]:
                    del self._events[idle]
            return None


# KEYS[1]: the client's window; ARGV: limit, window (s), a unique member. Returns -1 when the
# use is recorded, else the milliseconds until the oldest use leaves the window.
_SLIDING_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2]) * 1000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return tonumber(oldest[2]) + window - now
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return -1
"""


class RedisRateLimiter:
    """The same limit as RateLimiter, kept in Redis so that every worker shares it."""

    def __init__(self, client, name: str, per_minute: int, window: float = 60.0):
        self.client, self.name = client, name
        self.limit, self.window = per_minute, window
        self._script = client.register_script(_SLIDING_WINDOW)

    def check(self, key: str) -> int | None:
        member = f"{time.time_ns()}-{secrets.token_hex(4)}"
        waited = int(
            self._script(
                keys=[f"monoscope:limit:{self.name}:{key}"], args=[self.limit, self.window, member]
            )
        )
        return None if waited < 0 else max(1, math.ceil(waited / 1000))


def rate_limiter(settings: Settings, name: str, per_minute: int) -> Limiter:
    """Shared through Redis when settings.redis_url is set, else kept in this process."""
    if not settings.redis_url:
        return RateLimiter(per_minute)
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    return RedisRateLimiter(client, name, per_minute)
