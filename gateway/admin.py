"""The admin site, and the pages that show several apps at once.

Tenants and keys are accounts' rows, but their pages show budgets, credit and
usage too, so they are registered here, on the top floor, which may import
every app. Every list column is computed in the list's own queries
(annotations, subqueries, one prefetch), never one query per row. Keys have
no last-used column written on the request path: "last used" is the newest
usage record of the key (the (api_key, created_at) index), or, once
retention has pruned those, the start of its newest hourly rollup.
"""

import datetime as dt
import urllib.parse
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import BigIntegerField, Count, OuterRef, Prefetch, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from accounts.admin import AuditedAdmin
from accounts.admin_filters import TenantFilter
from accounts.models import ApiKey, Tenant
from accounts.services import SEMANTIC_FIELDS, api_key_issue, api_key_revoke, api_key_rotate
from billing.admin.budgets import KeyBudgetInline, TenantBudgetInline
from billing.dashboard import budget_limit_nanos, budgets_with_current_spend
from billing.models import Budget, CreditEntry, UsageRecord, UsageRollup
from gateway.model_picker import model_list_field, tag_list_field

# "View site" would lead to "/", which the gateway does not serve (a 404):
# staff land on the operations dashboard instead.
admin.site.site_url = "/admin/dashboard/"

KEY_SETTINGS = ("cache_ttl_seconds", "rpm_limit", "tpm_limit", "max_parallel", "trace_sample_rate", *SEMANTIC_FIELDS)


def usd_cents(nanos: int) -> str:
    """For lists only: dollars and cents (exact amounts are on the budget and credit pages)."""
    cents = (Decimal(nanos) / 10**9).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return f"${cents:,}"


def _link(viewname: str, label: str, **query: Any) -> str:
    url = reverse(viewname) + ("?" + urllib.parse.urlencode(query) if query else "")
    return format_html('<a href="{}">{}</a>', url, label)


def tenants_with_money(tenants: QuerySet[Tenant], now: dt.datetime) -> QuerySet[Tenant]:
    """Live key count, prepaid balance and the active tenant budgets with
    this period's spend: two queries for a whole page."""
    keys = ApiKey.objects.filter(tenant=OuterRef("pk"), revoked_at__isnull=True).order_by()
    credit = CreditEntry.objects.filter(tenant=OuterRef("pk")).order_by()
    budgets = Budget.objects.filter(is_active=True, tenant__isnull=False).order_by("period", "pk")
    return tenants.annotate(
        live_keys=Coalesce(Subquery(keys.values("tenant").annotate(n=Count("pk")).values("n")), 0),
        balance_nanos=Coalesce(
            Subquery(credit.values("tenant").annotate(t=Sum("amount_nanos")).values("t")),
            0,
            output_field=BigIntegerField(),
        ),
    ).prefetch_related(Prefetch("budgets", budgets_with_current_spend(budgets, now), to_attr="budgets_now"))


@admin.register(Tenant)
class TenantAdmin(AuditedAdmin):
    list_display = [
        "slug",
        "name",
        "is_active",
        "is_prepaid",
        "keys",
        "budgets_this_period",
        "prepaid_balance",
        "created_at",
    ]
    list_filter = ["is_active", "is_prepaid"]
    search_fields = ["slug", "name"]
    readonly_fields = ["money"]
    inlines = [TenantBudgetInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tenant]:
        return tenants_with_money(super().get_queryset(request), timezone.now())

    @admin.display(description="live keys", ordering="live_keys")
    def keys(self, obj: Tenant) -> str:
        return _link("admin:accounts_apikey_changelist", str(obj.live_keys), tenant__id__exact=obj.pk)  # type: ignore[attr-defined]  # annotated by get_queryset

    @admin.display(description="budgets: spent this period of limit")
    def budgets_this_period(self, obj: Tenant) -> str:
        budgets = getattr(obj, "budgets_now", [])
        if not budgets:
            return "-"
        return format_html_join(
            ", ",
            "{} of {} per {}",
            ((usd_cents(b.spent_now_nanos), usd_cents(budget_limit_nanos(b)), b.period) for b in budgets),
        )

    @admin.display(description="prepaid balance", ordering="balance_nanos")
    def prepaid_balance(self, obj: Tenant) -> str:
        balance: int = obj.balance_nanos  # type: ignore[attr-defined]  # annotated by get_queryset
        return usd_cents(balance) if obj.is_prepaid or balance else "-"

    @admin.display(description="money")
    def money(self, obj: Tenant) -> str:
        if obj.pk is None:
            return "-"
        return format_html_join(
            " · ",
            "{}",
            (
                (link,)
                for link in (
                    _link("admin:billing_budget_add", "Add a budget", tenant=obj.pk),
                    _link("admin:billing_creditentry_add", "Add credit", tenant=obj.pk),
                    _link("admin:billing_creditentry_changelist", "Credit entries", q=obj.slug),
                    _link("admin:billing_usagerecord_changelist", "Usage", q=obj.slug),
                )
            ),
        )


