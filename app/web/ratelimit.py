"""A per-client sliding-window rate limit, kept in the process.

    limiter = RateLimiter(per_minute=30)
    wait = limiter.check(client_ip)   # None: go ahead; else seconds until the next slot

One server process holds the model, so an in-process limit is the real one; a team running
several web workers in front of one GPU worker would move this into the shared store.
"""

import math
import threading
import time
from collections import deque


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
