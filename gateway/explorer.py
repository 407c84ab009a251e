"""The request explorer's last step: one request's trace, its prompt and
its answer side by side, next to its usage record.

On the top floor because it joins three apps: the usage record (billing),
the trace rows (accounts, TRACE_SINK=db) and the trace day files
(proxy.tracing, TRACE_SINK=file). Staff need to see usage records and
request traces both: a trace is a request's usage, and its bodies.
"""

import datetime as dt
import json
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse

from accounts.traces import request_trace_find
from billing.models import UsageRecord
from billing.pricing import usd_string
from billing.usage_filters import usage_list_url
from gateway.trace_text import answer_text, prompt_turns
from proxy.tracing import trace_find_in_files

PERMISSIONS = ("billing.view_usagerecord", "accounts.view_requesttrace")


def trace_find(request_id: str, recorded_at: dt.datetime | None) -> dict[str, Any] | None:
    """The stored row, else the day file of the request's start (the day it
    was recorded, or the day before when it ran over midnight)."""
    found = request_trace_find(request_id)
    if found is None and recorded_at is not None:
        day = recorded_at.astimezone(dt.UTC).date()
        found = trace_find_in_files(request_id, [day, day - dt.timedelta(days=1)])
    return found


def request_trace_view(request: HttpRequest, request_id: str) -> TemplateResponse:
    if not all(request.user.has_perm(permission) for permission in PERMISSIONS):
        raise PermissionDenied
    record = UsageRecord.objects.select_related("tenant", "api_key").filter(request_id=request_id).first()
    trace = trace_find(request_id, record.created_at if record else None)
    if record is None and trace is None:
        raise Http404("No usage record or trace has this request id.")
    context = {
        **admin.site.each_context(request),
        "title": f"Request {request_id}",
        "request_id": request_id,
        "record": record,
        "summary": _summary(record) if record else [],
        "record_url": reverse("admin:billing_usagerecord_change", args=[record.pk]) if record else "",
        "key_url": usage_list_url(key=record.api_key.prefix) if record else "",
        "trace": trace,
        "prompt": prompt_turns(trace.get("request")) if trace else [],
        "answer": answer_text(trace.get("response")) if trace else "",
        "augmentation": augmentation_steps(trace.get("augmentation")) if trace else [],
        "raw": {name: json.dumps(trace.get(name), indent=2, ensure_ascii=False) for name in ("request", "response")}
        if trace
        else {},
    }
    response = TemplateResponse(request, "admin/request_trace.html", context)
    response["Cache-Control"] = "no-store"  # prompts are the tenant's data
    return response


def augmentation_steps(steps: Any) -> list[dict[str, str]]:
    """An augmentor's steps as the page lists them: the step, its other
    fields in one line, and the text it added to the prompt (if any)."""
    shown = []
    for step in steps if isinstance(steps, list) else ():
        if not isinstance(step, dict):
            continue
        fields = ", ".join(f"{name}: {value}" for name, value in step.items() if name not in ("step", "text"))
        shown.append({"step": str(step.get("step", "")), "fields": fields, "text": str(step.get("text") or "")})
    return shown


def _summary(record: UsageRecord) -> list[tuple[str, str]]:
    return [
        ("time (UTC)", record.created_at.astimezone(dt.UTC).isoformat(sep=" ", timespec="milliseconds")),
        ("tenant", record.tenant.slug),
        ("key", record.api_key.prefix),
        ("model", record.public_model + (f" → {record.provider}/{record.upstream_model}" if record.provider else "")),
        ("status", f"{record.status_code} {record.error_code}".strip()),
        ("tokens in / out", f"{record.input_tokens + record.cached_input_tokens:,} / {record.output_tokens:,}"),
        ("cost (USD)", usd_string(record.cost_nanos)),
        ("latency", f"{record.latency_ms:,} ms" + (f" (first token {record.ttft_ms:,} ms)" if record.ttft_ms else "")),
    ]
