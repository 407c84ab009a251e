"""GET /v1/cache/stats and POST /v1/cache/purge: a key's view of its tenant's response cache.

Both act on the calling key's tenant only. Money is a string with exactly
nine decimals, as in /v1/usage. Hits and saved cost count all time; misses
count the raw usage records still kept (BILLING_USAGE_RETENTION_DAYS), see
`cachestore.services.cache_usage`.
"""

from django.http import HttpRequest, JsonResponse
from ninja import Router

from accounts.auth import ApiKeyAuth
from billing.pricing import usd_string
from cachestore.services import cache_purge, cache_stats
from gateway.kernel.context import caller

router = Router(auth=ApiKeyAuth(), tags=["Cache"])


@router.get("/cache/stats", summary="What the response cache holds for this key's tenant, and what it saved")
async def stats(request: HttpRequest) -> JsonResponse:
    ctx = caller(request)
    found = await cache_stats(ctx.tenant_id)
    return JsonResponse(
        {
            "object": "cache.stats",
            "entries": found["entries"],
            "size_bytes": found["size_bytes"],
            "hits": found["hits"],
            "misses": found["misses"],
            "saved_usd": usd_string(found["saved_nanos"]),
        }
    )


@router.post("/cache/purge", summary="Delete every cached answer of this key's tenant")
async def purge(request: HttpRequest) -> JsonResponse:
    ctx = caller(request)
    return JsonResponse({"object": "cache.purge", "purged": await cache_purge(ctx.tenant_id)})
