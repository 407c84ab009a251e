"""/api/keys: list by tenant, create (the plaintext is shown once), revoke, rotate.

The services (accounts.services) write each key's audit entries, as they do
for admin and the commands.
"""

from django.http import HttpRequest
from ninja import Router, Status
from ninja.pagination import paginate

from accounts.models import ApiKey
from accounts.services import api_key_issue, api_key_revoke, api_key_rotate
from gateway.manage_api.errors import ManagementError, not_found
from gateway.manage_api.schemas import KeyCreatedOut, KeyIn, KeyOut
from gateway.manage_api.tenants import tenant_get
from gateway.manage_api.writes import audited_write

router = Router(tags=["Keys"])


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
    with audited_write(request) as write:
        tenant = tenant_get(payload.tenant_id)
        plaintext, api_key = api_key_issue(tenant=tenant, **payload.dict(exclude={"tenant_id"}), **write.by)
    return Status(201, _created(plaintext, api_key))


@router.post("/keys/{key_id}/revoke", response=KeyOut)
def keys_revoke(request: HttpRequest, key_id: int) -> ApiKey:
    with audited_write(request) as write:
        return api_key_revoke(api_key=key_get(key_id), **write.by)


@router.post("/keys/{key_id}/rotate", response={201: KeyCreatedOut})
def keys_rotate(request: HttpRequest, key_id: int) -> Status[KeyCreatedOut]:
    """A new key with every setting and budget of the old one; the old one is revoked.

    The key's budgets are copied, not moved: the copies count the new key's
    spending from zero. The tenant's budgets are unaffected.
    """
    with audited_write(request) as write:
        old = key_get(key_id)
        if old.is_revoked:
            raise ManagementError(409, "key_revoked", "A revoked key cannot be rotated; create a new one.")
        plaintext, new = api_key_rotate(api_key=old, **write.by)
    return Status(201, _created(plaintext, new))
