"""Filling a tenant's response cache ahead of its traffic (manage.py cache_warmup).

Each request body of a JSON Lines file goes through the gateway's own request
path, in this process, as a key issued to the tenant for the run (and revoked
after it): authenticated, routed, limited, reserved against the tenant's
budgets, answered by the upstream, metered and billed to the tenant, and
stored in the tenant's cache exactly as a client's request would be. The
cache is the tenant's, not the key's, so the same requests from any caching
key of the tenant are then hits; with the tenant's semantic cache on, their
questions are indexed too. A body whose answer is cached already is a hit
and costs nothing: running the same file again warms only what expired.

`popular_requests` is the other way round: the request bodies of a tenant's
most hit entries, in the same format, for a warmup elsewhere.
"""

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from asgiref.sync import async_to_sync

from accounts.models import Tenant
from accounts.services import api_key_issue, api_key_revoke

WARMUP_KEY_NAME = "cache_warmup"


@dataclass
class WarmupReport:
    stored: int = 0  # answered by the upstream and stored
    cached: int = 0  # a hit already: nothing to do
    failed: list[str] = field(default_factory=list)  # "line N: why"


def cache_warm(tenant: Tenant, lines: Iterable[str], *, ttl_seconds: int | None, actor: Any = None) -> WarmupReport:
    """Answer and store every request body of `lines` for `tenant` (see the module doc)."""
    from billing.meter import meter
    from gateway import lifecycle

    bodies = list(_bodies(lines))
    report = WarmupReport(failed=[f"line {number}: {why}" for number, _, why in bodies if why])
    plaintext, key = api_key_issue(tenant=tenant, name=WARMUP_KEY_NAME, cache_ttl_seconds=ttl_seconds, actor=actor)
    background, lifecycle.GATEWAY_BACKGROUND = lifecycle.GATEWAY_BACKGROUND, False  # this run stores its own usage
    try:
        async_to_sync(_warm_all)(plaintext, [(n, b) for n, b, why in bodies if not why], report)
        meter.flush_sync()
    finally:
        lifecycle.GATEWAY_BACKGROUND = background
        api_key_revoke(api_key=key, actor=actor, reason="cache warmup finished")
    return report


def popular_requests(tenant: Tenant, limit: int) -> list[bytes]:
    """The request bodies (JSON) of the tenant's `limit` most hit fresh
    entries, most hit first (entries stored before bodies were kept are left out)."""
    from cachestore.store import cache_store

    entries = async_to_sync(cache_store().popular)(tenant.pk, limit)
    return [entry.request for entry in entries if entry.request is not None]


def _bodies(lines: Iterable[str]) -> Iterable[tuple[int, bytes, str]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            body = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield number, b"", f"not JSON ({exc})"
            continue
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            yield number, b"", "not a request body with a model"
            continue
        yield number, orjson.dumps(body), ""


async def _warm_all(plaintext: str, bodies: list[tuple[int, bytes]], report: WarmupReport) -> None:
    from cachestore.flight import writes_settled
    from gateway.asgi import application
    from proxy.semantic import semantic_writes_settled
    from proxy.upstream import upstream_sessions_close

    try:
        for number, raw in bodies:
            path = "/v1/embeddings" if b'"messages"' not in raw and b'"input"' in raw else "/v1/chat/completions"
            status, headers, answer = await _post(application, path, plaintext, raw)
            if status != 200:
                report.failed.append(f"line {number}: HTTP {status} {answer[:200].decode(errors='replace')}")
            elif headers.get("x-cache") == "hit":
                report.cached += 1
            elif headers.get("x-cache") == "miss":
                report.stored += 1
            else:
                report.failed.append(f"line {number}: not cached (x-cache: {headers.get('x-cache', 'none')})")
        await writes_settled()  # the answers stored
        await semantic_writes_settled()  # and their questions' vectors
    finally:
        await upstream_sessions_close()


async def _post(app: Any, path: str, plaintext: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request to the ASGI application, as a server would make it."""
    headers = [
        (b"authorization", f"Bearer {plaintext}".encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
    }
    sent, finished = False, asyncio.Event()
    status, answer_headers, chunks = 0, {}, []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, answer_headers
        if message["type"] == "http.response.start":
            status = message["status"]
            answer_headers = {k.decode().lower(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                finished.set()

    await app(scope, receive, send)
    return status, answer_headers, b"".join(chunks)
