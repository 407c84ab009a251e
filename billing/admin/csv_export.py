"""CSV exports that stream rather than load, and the changelist that offers them.

Money is exported as exact USD strings with nine decimals.
"""

import csv
import datetime as dt
import functools
import itertools
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.core.handlers.asgi import ASGIRequest
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.template import engines
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone

from billing.admin.large_tables import RangeDatesChangeList

CSV_CHUNK_ROWS = 2000


def _text(value: Any) -> Any:
    """Text as is, except that a spreadsheet must not run it as a formula:
    model names and error codes can come from clients or upstreams."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def iso_utc(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat()


@dataclass(frozen=True, slots=True)
class CsvColumn:
    header: str
    lookup: str  # what values_list() fetches
    render: Callable[[Any], Any] = _text


class _Echo:
    """csv.writer writes each row into this, which hands the line back."""

    def write(self, line: str) -> str:
        return line


def csv_lines(columns: Iterable[CsvColumn], rows: Iterable[tuple[Any, ...]]) -> Iterator[str]:
    columns = tuple(columns)
    writer = csv.writer(_Echo())
    yield writer.writerow([column.header for column in columns])
    for row in rows:
        yield writer.writerow([column.render(value) for column, value in zip(columns, row, strict=True)])


async def _in_chunks(lines: Iterator[str]) -> AsyncIterator[str]:
    """Under ASGI Django would buffer a sync iterator whole; this pulls the
    rows a chunk at a time, always in the same worker thread (so on the
    same database connection as the query's cursor)."""

    def take() -> str:
        return "".join(itertools.islice(lines, CSV_CHUNK_ROWS))

    while chunk := await sync_to_async(take, thread_sensitive=True)():
        yield chunk


def csv_response(
    request: HttpRequest, queryset: QuerySet[Any], columns: tuple[CsvColumn, ...], name: str
) -> StreamingHttpResponse:
    rows = queryset.values_list(*(column.lookup for column in columns)).iterator(chunk_size=CSV_CHUNK_ROWS)
    lines = csv_lines(columns, rows)
    content = _in_chunks(lines) if isinstance(request, ASGIRequest) else lines
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}-{timezone.now():%Y%m%d-%H%M%S}.csv"'
    return response


class _FilterOnlyChangeList(ChangeList):
    """The changelist's filters, search and ordering without its page query and counts."""

    def get_results(self, request: HttpRequest) -> None:
        pass


@functools.cache
def _changelist_with_export_button() -> Any:
    # Built from a string, not a template file, so the button lives with the
    # view it calls; `cl.get_query_string` carries the current filters over.
    # `range_dates_cl`, when given, draws the date links (see RangeDates).
    return engines["django"].from_string(
        '{% extends "admin/change_list.html" %}{% load admin_urls admin_list %}'
        "{% block object-tools-items %}"
        '<li><a href="{% url cl.opts|admin_urlname:"export_csv" %}{{ cl.get_query_string }}">Export CSV</a></li>'
        "{{ block.super }}{% endblock %}"
        "{% block date_hierarchy %}{% if range_dates_cl %}{% date_hierarchy range_dates_cl %}"
        "{% else %}{{ block.super }}{% endif %}{% endblock %}"
    )


class CsvExportAdmin(admin.ModelAdmin):
    """An "Export CSV" button (every row the current filters select) and
    action (the rows ticked) on the changelist."""

    csv_columns: tuple[CsvColumn, ...] = ()
    csv_name = "export"
    actions = ["export_csv"]

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}_export_csv"
        return [path("export.csv", self.admin_site.admin_view(self.export_csv_view), name=name), *super().get_urls()]

    def export_csv_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponseBadRequest("Unknown filter in the address.")
        return csv_response(request, changelist.queryset, self.csv_columns, self.csv_name)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        match = request.resolver_match
        if match is not None and match.url_name and match.url_name.endswith("_export_csv"):
            return _FilterOnlyChangeList
        return super().get_changelist(request, **kwargs)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        if isinstance(response, TemplateResponse):
            response.template_name = _changelist_with_export_button()
            changelist = (response.context_data or {}).get("cl")
            if changelist is not None and changelist.date_hierarchy:
                response.context_data["range_dates_cl"] = RangeDatesChangeList(changelist)  # type: ignore[index]  # a dict here (read above); the stubs say it may be None
        return response

    @admin.action(description="Export selected as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse:
        return csv_response(request, queryset, self.csv_columns, self.csv_name)
