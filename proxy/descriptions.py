"""Route descriptions from the model lists that have them (descriptions_sync).

Smart routers' designators read each candidate's description; a designator
trained before a model came out knows it only from there. Empty descriptions
are filled, first from the model list of a provider that serves the route
(GET {base_url}/models, where its entries carry a `description`, as
OpenRouter's and some OpenAI-compatible servers' do), then from OpenRouter's
public list of every model it offers. A description staff wrote is never
replaced.
"""

import logging
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from django.db import transaction

from accounts.audit import AuditActor, audit
from accounts.signals import config_changes_batched
from gateway.kernel.context import ProviderConfig
from proxy.models import Provider, Route
from proxy.providers.registry import adapter_for
from proxy.routing import price_names

log = logging.getLogger(__name__)
_MAX_BYTES = 64 * 1024 * 1024  # OpenRouter's list is a few MB
_MAX_DESCRIPTION = 2000  # a designator reads every candidate's: keep each short


class DescriptionsError(Exception):
    """The model list could not be read (nothing was changed)."""


@dataclass
class SyncReport:
    filled: dict[str, str] = field(default_factory=dict)  # route -> where its description came from
    unmatched: list[str] = field(default_factory=list)  # empty routes no list describes
    provider_errors: dict[str, str] = field(default_factory=dict)  # provider -> what went wrong


def models_read(*, file: Path | None = None, url: str = "", timeout: float = 30.0) -> list[dict[str, Any]]:
    """The `data` entries of a model list (OpenRouter's JSON), from a saved
    file or downloaded."""
    try:
        raw = file.read_bytes() if file is not None else _get(url, {}, timeout)
        doc = orjson.loads(raw)
    except (OSError, orjson.JSONDecodeError, urllib.error.URLError, ValueError) as exc:
        raise DescriptionsError(f"cannot read the model list from {file or url}: {exc}") from None
    entries = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise DescriptionsError(f"the model list at {file or url} has no 'data' list")
    return [e for e in entries if isinstance(e, dict)]


def _get(url: str, headers: dict[str, str], timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": "application/json", **headers})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data = response.read(_MAX_BYTES + 1)
    if len(data) > _MAX_BYTES:
        raise ValueError(f"larger than {_MAX_BYTES} bytes")
    return bytes(data)


def description_index(entries: Iterable[dict[str, Any]]) -> dict[str, str]:
    """Description by model name: each entry's exact id first, then the
    variants prices are matched by (routing.price_names: no provider prefix,
    no dated suffix, lower case) and with dots as dashes (`claude-3.5-haiku`
    is `claude-3-5-haiku`). An id with a `:variant` (`:free`) is matched exactly only."""
    described = [(str(e["id"]), _clean(e.get("description"))) for e in entries if isinstance(e.get("id"), str)]
    described = [(model, text) for model, text in described if text]
    index: dict[str, str] = {}
    for model, text in described:
        index.setdefault(model, text)
    for model, text in described:
        if ":" not in model:
            for name in _variants(model):
                index.setdefault(name, text)
    return index


def _variants(model: str) -> list[str]:
    names = [model, *price_names(model)]
    return list(dict.fromkeys([*names, *(name.replace(".", "-") for name in names)]))


def _clean(text: Any) -> str:
    return " ".join(text.split())[:_MAX_DESCRIPTION] if isinstance(text, str) else ""


def describe(names: Iterable[str], index: dict[str, str]) -> str:
    """The first description any of `names` (or a variant) has; "" if none."""
    names = list(names)
    for name in names:
        if name in index:
            return index[name]
    for name in names:
        for variant in _variants(name):
            if variant in index:
                return index[variant]
    return ""


def provider_index(provider: Provider, *, timeout: float = 10.0) -> dict[str, str]:
    """Descriptions from the provider's own model list (exact ids); {} for
    a kind whose list has none (its protocol's adapter says: Anthropic's, Azure's)."""
    config = ProviderConfig(provider.name, provider.kind, provider.base_url, provider.resolve_api_key())
    endpoint = adapter_for(provider.kind).model_list_endpoint(config)
    if endpoint is None:
        return {}
    url, headers = endpoint
    raw = _get(url, headers, timeout)
    doc = orjson.loads(raw)
    entries = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        return {}
    return {
        str(e["id"]): text
        for e in entries
        if isinstance(e, dict) and isinstance(e.get("id"), str) and (text := _clean(e.get("description")))
    }


def descriptions_sync(*, entries: list[dict[str, Any]], providers: bool = True, actor: AuditActor = None) -> SyncReport:
    """Fill every empty description of a concrete (not wildcard) route:
    first from its providers' model lists (when `providers`), then from
    `entries` (OpenRouter's list), matching the route's name and its deployments'
    upstream names (also as `<kind>/<upstream>`) the way prices are matched."""
    report = SyncReport()
    routes = [r for r in Route.objects.filter(description="").prefetch_related("deployments__provider")]
    routes = [r for r in routes if not r.is_wildcard]
    by_provider = _provider_indexes(routes, report) if providers else {}
    index = description_index(entries)
    with transaction.atomic(), config_changes_batched():  # every process reloads once
        for route in routes:
            text, source = _description_for(route, by_provider, index)
            # Read again, locked: a description written meanwhile is kept.
            fresh = Route.objects.select_for_update().filter(pk=route.pk, description="").first()
            if fresh is None:
                continue
            if not text:
                report.unmatched.append(route.model)
                continue
            fresh.description = text
            fresh.save(update_fields=["description", "updated_at"])
            audit(actor, "route.describe", fresh, {"model": fresh.model, "source": source})
            report.filled[fresh.model] = source
    return report


def _description_for(route: Route, by_provider: dict[int, dict[str, str]], index: dict[str, str]) -> tuple[str, str]:
    deployments = sorted(route.deployments.all(), key=lambda d: (d.priority, d.pk))
    for deployment in deployments:
        found = by_provider.get(deployment.provider_id, {}).get(deployment.upstream_model or route.model)
        if found:
            return found, deployment.provider.name
    names = [route.model]
    for deployment in deployments:
        upstream = deployment.upstream_model or route.model
        names += [upstream, f"{deployment.provider.kind}/{upstream}"]
    text = describe(dict.fromkeys(names), index)
    return text, "openrouter" if text else ""


def _provider_indexes(routes: list[Route], report: SyncReport) -> dict[int, dict[str, str]]:
    """The model lists of the active providers that serve these routes;
    one that cannot be read is reported and skipped."""
    providers = {d.provider_id: d.provider for r in routes for d in r.deployments.all() if d.provider.is_active}
    found: dict[int, dict[str, str]] = {}
    for pk, provider in providers.items():
        try:
            found[pk] = provider_index(provider, timeout=provider.connect_timeout or 10.0)
        except Exception as exc:  # unreachable, refused, not JSON: the public list still serves
            report.provider_errors[provider.name] = type(exc).__name__
            log.info("descriptions_sync: %s's model list cannot be read (%s)", provider.name, type(exc).__name__)
    return found
