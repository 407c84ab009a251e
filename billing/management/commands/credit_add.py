from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Tenant
from billing.models import CreditEntry
from billing.pricing import nanos_to_usd
from billing.services import credit_add, credit_balance_nanos
from gateway.kernel import cli


class Command(BaseCommand):
    help = "Add prepaid credit to a tenant (a top-up, refund or adjustment) and print the balance."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("amount", help="USD; an adjustment may be negative, e.g. -- -5")
        parser.add_argument("--kind", default="topup", choices=["topup", "refund", "adjustment"])
        parser.add_argument("--note", default="")

    def handle(self, *args: Any, slug: str, amount: str, kind: str, note: str, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None:
            raise CommandError(f"no tenant {slug!r}")
        value = cli.usd(amount.lstrip("-")) * (-1 if amount.strip().startswith("-") else 1)
        try:
            credit_add(tenant=tenant, amount_usd=value, kind=CreditEntry.Kind(kind), note=note)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if not tenant.is_prepaid:
            self.stderr.write(f"note: tenant {slug} is not prepaid, so its credit does not limit it yet")
        self.stdout.write(f"{kind} ${value} for {slug}; balance ${nanos_to_usd(credit_balance_nanos(tenant)):f}")
