"""How long a request waited on upstreams, so that the gateway's own share
of its time (the overhead every token pays) can be told apart and shown in
`x-gateway-overhead-ms`."""

import contextvars
import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class RequestTiming:
    started: float = field(default_factory=time.perf_counter)
    upstream: float = 0.0  # seconds waiting on providers, backoff included

    def overhead(self) -> float:
        """Seconds spent in the gateway itself, up to now."""
        return max(time.perf_counter() - self.started - self.upstream, 0.0)


_current: contextvars.ContextVar[RequestTiming | None] = contextvars.ContextVar("request_timing", default=None)


def timing_start() -> RequestTiming:
    """Start timing the request this task serves (its context is its own)."""
    timing = RequestTiming()
    _current.set(timing)
    return timing


def upstream_waited(since: float) -> None:
    """Count the time from `since` (a perf_counter reading) as upstream wait."""
    timing = _current.get()
    if timing is not None:
        timing.upstream += time.perf_counter() - since
