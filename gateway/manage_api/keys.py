"""/api/keys: list by tenant, create (the plaintext is shown once), revoke, rotate."""

from django.http import HttpRequest
from ninja import Router, Status
from ninja.pagination import paginate

from accounts.models import ApiKey
from accounts.services import api_key_issue, api_key_revoke
from billing.models import Budget
from billing.services import budget_set
from gateway.manage_api.errors import ManagementError, not_found
from gateway.manage_api.schemas import KeyCreatedOut, KeyIn, KeyOut
from gateway.manage_api.tenants import tenant_get
from gateway.manage_api.writes import Audited, audited_write

router = Router(tags=["Keys"])
# What a rotated key inherits from the key it replaces.
KEY_SETTINGS = (
    "name",
    "allowed_models",
    "tags",
    "expires_at",
    "cache_ttl_seconds",
    "rpm_limit",
    "tpm_limit",
    "max_parallel",
)


def key_get(key_id: int) -> ApiKey:
    api_key = ApiKey.objects.filter(pk=key_id).first()
    if api_key is None:
        raise not_found("key", key_id)
    return api_key


def _created(plaintext: str, api_key: ApiKey) -> KeyCreatedOut:
    return KeyCreatedOut.model_validate({**KeyOut.from_orm(api_key).dict(), "key": plaintext})


@router.get("/keys", response=list[KeyOut])
@paginate
def keys_list(request: HttpRequest, tenant_id: int, include_revoked: bool = False):
    keys = ApiKey.objects.filter(tenant_id=tenant_id).order_by("-created_at", "-id")
    return keys if include_revoked else keys.live()


@router.post("/keys", response={201: KeyCreatedOut})
def keys_create(request: HttpRequest, payload: KeyIn) -> Status[KeyCreatedOut]:
    settings = payload.dict(exclude={"tenant_id"})
    with audited_write(request) as write:
        tenant = tenant_get(payload.tenant_id)
        plaintext, api_key = api_key_issue(tenant=tenant, **settings)
        write.record("key.create", api_key, {"tenant_id": tenant.pk, **settings})
    return Status(201, _created(plaintext, api_key))


@router.post("/keys/{key_id}/revoke", response=KeyOut)
def keys_revoke(request: HttpRequest, key_id: int) -> ApiKey:
    with audited_write(request) as write:
        api_key = key_get(key_id)
        if not api_key.is_revoked:
            api_key_revoke(api_key=api_key)
            write.record("key.revoke", api_key, {"revoked_at": api_key.revoked_at})
    return api_key


@router.post("/keys/{key_id}/rotate", response={201: KeyCreatedOut})
def keys_rotate(request: HttpRequest, key_id: int) -> Status[KeyCreatedOut]:
    """A new key with the old one's settings and budgets; the old one is revoked.

    The key's budgets are copied, not moved: a budget's spend must equal its
    owner's usage (the reconciliation checks it), so the copies count the
    new key's spending from zero. The tenant's budgets are unaffected.
    """
    with audited_write(request) as write:
        old = key_get(key_id)
        if old.is_revoked:
            raise ManagementError(409, "key_revoked", "A revoked key cannot be rotated; create a new one.")
        settings = {name: getattr(old, name) for name in KEY_SETTINGS}
        plaintext, new = api_key_issue(tenant=old.tenant, **settings)
        _copy_budgets(old, new, write)
        api_key_revoke(api_key=old)
        write.record("key.rotate", new, {"replaces": old.pk})
        write.record("key.revoke", old, {"revoked_at": old.revoked_at, "replaced_by": new.pk})
    return Status(201, _created(plaintext, new))


def _copy_budgets(old: ApiKey, new: ApiKey, write: Audited) -> None:
    for budget in Budget.objects.filter(api_key=old, is_active=True):
        copy = budget_set(
            api_key=new, period=budget.period, limit_usd=budget.limit_usd, soft_limit_percent=budget.soft_limit_percent
        )
        write.record("budget.set", copy, {"key_id": new.pk, "period": copy.period, "limit_usd": copy.limit_usd})
