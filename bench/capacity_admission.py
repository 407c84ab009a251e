"""What an admission under a deployment's upstream limits costs (proxy.capacity).

    REDIS_URL=redis://127.0.0.1:6379/14 python -m bench.capacity_admission

Times `pick` in this process's memory and, when REDIS_URL is set, in Redis
(one script call: the round trip plus the script), for one limited
candidate and for a full one followed by one with room (both checked in
the same call). Keys are written under a namespace of their own and
deleted at the end.
"""

import asyncio
import os
import time
import uuid

ROUNDS = 2000


async def _timed(limiter: object, order: list[tuple[object, str]]) -> float:
    pick = limiter.pick  # type: ignore[attr-defined]
    for _ in range(100):  # warm: connections, the script cache
        await pick(order, 10)
    started = time.perf_counter()
    for _ in range(ROUNDS):
        await pick(order, 10)
    return (time.perf_counter() - started) / ROUNDS * 1e6


async def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
    import django

    django.setup()
    from django.conf import settings

    from gateway.kernel.context import ProviderConfig, RouteTarget
    from proxy.capacity import capacity_key
    from proxy.capacity_redis import RedisCapacity
    from proxy.capacity_windows import LocalCapacity

    settings.REDIS_KEY_PREFIX = f"bench-capacity-{uuid.uuid4().hex[:8]}"
    provider = ProviderConfig(name="p", kind="openai", base_url="http://127.0.0.1:9/v1")

    def order(*limits: int) -> list[tuple[object, str]]:
        targets = [
            RouteTarget(public_model="m", provider=provider, upstream_model="u", price=None, deployment_id=n, rpm=rpm)
            for n, rpm in enumerate(limits, start=int(time.time()))
        ]
        return [(t, str(capacity_key(t))) for t in targets]

    limiters: list[tuple[str, object]] = [("in memory", LocalCapacity())]
    if os.environ.get("REDIS_URL"):
        limiters.append(("Redis", RedisCapacity()))
    for name, limiter in limiters:
        one = await _timed(limiter, order(10**7))
        full_then_room = order(1, 10**7)
        await limiter.pick(full_then_room[:1], 1)  # type: ignore[attr-defined]
        two = await _timed(limiter, full_then_room)
        print(f"{name}: {one:.0f} µs per admission; {two:.0f} µs when the first candidate is full")
    if os.environ.get("REDIS_URL"):
        import redis

        client = redis.Redis.from_url(os.environ["REDIS_URL"])
        for key in client.scan_iter(settings.REDIS_KEY_PREFIX + ":*"):
            client.delete(key)


if __name__ == "__main__":
    asyncio.run(main())
