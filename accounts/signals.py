"""Tell every process when something the request path caches has changed."""

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from django.db import transaction
from django.db.models import F, Model
from django.db.models.signals import post_delete, post_save
from django.dispatch import Signal

from accounts import snapshots
from accounts.models import ApiKey, ConfigVersion, Tenant

_batching = threading.local()

# Sent inside a key's rotation (accounts.services.api_key_rotate) with
# old=, new=, actor= and request_id=: what other apps hang on a key
# (billing's budgets) follows it to the new one.
api_key_rotated = Signal()


def config_version_bump() -> None:
    """Bump the shared counter (other processes) and drop local snapshots now."""
    if getattr(_batching, "depth", 0):
        _batching.dirty = True
        return
    if not ConfigVersion.objects.filter(pk=1).update(version=F("version") + 1):
        ConfigVersion.objects.get_or_create(pk=1, defaults={"version": 1})
    transaction.on_commit(snapshots.invalidate_all)


@contextlib.contextmanager
def config_changes_batched() -> Iterator[None]:
    """Bump once for every change made inside (a price sync saves thousands
    of rows; the other processes need to reload once, not thousands of times)."""
    _batching.depth = getattr(_batching, "depth", 0) + 1
    try:
        yield
    finally:
        _batching.depth -= 1
        if not _batching.depth and getattr(_batching, "dirty", False):
            _batching.dirty = False
            config_version_bump()


def _changed(sender: type[Model], **kwargs: Any) -> None:
    if kwargs.get("raw"):  # loaddata
        return
    config_version_bump()


def watch(*models: type[Model]) -> None:
    """Invalidate snapshots whenever a row of these models is saved or deleted."""
    for model in models:
        uid = f"config-version-{model._meta.label}"
        post_save.connect(_changed, sender=model, dispatch_uid=uid + "-save")
        post_delete.connect(_changed, sender=model, dispatch_uid=uid + "-delete")


watch(Tenant, ApiKey)
