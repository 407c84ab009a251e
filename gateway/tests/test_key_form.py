"""The API key form takes allowed models and tags as plain lists, with a
picker over the catalog's names: typing `fake-gpt, fake/*` is a list, not
"Enter a valid JSON"."""

import json
import re
from typing import Any

import pytest

from accounts.models import ApiKey, Tenant
from accounts.services import api_key_issue
from gateway.model_picker import catalog_names, model_list_field, tag_list_field
from proxy.models import ModelAlias, Route, Router

pytestmark = pytest.mark.django_db

ADD = "/admin/accounts/apikey/add/"


def add_key(admin_client: Any, tenant: Tenant, **fields: str) -> Any:
    return admin_client.post(ADD, {"tenant": tenant.pk, "name": "k", "expires_at": "", **fields}, follow=True)


def test_models_typed_with_commas_are_saved_as_the_list_typed(admin_client: Any) -> None:
    tenant = Tenant.objects.create(slug="typed")
    response = add_key(admin_client, tenant, allowed_models="fake-gpt, fake/*", tags="team a, billing\nnight")
    assert "Enter a valid JSON" not in response.content.decode()
    key = ApiKey.objects.get(tenant=tenant)
    assert (key.allowed_models, key.tags) == (["fake-gpt", "fake/*"], ["team a", "billing", "night"])


def test_models_one_per_line_each_once_and_none_meaning_every_model(admin_client: Any) -> None:
    tenant = Tenant.objects.create(slug="lines")
    add_key(admin_client, tenant, allowed_models="fake-gpt\nfake/*\r\nfake-gpt\n", tags="")
    add_key(admin_client, tenant, allowed_models="  ", tags=" , ")
    listed, every = ApiKey.objects.filter(tenant=tenant).order_by("pk")
    assert listed.allowed_models == ["fake-gpt", "fake/*"]
    assert (every.allowed_models, every.tags) == (None, [])


def test_a_pasted_json_list_still_reads_as_that_list() -> None:
    assert model_list_field().clean('["a", "b/*"]') == ["a", "b/*"]
    assert tag_list_field().clean('["x y"]') == ["x y"]


def test_the_change_form_shows_the_lists_as_text_and_saves_an_edit(admin_client: Any) -> None:
    _, key = api_key_issue(tenant=Tenant.objects.create(slug="edit"), allowed_models=["a", "b/*"], tags=["t1", "t2"])
    page = admin_client.get(f"/admin/accounts/apikey/{key.pk}/change/").content.decode()
    assert re.search(r'<textarea name="allowed_models"[^>]*>\s*a\nb/\*</textarea>', page)
    assert 'name="tags" value="t1, t2"' in page
    form = {"name": key.name, "allowed_models": "a\nc", "tags": "t1, t2", "expires_at": ""}
    for name in ("cache_ttl_seconds", "rpm_limit", "tpm_limit", "max_parallel", "trace_sample_rate"):
        form[name] = ""
    form.update({"budgets-TOTAL_FORMS": "0", "budgets-INITIAL_FORMS": "0"})
    response = admin_client.post(f"/admin/accounts/apikey/{key.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[-2000:]
    key.refresh_from_db()
    assert (key.allowed_models, key.tags) == (["a", "c"], ["t1", "t2"])


def test_unchanged_lists_are_not_an_edit_in_the_audit_trail() -> None:
    field = model_list_field()
    assert not field.has_changed(None, "")
    assert not field.has_changed(["a", "b"], "a, b")
    assert field.has_changed(["a"], "a, b")


def test_the_picker_offers_routes_wildcards_aliases_and_routers_from_the_catalog(admin_client: Any) -> None:
    Route.objects.create(model="fake-gpt")
    Route.objects.create(model="fake/*")
    ModelAlias.objects.create(pattern="big", target_model="fake-gpt")
    Router.objects.create(name="auto", designator="fake-gpt", candidates=["fake-gpt"])
    expected = {("fake-gpt", "route"), ("fake/*", "wildcard"), ("big", "alias"), ("auto", "router")}
    assert expected <= {(n.name, n.kind) for n in catalog_names()}

    page = admin_client.get(ADD).content.decode()
    catalog = re.search(r'<script id="id_allowed_models-catalog" type="application/json">(.*?)</script>', page)
    assert catalog is not None
    assert expected <= {(entry["name"], entry["kind"]) for entry in json.loads(catalog.group(1))}
    assert "gateway/model_picker.js" in page
