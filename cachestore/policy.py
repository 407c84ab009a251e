"""When the cache is asked, and what the client allowed. Pure.

Off unless the key (or its tenant) has a cache lifetime, or the request came
through one of the /cache/... paths. Per request, `Cache-Control`:
`no-cache` skips the lookup and refreshes the entry, `no-store` does not
write one, `max-age=N` accepts only entries younger than N seconds.
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CachePolicy:
    lookup: bool
    write: bool
    ttl_seconds: int
    max_age: float | None = None


def cache_policy(*, key_ttl_seconds: int, cache_control: str, forced: bool, default_ttl: int) -> CachePolicy | None:
    """None when the cache is not asked at all (the response says bypass)."""
    ttl = key_ttl_seconds or (default_ttl if forced else 0)
    if ttl <= 0:
        return None
    directives = _directives(cache_control)
    policy = CachePolicy(
        lookup="no-cache" not in directives,
        write="no-store" not in directives,
        ttl_seconds=ttl,
        max_age=_max_age(directives.get("max-age")),
    )
    return policy if policy.lookup or policy.write else None


def _directives(header: str) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name:
            found[name.lower()] = value.strip().strip('"') or None
    return found


def _max_age(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None
