import argparse
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from accounts.audit import audit, command_actor
from accounts.models import Tenant
from accounts.services import LIMIT_FLAGS, api_key_issue, limits_check
from billing.services import budget_set
from gateway.kernel import cli
from gateway.semantic_options import add_semantic_arguments, semantic_fields
from proxy.guardrails.services import guardrails_attach, guardrails_named


def _rate(text: str) -> Decimal:
    try:
        rate = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= rate <= 1:
        raise argparse.ArgumentTypeError("a rate is between 0 and 1")
    return rate


class Command(BaseCommand):
    help = "Issue a virtual key for a tenant. The key is printed once, alone on the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="The tenant's slug.")
        parser.add_argument("--name", default="")
        parser.add_argument("--models", default="", help="Comma-separated model names or patterns (openai/*).")
        parser.add_argument("--tags", default="", help="Comma-separated labels for cost attribution.")
        parser.add_argument("--expires-in", type=cli.duration, default=None, help="For example 30d, 12h.")
        cli.add_budget_arguments(parser)
        parser.add_argument(
            "--cache-ttl",
            type=cli.seconds,
            default=None,
            metavar="SECONDS",
            help="Serve repeated requests from the response cache for this long (0: off).",
        )
        add_semantic_arguments(parser, tenant=False)
        cli.add_rate_limit_arguments(parser)
        parser.add_argument(
            "--trace-rate",
            type=_rate,
            default=None,
            metavar="R",
            help="Share of requests (0 to 1) whose bodies are traced for debugging (0: off).",
        )
        parser.add_argument(
            "--guardrails",
            default="",
            metavar="NAME,...",
            help="Guardrails (guardrail_create) for this key, on top of its tenant's.",
        )

    def handle(self, *args: Any, slug: str, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None:
            raise CommandError(f"no tenant {slug!r}; create it with: manage.py tenant_create {slug}")
        expires_in = options["expires_in"]
        limits = cli.budgets(options)
        rate_limits: dict[str, Any] = cli.rate_limits(options)
        try:
            limits_check(rate_limits, labels=LIMIT_FLAGS)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        try:
            guardrails = guardrails_named(cli.names(options["guardrails"]))
            semantic = semantic_fields(options)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        actor = command_actor(__name__)
        with transaction.atomic():
            plaintext, api_key = api_key_issue(
                tenant=tenant,
                name=options["name"],
                allowed_models=cli.names(options["models"]),
                tags=cli.names(options["tags"]),
                expires_at=timezone.now() + expires_in if expires_in else None,
                cache_ttl_seconds=options["cache_ttl"],
                trace_sample_rate=options["trace_rate"],
                actor=actor,
                **rate_limits,
                **semantic,
            )
            for limit, period in limits:
                budget = budget_set(api_key=api_key, limit_usd=limit, period=period)
                audit(actor, "budget.set", budget, {"key_id": api_key.pk, "period": period, "limit_usd": limit})
            if guardrails:
                guardrails_attach(guardrails, api_key=api_key, actor=actor)
        self.stderr.write(f"issued key {api_key.prefix}… for tenant {tenant.slug}; it is shown only now:")
        self.stdout.write(plaintext)
