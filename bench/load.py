"""The load generator: closed-loop workers that each send one request at a time.

A phase runs `concurrency` workers against one target until a deadline; a
worker finishes the request it has started when the deadline passes, so no
request is ever cancelled (a cancelled stream would be billed as a client
disconnect and blur the books check).

A target may require an `x-cache` answer: a 2xx that says otherwise counts
as an error (it was still answered, and so still billed).
"""

import asyncio
import dataclasses
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import orjson

DONE_MARKER = b"data: [DONE]"
# Long enough for any healthy request under load; short enough that a hung
# gateway fails the run instead of stalling it.
REQUEST_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Target:
    """One endpoint to load, with the exact request every worker repeats."""

    name: str
    url: str
    body: bytes
    headers: dict[str, str]
    stream: bool
    # The x-cache every answer must carry ("" not checked): a cache hit that
    # quietly went upstream would measure forwarding under the wrong name.
    expect_cache: str = ""


def target_build(
    name: str,
    url: str,
    model: str,
    *,
    stream: bool,
    api_key: str = "",
    expect_cache: str = "",
    headers: dict[str, str] | None = None,
) -> Target:
    """`headers`: what the system needs besides Content-Type (a peer's routing, say)."""
    payload: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
    if stream:
        payload["stream"] = True
    headers = {"Content-Type": "application/json", **(headers or {})}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    # Serialised once: the client's own CPU is shared with the fake upstream.
    return Target(
        name=name, url=url, body=orjson.dumps(payload), headers=headers, stream=stream, expect_cache=expect_cache
    )


@dataclass(frozen=True)
class Sample:
    """One request: seconds from send to the last byte (and to the first body chunk)."""

    ok: bool
    status: int
    latency: float
    ttfb: float | None = None
    error: str = ""
    cache: str = ""  # the answer's x-cache header: hit, miss, bypass, or "" when absent


@dataclass
class Phase:
    """Everything one phase observed."""

    target: str
    concurrency: int
    elapsed: float = 0.0
    samples: list[Sample] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.samples)

    @property
    def succeeded(self) -> list[Sample]:
        return [s for s in self.samples if s.ok]

    @property
    def http_2xx(self) -> int:
        """Requests the gateway answered with 2xx: each must leave a usage record."""
        return sum(1 for s in self.samples if 200 <= s.status < 300)

    @property
    def cache_hits(self) -> int:
        """2xx answered from the cache: each must leave a usage record flagged as a hit."""
        return sum(1 for s in self.samples if 200 <= s.status < 300 and s.cache == "hit")

    @property
    def errors(self) -> Counter[str]:
        return Counter(s.error for s in self.samples if not s.ok)


def session_open(concurrency: int) -> aiohttp.ClientSession:
    """A keep-alive session with one connection per worker, reused across phases."""
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)


async def request_send(session: aiohttp.ClientSession, target: Target) -> Sample:
    started = time.perf_counter()
    status = 0  # kept if the body then fails: a 2xx the gateway began is still billed
    try:
        async with session.post(target.url, data=target.body, headers=target.headers) as response:
            status = response.status
            if target.stream:
                sample = await _stream_read(response, started)
            else:
                await response.read()
                latency = time.perf_counter() - started
                ok = 200 <= status < 300
                sample = Sample(ok=ok, status=status, latency=latency, error="" if ok else f"HTTP {status}")
            return _cache_checked(sample, response.headers.get("x-cache", ""), target.expect_cache)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Sample(ok=False, status=status, latency=time.perf_counter() - started, error=type(exc).__name__)


def _cache_checked(sample: Sample, cache: str, expected: str) -> Sample:
    """The sample with its x-cache; a failure if the target expects another."""
    if sample.ok and expected and cache != expected:
        return dataclasses.replace(sample, ok=False, cache=cache, error=f"x-cache {cache or 'absent'}, not {expected}")
    return dataclasses.replace(sample, cache=cache) if cache else sample


async def _stream_read(response: aiohttp.ClientResponse, started: float) -> Sample:
    ttfb: float | None = None
    tail = b""  # only the end matters: does the stream close with [DONE]?
    async for chunk in response.content.iter_any():
        if ttfb is None:
            ttfb = time.perf_counter() - started
        tail = (tail + chunk)[-64:]
    latency = time.perf_counter() - started
    if not 200 <= response.status < 300:
        return Sample(ok=False, status=response.status, latency=latency, ttfb=ttfb, error=f"HTTP {response.status}")
    if not tail.rstrip().endswith(DONE_MARKER):
        return Sample(ok=False, status=response.status, latency=latency, ttfb=ttfb, error="stream without [DONE]")
    return Sample(ok=True, status=response.status, latency=latency, ttfb=ttfb)


async def phase_run(session: aiohttp.ClientSession, target: Target, concurrency: int, duration: float) -> Phase:
    """Keep `concurrency` requests in flight for `duration` seconds."""
    phase = Phase(target=target.name, concurrency=concurrency)
    started = time.perf_counter()
    deadline = started + duration

    async def worker() -> None:
        while time.perf_counter() < deadline:
            phase.samples.append(await request_send(session, target))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    phase.elapsed = time.perf_counter() - started
    return phase
