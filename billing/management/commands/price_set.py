from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.services import price_set
from gateway import cli
from proxy.models import Provider


class Command(BaseCommand):
    help = "Set a model's price in USD per million tokens, effective now."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model", help="The upstream model name (or a public model name).")
        parser.add_argument("--input", type=cli.usd, required=True)
        parser.add_argument("--output", type=cli.usd, required=True)
        parser.add_argument("--cached-input", type=cli.usd, default=None, help="Default: the input price.")
        parser.add_argument("--provider", default=None, help="Only for this provider (default: any).")

    def handle(self, *args: Any, model: str, **options: Any) -> None:
        provider = None
        if options["provider"]:
            provider = Provider.objects.filter(name=options["provider"]).first()
            if provider is None:
                raise CommandError(f"no provider {options['provider']!r}")
        try:
            price, changed = price_set(
                model=model,
                input_usd=options["input"],
                output_usd=options["output"],
                cached_input_usd=options["cached_input"],
                provider=provider,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{'set' if changed else 'unchanged'} price of {model}")
