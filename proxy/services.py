"""Writes for providers and routes (admin, commands and gateway_apply)."""

from django.db import transaction

from proxy.models import Provider, Route


@transaction.atomic
def provider_upsert(
    *, name: str, kind: str, base_url: str, api_key: str | None = None, api_key_env: str | None = None
) -> tuple[Provider, bool]:
    """Create or update a provider; returns (provider, changed).

    A stored key and an environment variable are exclusive: setting one
    clears the other, so the credential used is never ambiguous.
    """
    if kind not in Provider.Kind.values:
        raise ValueError(f"unknown provider kind {kind!r}; expected one of {', '.join(Provider.Kind.values)}")
    provider = Provider.objects.filter(name=name).first() or Provider(name=name)
    before = (provider.kind, provider.base_url, provider.api_key_env, provider.api_key_encrypted)
    provider.kind, provider.base_url = kind, base_url.rstrip("/")
    if api_key_env is not None:
        provider.api_key_env = api_key_env
        provider.set_api_key("")
    if api_key is not None:
        if provider.resolve_api_key() != api_key or provider.api_key_env:
            provider.set_api_key(api_key)
        provider.api_key_env = ""
    after = (provider.kind, provider.base_url, provider.api_key_env, provider.api_key_encrypted)
    changed = provider.pk is None or before != after
    if changed:
        provider.save()
    return provider, changed


@transaction.atomic
def route_upsert(*, model: str, provider: Provider, upstream_model: str = "") -> tuple[Route, bool]:
    """Point a public model name at a provider; returns (route, changed)."""
    route = Route.objects.filter(model=model).first() or Route(model=model)
    changed = route.pk is None or (route.provider_id, route.upstream_model, route.is_active) != (
        provider.pk,
        upstream_model,
        True,
    )
    if changed:
        route.provider, route.upstream_model, route.is_active = provider, upstream_model, True
        route.save()
    return route, changed
