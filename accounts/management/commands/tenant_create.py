from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_slug
from django.db import transaction

from accounts.models import Tenant
from accounts.services import tenant_create
from billing.services import budget_set
from gateway.kernel import cli


class Command(BaseCommand):
    help = "Create a tenant, optionally prepaid and with budgets."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", default="")
        parser.add_argument("--prepaid", action="store_true", help="Pays from credit (top up with credit_add).")
        cli.add_budget_arguments(parser)
        parser.add_argument(
            "--cache-ttl",
            type=cli.seconds,
            default=None,
            metavar="SECONDS",
            help="Response cache lifetime for the tenant's keys (keys may override).",
        )
        cli.add_rate_limit_arguments(parser)

    def handle(self, *args: Any, slug: str, name: str, **options: Any) -> None:
        try:
            validate_slug(slug)
        except ValidationError:
            raise CommandError(f"invalid slug {slug!r}: use letters, numbers, underscores or hyphens") from None
        if Tenant.objects.filter(slug=slug).exists():
            raise CommandError(f"tenant {slug!r} already exists")
        limits = cli.budgets(options)
        with transaction.atomic():
            tenant = tenant_create(
                slug=slug,
                name=name,
                is_prepaid=options["prepaid"],
                cache_ttl_seconds=options["cache_ttl"],
                **cli.rate_limits(options),
            )
            for limit, period in limits:
                budget_set(tenant=tenant, limit_usd=limit, period=period)
        self.stdout.write(
            f"created tenant {tenant.slug}" + "".join(f", budget ${amount} per {period}" for amount, period in limits)
        )
