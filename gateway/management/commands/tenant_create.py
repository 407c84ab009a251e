from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_slug
from django.db import transaction

from accounts.audit import audit, command_actor
from accounts.models import Tenant
from accounts.services import LIMIT_FLAGS, limits_check, tenant_create, tenant_update
from billing.models import Budget
from billing.services import budget_set
from gateway.kernel import cli
from gateway.semantic_options import add_semantic_arguments, semantic_fields
from proxy.guardrails.services import guardrails_attach, guardrails_named
from proxy.models import Guardrail


class Command(BaseCommand):
    help = (
        "Create a tenant, optionally prepaid and with budgets. Safe to re-run: on an existing tenant it sets "
        "the options given (and only those) and says whether anything changed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", default=None)
        parser.add_argument("--prepaid", action="store_true", help="Pays from credit (top up with credit_add).")
        cli.add_budget_arguments(parser)
        parser.add_argument(
            "--cache-ttl",
            type=cli.seconds,
            default=None,
            metavar="SECONDS",
            help="Response cache lifetime for the tenant's keys (keys may override).",
        )
        add_semantic_arguments(parser, tenant=True)
        cli.add_rate_limit_arguments(parser)
        parser.add_argument(
            "--guardrails",
            default=None,
            metavar="NAME,...",
            help="Exactly these guardrails (guardrail_create) for every key of the tenant; '' removes them all.",
        )

    def handle(self, *args: Any, slug: str, name: str | None, **options: Any) -> None:
        try:
            validate_slug(slug)
        except ValidationError:
            raise CommandError(f"invalid slug {slug!r}: use letters, numbers, underscores or hyphens") from None
        limits = cli.budgets(options)
        rate_limits: dict[str, Any] = cli.rate_limits(options)
        try:
            limits_check(rate_limits, labels=LIMIT_FLAGS)
            semantic = semantic_fields(options)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        guardrails = _guardrails(options["guardrails"])
        actor = command_actor(__name__)
        with transaction.atomic():
            tenant = Tenant.objects.select_for_update().filter(slug=slug).first()
            if tenant is None:
                tenant = tenant_create(
                    slug=slug,
                    name=name or "",
                    is_prepaid=options["prepaid"],
                    cache_ttl_seconds=options["cache_ttl"],
                    actor=actor,
                    **rate_limits,
                    **semantic,
                )
                outcome = "created"
            else:
                # Only what the command line says: a re-run without --rpm keeps the tenant's limit.
                given = {"name": name, "cache_ttl_seconds": options["cache_ttl"], **rate_limits, **semantic}
                values = {field: value for field, value in given.items() if value is not None}
                if options["prepaid"]:
                    values["is_prepaid"] = True
                changed = bool(tenant_update(tenant=tenant, actor=actor, **values))
                outcome = "updated" if changed else "unchanged"
            for limit, period in limits:
                if _budget_set(tenant, limit, period, actor) and outcome == "unchanged":
                    outcome = "updated"
            if guardrails is not None and guardrails_attach(guardrails, tenant=tenant, actor=actor):
                outcome = "updated" if outcome == "unchanged" else outcome
        budgets = "".join(f", budget ${amount} per {period}" for amount, period in limits)
        rails = "" if guardrails is None else f", guardrails: {', '.join(g.name for g in guardrails) or 'none'}"
        self.stdout.write(f"{outcome} tenant {tenant.slug}{budgets}{rails}")


def _guardrails(names: str | None) -> list[Guardrail] | None:
    """--guardrails NAME,...: the guardrails, checked before anything is written (None: not given)."""
    if names is None:
        return None
    try:
        return guardrails_named(cli.names(names))
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _budget_set(tenant: Tenant, limit: Any, period: str, actor: Any) -> bool:
    """Set the tenant's budget of `period`; True when it changed (audited)."""
    current = Budget.objects.filter(tenant=tenant, api_key=None, period=period).first()
    if current is not None and current.is_active and current.limit_usd == limit:
        return False
    budget = budget_set(tenant=tenant, limit_usd=limit, period=period)
    audit(actor, "budget.set", budget, {"tenant_id": tenant.pk, "period": period, "limit_usd": limit})
    return True
