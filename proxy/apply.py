"""`gateway_apply`: providers, routes and prices from one declarative file.

The whole file is checked first, then applied in one transaction: either
every entry lands or none does. Applying the same file twice changes nothing.
"""

from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from django.db import transaction

from billing.services import PRICE_RATE_OPTIONS, price_set
from gateway import cli
from proxy.models import Provider
from proxy.services import provider_upsert, route_upsert


class ApplyError(Exception):
    """The file is invalid; nothing was applied."""


def _entries(doc: dict[str, Any], section: str, required: tuple[str, ...]) -> list[dict[str, Any]]:
    items = doc.get(section) or []
    if not isinstance(items, list):
        raise ApplyError(f"'{section}' must be a list")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ApplyError(f"{section}[{index}] must be a mapping")
        missing = [field for field in required if not item.get(field)]
        if missing:
            raise ApplyError(f"{section}[{index}] is missing {', '.join(missing)}")
    return items


def config_load(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ApplyError(f"cannot read {path}: {exc}") from None
    if not isinstance(doc, dict):
        raise ApplyError("the file must be a mapping with providers, routes and prices")
    unknown = set(doc) - {"providers", "routes", "prices"}
    if unknown:
        raise ApplyError(f"unknown sections: {', '.join(sorted(unknown))}")
    return doc


@transaction.atomic
def config_apply(doc: dict[str, Any]) -> Counter[str]:
    """Apply a loaded file; returns counts such as {'provider saved': 1}."""
    counts: Counter[str] = Counter()
    for item in _entries(doc, "providers", ("name", "base_url")):
        if item.get("api_key") and item.get("api_key_env"):
            raise ApplyError(f"provider {item['name']}: set api_key or api_key_env, not both")
        try:
            _, changed = provider_upsert(
                name=item["name"],
                kind=item.get("kind", "openai"),
                base_url=item["base_url"],
                api_key=item.get("api_key"),
                api_key_env=item.get("api_key_env", "" if item.get("api_key") is None else None),
            )
        except ValueError as exc:
            raise ApplyError(f"provider {item['name']}: {exc}") from None
        counts["provider " + ("saved" if changed else "unchanged")] += 1
    for item in _entries(doc, "routes", ("model", "provider")):
        _, changed = route_upsert(
            model=item["model"], provider=_provider(item["provider"]), upstream_model=item.get("upstream_model", "")
        )
        counts["route " + ("saved" if changed else "unchanged")] += 1
    for item in _entries(doc, "prices", ("model",)):
        counts["price " + ("set" if _apply_price(item) else "unchanged")] += 1
    return counts


_PRICE_KEYS = {"model", "provider", "input", "output", "cached_input", "long_context_threshold", "request_fee",
               "max_output_tokens", *PRICE_RATE_OPTIONS}  # fmt: skip


def _apply_price(item: dict[str, Any]) -> bool:
    unknown = set(item) - _PRICE_KEYS
    if unknown:
        raise ApplyError(f"price {item['model']}: unknown fields {', '.join(sorted(unknown))}")
    try:
        optional: dict[str, Any] = {
            field: cli.usd(item[name]) for name, field in PRICE_RATE_OPTIONS.items() if item.get(name) is not None
        }
        if item.get("request_fee") is not None:
            optional["request_fee_usd"] = cli.usd(item["request_fee"])
        for name in ("long_context_threshold", "max_output_tokens"):
            if item.get(name) is not None:
                optional[name] = int(item[name])
        _, changed = price_set(
            model=item["model"],
            input_usd=cli.usd(item["input"]),
            output_usd=cli.usd(item["output"]),
            cached_input_usd=cli.usd(item["cached_input"]) if item.get("cached_input") is not None else None,
            provider=_provider(item["provider"]) if item.get("provider") else None,
            **optional,
        )
    except KeyError as exc:
        raise ApplyError(f"price {item['model']}: missing {exc.args[0]}") from None
    except Exception as exc:  # CommandError from cli.usd, ValueError from price_set
        raise ApplyError(f"price {item['model']}: {exc}") from None
    return changed


def _provider(name: str) -> Provider:
    provider = Provider.objects.filter(name=name).first()
    if provider is None:
        raise ApplyError(f"unknown provider {name!r} (declare it under providers)")
    return provider
