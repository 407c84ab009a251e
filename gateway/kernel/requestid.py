"""Every /v1 request gets an id: in the `x-request-id` header and the ledger."""

import uuid

from django.http import HttpRequest

from gateway.kernel.context import PREPARED_SCOPE_KEY

_ATTRIBUTE = "gateway_request_id"


def request_id_for(request: HttpRequest) -> str:
    request_id = getattr(request, _ATTRIBUTE, None)
    if request_id is None:
        prepared = getattr(request, "scope", {}).get(PREPARED_SCOPE_KEY)  # the cache lane named it already
        request_id = new_request_id() if prepared is None else prepared.request_id
        setattr(request, _ATTRIBUTE, request_id)
    return request_id


def new_request_id() -> str:
    return "req_" + uuid.uuid4().hex
