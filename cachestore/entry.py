"""What the cache stores for one answer, and how it is written to bytes.

An entry holds the answer as one JSON body (assembled from the chunks when
it was streamed) and, for a streamed answer, the SSE events as they came,
so a later streaming request gets the same stream back. It also keeps the
usage and the cost of producing it: a hit is billed at zero and records
that cost as saved, and the request it answers, which cache_warmup
--save-popular writes out for another deployment's warmup.
"""

import zlib
from dataclasses import dataclass, field

import orjson

from gateway.kernel.context import Usage

COMPRESS_ABOVE_BYTES = 1024  # smaller payloads do not shrink enough to pay for it
_ZLIB = b"z"
_RAW = b"r"


@dataclass(frozen=True)
class CachedEntry:
    tenant_id: int
    key: str  # cachestore.keys.cache_key: already scoped to the tenant
    endpoint: str  # "chat.completions", "embeddings", ...
    model: str  # the public model name the entry answers for
    body: bytes  # the JSON answer, as a non-streaming client gets it
    usage: Usage
    cost_nanos: int
    created_at: float  # time.time()
    expires_at: float
    events: tuple[bytes, ...] | None = None  # the SSE events of a streamed answer
    price_id: int | None = None
    content_type: str = field(default="application/json")
    request: bytes | None = None  # the client's request body (JSON); None in entries stored before it was kept

    def age(self, now: float) -> float:
        return now - self.created_at

    def is_fresh(self, now: float) -> bool:
        return now < self.expires_at


def entry_dumps(entry: CachedEntry) -> bytes:
    """Bytes for a backend: a one-byte marker, then JSON (zlib when large)."""
    data = orjson.dumps(
        {
            "tenant_id": entry.tenant_id,
            "key": entry.key,
            "endpoint": entry.endpoint,
            "model": entry.model,
            "body": entry.body.decode(),
            "usage": entry.usage,
            "cost_nanos": entry.cost_nanos,
            "created_at": entry.created_at,
            "expires_at": entry.expires_at,
            "price_id": entry.price_id,
            "content_type": entry.content_type,
            "events": None if entry.events is None else [e.decode() for e in entry.events],
            "request": None if entry.request is None else entry.request.decode(),
        }
    )
    if len(data) > COMPRESS_ABOVE_BYTES:
        return _ZLIB + zlib.compress(data, 6)
    return _RAW + data


def entry_loads(raw: bytes) -> CachedEntry:
    marker, data = raw[:1], raw[1:]
    doc = orjson.loads(zlib.decompress(data) if marker == _ZLIB else data)
    events = doc.pop("events")
    request = doc.pop("request", None)
    return CachedEntry(
        **{**doc, "body": doc["body"].encode(), "usage": Usage(**doc["usage"])},
        events=None if events is None else tuple(e.encode() for e in events),
        request=None if request is None else request.encode(),
    )
