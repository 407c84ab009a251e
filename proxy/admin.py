from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest

from accounts.audit import audit_by, changes_between, credential_changes
from proxy.augmentor_services import AUGMENTOR_FIELDS, AugmentorSpec, augmentor_check
from proxy.breaker import deployment_key, shared_state
from proxy.capacity import capacity_shown
from proxy.guardrails.services import guardrail_check
from proxy.models import Augmentor, Deployment, Guardrail, ModelAlias, Provider, Route, Router
from proxy.presets import base_url_normalize
from proxy.router_services import router_check
from proxy.services import alias_check, fallbacks_check, provider_connection_test


class ProviderForm(forms.ModelForm):
    base_url = forms.URLField(
        max_length=500,
        assume_scheme="https",
        help_text="The bare host (https://api.anthropic.com) or the versioned URL (https://api.openai.com/v1); "
        "stored as the gateway uses it, with the kind's version path.",
    )
    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Stored encrypted and never shown again. Leave empty to keep the stored one.",
    )
    clear_api_key = forms.BooleanField(required=False, help_text="Remove the stored credential.")

    class Meta:
        model = Provider
        fields = [
            "name",
            "kind",
            "base_url",
            "api_key_env",
            "connect_timeout",
            "first_byte_timeout",
            "idle_timeout",
            "is_active",
        ]

    def clean(self) -> dict[str, Any]:
        """The base URL in the form the adapters use (the same as the commands store)."""
        cleaned = super().clean() or {}
        if cleaned.get("base_url") and cleaned.get("kind"):
            try:
                cleaned["base_url"] = base_url_normalize(cleaned["kind"], cleaned["base_url"])
            except ValueError as exc:
                self.add_error("base_url", str(exc))
        return cleaned


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    form = ProviderForm
    list_display = ["name", "kind", "effective_url", "credential", "timeouts", "is_active"]
    list_filter = ["kind", "is_active"]
    search_fields = ["name", "base_url"]
    actions = ["test_connection"]

    @admin.display(description="Base URL (as used)", ordering="base_url")
    def effective_url(self, obj: Provider) -> str:
        return obj.base_url

    @admin.display(description="Credential")
    def credential(self, obj: Provider) -> str:
        if obj.api_key_env:
            return f"env ${obj.api_key_env}"
        return "stored (encrypted)" if obj.has_stored_key else "none"

    @admin.display(description="Timeouts (connect / first byte / idle)")
    def timeouts(self, obj: Provider) -> str:
        values = (obj.connect_timeout, obj.first_byte_timeout, obj.idle_timeout)
        return " / ".join("default" if v is None else f"{v:g} s" for v in values)

    def save_model(self, request: HttpRequest, obj: Provider, form: Any, change: bool) -> None:
        if form.cleaned_data.get("clear_api_key"):
            obj.set_api_key("")
        elif form.cleaned_data.get("api_key"):
            obj.set_api_key(form.cleaned_data["api_key"])
        super().save_model(request, obj, form, change)
        self._audit(request, obj, form, change)
        if "base_url" in form.changed_data:
            self.message_user(request, f"{obj.name}: requests go to {obj.base_url}", messages.INFO)

    def _audit(self, request: HttpRequest, obj: Provider, form: Any, change: bool) -> None:
        """As the management API does: where requests go (base URL) and which credential they carry."""
        watched = ("kind", "base_url", "api_key_env", "is_active")
        after = {name: getattr(obj, name) for name in watched}
        changes: dict[str, Any] = changes_between({n: form.initial.get(n) for n in watched}, after) if change else after
        api_key = "" if form.cleaned_data.get("clear_api_key") else form.cleaned_data.get("api_key") or None
        changes |= credential_changes(api_key, None)
        if changes or not change:
            audit_by(request, "provider.update" if change else "provider.create", obj, changes)

    @admin.action(description="Test connection (GET /models)")
    def test_connection(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        for provider in queryset:
            try:
                check = provider_connection_test(provider)
            except Exception as exc:  # an undecryptable credential, say: report, never the value
                self.message_user(request, f"{provider.name}: cannot test ({type(exc).__name__})", messages.ERROR)
                continue
            answer = f"HTTP {check.status}" if check.status is not None else "no answer"
            text = f"{provider.name}: {answer} in {check.latency_ms} ms"
            if check.reachable:
                self.message_user(request, f"{text}: reachable", messages.SUCCESS)
            else:
                self.message_user(request, f"{text}: {check.detail}", messages.ERROR)


@admin.display(description="Breaker")
def deployment_breaker_state(obj: Deployment) -> str:
    """A wildcard deployment has one breaker per model it serves: see /metrics."""
    if not obj.pk or obj.route.is_wildcard:
        return "-"
    return shared_state(deployment_key(obj.pk, obj.upstream_model or obj.route.model)).replace("_", "-")


@admin.display(description="Effective limit")
def deployment_effective_limit(obj: Deployment) -> str:
    """The rpm and tpm the gateway allows itself now (lower for a while
    after the provider answered 429). A wildcard deployment has a window per
    model it serves."""
    if not obj.pk or obj.route.is_wildcard:
        return "-" if obj.rpm is None and obj.tpm is None else "per model"
    return capacity_shown(deployment_key(obj.pk, obj.upstream_model or obj.route.model), obj.rpm, obj.tpm)


class DeploymentInline(admin.TabularInline):
    model = Deployment
    fields = ["provider", "upstream_model", "weight", "priority", "rpm", "tpm", "is_active"]
    fields += ["effective_limit", "breaker_state"]
    readonly_fields = ["effective_limit", "breaker_state"]

    @admin.display(description="Breaker")
    def breaker_state(self, obj: Deployment) -> str:
        return deployment_breaker_state(obj)

    @admin.display(description="Effective limit")
    def effective_limit(self, obj: Deployment) -> str:
        return deployment_effective_limit(obj)

    extra = 0
    min_num = 1


class RouteForm(forms.ModelForm):
    fallbacks = forms.CharField(
        required=False,
        help_text="Other models to try, in order, when every deployment fails (comma-separated).",
    )

    class Meta:
        model = Route
        fields = ["model", "fallbacks", "description", "is_active"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["fallbacks"] = ", ".join(self.instance.fallbacks or [])

    def clean_fallbacks(self) -> list[str]:
        names = [name.strip() for name in (self.cleaned_data.get("fallbacks") or "").split(",") if name.strip()]
        try:
            fallbacks_check(self.cleaned_data.get("model") or self.instance.model, names)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return names


@admin.register(Route)
class RouteAdmin(admin.ModelAdmin):
    form = RouteForm
    inlines = [DeploymentInline]
    list_display = ["model", "served_by", "fallback_list", "described", "is_active"]
    list_filter = ["is_active", "deployments__provider"]
    search_fields = ["model", "deployments__upstream_model", "description"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Route]:
        return super().get_queryset(request).prefetch_related("deployments__provider")

    @admin.display(description="Deployments")
    def served_by(self, obj: Route) -> str:
        return ", ".join(
            f"{d.provider.name} ×{d.weight} p{d.priority}" + ("" if d.is_active else " (off)")
            for d in obj.deployments.all()
        )

    @admin.display(description="Fallbacks")
    def fallback_list(self, obj: Route) -> str:
        return " → ".join(obj.fallbacks or [])

    # What smart routers' designators read; descriptions_sync fills empty ones.
    @admin.display(description="Described", boolean=True)
    def described(self, obj: Route) -> bool:
        return bool(obj.description)


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = [
        "route",
        "provider",
        "upstream_model",
        "weight",
        "priority",
        "rpm",
        "tpm",
        deployment_effective_limit,
        "is_active",
        deployment_breaker_state,
    ]
    list_editable = ["weight", "priority", "rpm", "tpm", "is_active"]
    list_filter = ["provider", "is_active"]
    list_select_related = ["route", "provider"]
    search_fields = ["route__model", "upstream_model"]


class ModelAliasForm(forms.ModelForm):
    class Meta:
        model = ModelAlias
        fields = ["pattern", "target_model", "priority", "is_active", "note"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        pattern, target = cleaned.get("pattern"), cleaned.get("target_model")
        if pattern and target:
            try:
                alias_check(pattern, target, alias_id=self.instance.pk)
            except ValueError as exc:
                raise forms.ValidationError(str(exc)) from None
        return cleaned


@admin.register(ModelAlias)
class ModelAliasAdmin(admin.ModelAdmin):
    form = ModelAliasForm
    list_display = ["pattern", "kind", "target_model", "target_served", "priority", "is_active", "note"]
    list_filter = ["is_active"]
    search_fields = ["pattern", "target_model", "note"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelAlias]:
        # One query for the list, not one per alias.
        served = Route.objects.filter(model=OuterRef("target_model"), is_active=True)
        return super().get_queryset(request).annotate(target_route_active=Exists(served))

    @admin.display(description="Kind")
    def kind(self, obj: ModelAlias) -> str:
        return "pattern" if obj.is_pattern else "exact"

    # An alias whose target is missing or switched off is ignored (a 404 for clients).
    @admin.display(description="Target route active", boolean=True)
    def target_served(self, obj: ModelAlias) -> bool:
        return bool(getattr(obj, "target_route_active", False))


class RouterForm(forms.ModelForm):
    candidates = forms.CharField(help_text="Model names the designator chooses from, in order (comma-separated).")

    class Meta:
        model = Router
        fields = ["name", "designator", "candidates", "purpose", "fallback", "is_active"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["candidates"] = ", ".join(self.instance.candidates or [])

    def clean_candidates(self) -> list[str]:
        return [name.strip() for name in (self.cleaned_data.get("candidates") or "").split(",") if name.strip()]

    def clean(self) -> dict[str, Any]:
        """The checks router_create makes: routable names, a fallback among the candidates."""
        cleaned = super().clean() or {}
        name, designator = cleaned.get("name"), cleaned.get("designator")
        if name and designator and "candidates" in cleaned:
            try:
                router_check(name, designator, cleaned["candidates"], cleaned.get("fallback") or "")
            except ValueError as exc:
                raise forms.ValidationError(str(exc)) from None
        return cleaned


@admin.register(Router)
class RouterAdmin(admin.ModelAdmin):
    """Smart routers: a client asking for `name` is answered by the
    candidate the designator picks (proxy.routers)."""

    form = RouterForm
    list_display = ["name", "designator", "candidate_list", "fallback", "is_active"]
    list_filter = ["is_active"]
    search_fields = ["name", "designator", "purpose"]

    @admin.display(description="Candidates")
    def candidate_list(self, obj: Router) -> str:
        return ", ".join(obj.candidates or [])


class GuardrailForm(forms.ModelForm):
    class Meta:
        model = Guardrail
        fields = ["name", "kind", "pattern", "action", "stage", "enabled", "tenants", "api_keys"]

    def clean(self) -> dict[str, Any]:
        """The same checks as guardrail_create: a regex guardrail's pattern compiles (and no other has one)."""
        cleaned = super().clean() or {}
        try:
            guardrail_check(
                name=cleaned.get("name") or "",
                kind=cleaned.get("kind") or "",
                pattern=cleaned.get("pattern") or "",
                action=cleaned.get("action") or "",
                stage=cleaned.get("stage") or "",
            )
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return cleaned


@admin.register(Guardrail)
class GuardrailAdmin(admin.ModelAdmin):
    form = GuardrailForm
    list_display = ["name", "kind", "action", "stage", "enabled", "attached_to"]
    list_filter = ["kind", "action", "stage", "enabled"]
    search_fields = ["name", "pattern"]
    filter_horizontal = ["tenants", "api_keys"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Guardrail]:
        return super().get_queryset(request).prefetch_related("tenants", "api_keys")

    @admin.display(description="Attached to")
    def attached_to(self, obj: Guardrail) -> str:
        tenants = [t.slug for t in obj.tenants.all()]
        keys = [f"{k.prefix}…" for k in obj.api_keys.all()]
        return ", ".join(tenants + keys) or "nothing"

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        watched = ("kind", "pattern", "action", "stage", "enabled")
        changes: dict[str, Any] = {name: getattr(form.instance, name) for name in watched}
        if change:
            changes = changes_between({n: form.initial.get(n) for n in watched}, changes)
        if "tenants" in form.changed_data or "api_keys" in form.changed_data or not change:
            changes["tenants"] = sorted(t.slug for t in form.instance.tenants.all())
            changes["api_keys"] = sorted(k.prefix for k in form.instance.api_keys.all())
        if changes or not change:
            audit_by(request, "guardrail.update" if change else "guardrail.create", form.instance, changes)


class AugmentorForm(forms.ModelForm):
    class Meta:
        model = Augmentor
        fields = ["name", *AUGMENTOR_FIELDS, "is_active"]

    def clean(self) -> dict[str, Any]:
        """The checks augmentor_create makes: its own name, routable designator and target."""
        cleaned = super().clean() or {}
        fields = {name: cleaned[name] for name in self.Meta.fields if name in cleaned and name != "is_active"}
        if {"name", "designator", "target"} <= fields.keys():
            try:
                augmentor_check(AugmentorSpec(**fields))
            except ValueError as exc:
                raise forms.ValidationError(str(exc)) from None
        return cleaned


@admin.register(Augmentor)
class AugmentorAdmin(admin.ModelAdmin):
    """Augmentors: a client asking for `name` is answered by the target,
    with what the designator asked to search or scrape (proxy.augment)."""

    form = AugmentorForm
    list_display = ["name", "designator", "target", "search_provider", "max_context_tokens", "is_active"]
    list_filter = ["is_active", "search_provider"]
    search_fields = ["name", "designator", "target", "purpose"]