class ApiKeyForm(forms.ModelForm):
    """Allowed models and tags as plain lists (commas or lines), with a picker
    over the catalog's model names; stored as the same JSON lists."""

    allowed_models = model_list_field(
        required=False,
        help_text="Model names or patterns such as openai/*, by commas or lines; none means every model.",
    )
    tags = tag_list_field(required=False)

    class Meta:
        model = ApiKey
        fields = "__all__"


class ApiKeyAddForm(ApiKeyForm):
    class Meta:
        model = ApiKey
        fields = ["tenant", "name", "allowed_models", "tags", "expires_at", *KEY_SETTINGS]


def keys_with_last_use(keys: QuerySet[ApiKey]) -> QuerySet[ApiKey]:
    """`last_used_at`: the newest usage record, else the newest hourly rollup
    (records are pruned after a while; rollups are kept). PostgreSQL stops
    at the first subquery that answers."""
    record = UsageRecord.objects.filter(api_key=OuterRef("pk")).order_by("-created_at").values("created_at")[:1]
    rollup = (
        UsageRollup.objects.filter(
            tenant=OuterRef("tenant"), granularity=UsageRollup.Granularity.HOUR, api_key=OuterRef("pk")
        )
        .order_by("-bucket_start")
        .values("bucket_start")[:1]
    )
    return keys.annotate(last_used_at=Coalesce(Subquery(record), Subquery(rollup)))


@admin.register(ApiKey)
class ApiKeyAdmin(AuditedAdmin):
    list_display = ["prefix", "name", "tenant", "last_used", "expires_at", "revoked_at", "created_at"]
    list_filter = ["revoked_at", TenantFilter]
    list_select_related = ["tenant"]
    search_fields = ["prefix", "name", "tenant__slug"]
    # The tenant is fixed once issued: usage, budgets and rollups hang on it.
    readonly_fields = ["tenant", "prefix", "last_used", "created_at", "revoked_at"]
    fields = [
        "tenant",
        "name",
        "prefix",
        "allowed_models",
        "tags",
        "expires_at",
        *KEY_SETTINGS,
        "last_used",
        "revoked_at",
        "created_at",
    ]
    actions = ["revoke", "rotate"]
    inlines = [KeyBudgetInline]
    audit_name = "key"
    form = ApiKeyForm

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiKey]:
        return keys_with_last_use(super().get_queryset(request))

    def get_inlines(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.inlines if obj is not None else []

    @admin.display(description="last used", ordering="last_used_at")
    def last_used(self, obj: ApiKey) -> Any:
        return getattr(obj, "last_used_at", None) or "never"

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ApiKeyAddForm
            kwargs["fields"] = ApiKeyAddForm.Meta.fields
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields if obj is not None else []

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.fields if obj is not None else ApiKeyAddForm.Meta.fields

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        plaintext, issued = api_key_issue(
            tenant=obj.tenant,
            name=obj.name,
            allowed_models=obj.allowed_models,
            expires_at=obj.expires_at,
            tags=obj.tags or (),
            actor=_user(request),
            **{name: getattr(obj, name) for name in KEY_SETTINGS},
        )
        obj.pk = issued.pk
        obj.prefix, obj.digest = issued.prefix, issued.digest
        request._issued_keys = [IssuedKey(plaintext, issued)]  # type: ignore[attr-defined]  # for response_add

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None) -> HttpResponse:
        issued = getattr(request, "_issued_keys", None)
        if issued is None:
            return super().response_add(request, obj, post_url_continue)
        return self._keys_shown(request, "New key", issued)

    def _keys_shown(
        self, request: HttpRequest, title: str, issued: list["IssuedKey"], skipped: bool = False
    ) -> TemplateResponse:
        """The page that shows new plaintexts: in the response body only, never in the messages
        cookie (signed, not encrypted), and never cached."""
        context = {**self.admin_site.each_context(request), "title": title, "issued": issued, "skipped": skipped}
        response = TemplateResponse(request, "admin/accounts/apikey/key_shown.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for api_key in queryset:
            api_key_revoke(api_key=api_key, actor=_user(request))
        self.message_user(request, f"Revoked {queryset.count()} key(s).")

    @admin.action(description="Rotate selected keys (a new key, same settings; the old one revoked)")
    def rotate(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> TemplateResponse | None:
        live = list(queryset.filter(revoked_at__isnull=True).select_related("tenant"))
        if not live:
            messages.info(request, "Keys revoked earlier were left as they are.")
            return None
        issued = []
        with transaction.atomic():
            for api_key in live:
                plaintext, new_key = api_key_rotate(api_key=api_key, actor=_user(request))
                issued.append(IssuedKey(plaintext, new_key, replaces=str(api_key)))
        return self._keys_shown(request, "Rotated keys", issued, skipped=len(live) < len(queryset))


@dataclass(frozen=True)
class IssuedKey:
    plaintext: str
    key: ApiKey
    replaces: str = ""


def _user(request: HttpRequest) -> Any:
    """The signed-in staff user (admin lets in no one else), for the audit trail."""
    return request.user
