"""gateway_apply's `augmentors:` section (proxy.apply): the file's augmentors
exactly, the others removed, checked against the routes and aliases as the
file left them."""

from collections import Counter
from typing import Any

from accounts.audit import AuditActor
from proxy.augmentor_services import AUGMENTOR_FIELDS, AugmentorSpec, augmentor_upsert, augmentors_prune
from proxy.catalog_loader import catalog_load

KEYS = {"name", *AUGMENTOR_FIELDS}


def augmentors_apply(items: list[dict[str, Any]], actor: AuditActor) -> Counter[str]:
    """Raises ValueError (the caller's ApplyError) for an entry that cannot be applied."""
    counts: Counter[str] = Counter()
    names = [str(item["name"]) for item in items]
    if len(set(names)) != len(names):
        raise ValueError("an augmentor name is listed twice")
    removed = augmentors_prune(keep=names, actor=actor)
    if removed:
        counts["augmentor removed"] = removed
    catalog = catalog_load() if items else None
    for item in items:
        unknown = set(item) - KEYS
        if unknown:
            raise ValueError(f"augmentor {item['name']}: unknown fields {', '.join(sorted(unknown))}")
        spec = AugmentorSpec(**{key: value for key, value in item.items() if value is not None})
        for text in ("name", "designator", "target", "search_provider", "purpose"):
            if not isinstance(getattr(spec, text), str):
                raise ValueError(f"augmentor {item['name']}: {text} must be text")
        _, changed = augmentor_upsert(spec, actor=actor, catalog=catalog)
        counts["augmentor " + ("saved" if changed else "unchanged")] += 1
    return counts
