"""Prices in the admin: each model's rows are its price history."""

import urllib.parse

from django.contrib import admin
from django.db.models import Count, Exists, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from billing.models import Price

_SOURCE_BADGE_STYLE = {
    Price.Source.MANUAL: "background:#E69F00;color:#000",
    Price.Source.SYNC: "background:#0072B2;color:#fff",
}


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
    list_display = [
        "model",
        "provider",
        "input_usd_per_mtok",
        "cached_input_usd_per_mtok",
        "output_usd_per_mtok",
        "effective_from",
        "in_force",
        "source_badge",
        "history",
    ]
    list_filter = ["source", "provider", "effective_from"]
    list_select_related = ["provider"]
    search_fields = ["model"]
    search_help_text = "A model name: its rows, newest first, are its price history."
    date_hierarchy = "effective_from"
    autocomplete_fields = ["provider"]
    readonly_fields = ["created_at", "history"]
    fieldsets = [
        (
            None,
            {
                "description": (
                    "To change a price, add a row with a later 'effective from' instead of editing this one: "
                    "past usage stays priced at the rate that applied then. Rows whose source is 'Price sync' "
                    "are written by the nightly sync, which may add newer rows for the same model."
                ),
                "fields": ["model", "provider", "effective_from", "source", "created_at", "history"],
            },
        ),
        (
            "Rates, USD per million tokens",
            {
                "fields": [
                    "input_usd_per_mtok",
                    "cached_input_usd_per_mtok",
                    "cache_write_5m_usd_per_mtok",
                    "cache_write_1h_usd_per_mtok",
                    "output_usd_per_mtok",
                    "reasoning_usd_per_mtok",
                    "audio_input_usd_per_mtok",
                    "audio_output_usd_per_mtok",
                    "image_input_usd_per_mtok",
                    "image_output_usd_per_mtok",
                    "input_usd_per_second",
                    "input_usd_per_character",
                    "output_usd_per_image",
                    "request_fee_usd",
                    "max_output_tokens",
                ]
            },
        ),
        (
            "Long context",
            {
                "classes": ["collapse"],
                "fields": [
                    "long_context_threshold",
                    "long_input_usd_per_mtok",
                    "long_cached_input_usd_per_mtok",
                    "long_cache_write_5m_usd_per_mtok",
                    "long_cache_write_1h_usd_per_mtok",
                    "long_output_usd_per_mtok",
                ],
            },
        ),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Price]:
        # Both from the (model, effective_from) index, per row of the page.
        same_model = Price.objects.filter(model=OuterRef("model")).order_by()
        rows = same_model.values("model").annotate(n=Count("pk")).values("n")
        # Coalesce: "any provider" is NULL, and NULL never equals NULL.
        newer_in_force = same_model.alias(owner=Coalesce("provider_id", 0)).filter(
            owner=Coalesce(OuterRef("provider_id"), 0),
            effective_from__gt=OuterRef("effective_from"),
            effective_from__lte=timezone.now(),
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                history_rows=Subquery(rows, output_field=IntegerField()),
                superseded=Exists(newer_in_force),
            )
        )

    @admin.display(description="in force", boolean=True)
    def in_force(self, obj: Price) -> bool:
        """The row that prices new requests now: started, and no later row has."""
        return obj.effective_from <= timezone.now() and not getattr(obj, "superseded", False)

    @admin.display(description="source", ordering="source")
    def source_badge(self, obj: Price) -> str:
        return format_html(
            '<span style="{};padding:1px 6px;border-radius:8px;font-size:11px;white-space:nowrap">{}</span>',
            _SOURCE_BADGE_STYLE.get(obj.source, ""),
            obj.get_source_display(),
        )

    @admin.display(description="history")
    def history(self, obj: Price) -> str:
        if obj.pk is None:
            return "-"
        url = reverse("admin:billing_price_changelist") + "?" + urllib.parse.urlencode({"model": obj.model})
        rows = getattr(obj, "history_rows", None) or Price.objects.filter(model=obj.model).count()
        return format_html('<a href="{}">all {} rows of {}</a>', url, rows, obj.model)
