from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.media_pricing import MEDIA_RATE_CAPS
from billing.services import PRICE_RATE_OPTIONS, price_set
from gateway.kernel import cli
from proxy.models import Provider


class Command(BaseCommand):
    help = (
        "Set a model's price in USD per million tokens (and, for the media endpoints, per second of audio, "
        "per character or per image), effective now. A hand-set price is never synced over."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model", help="The upstream model name (or a public model name).")
        # Optional only for a media price (a --input-cost-per-* or --output-cost-per-image rate): tokens then cost 0.
        parser.add_argument("--input", type=cli.usd, default=None)
        parser.add_argument("--output", type=cli.usd, default=None)
        parser.add_argument("--cached-input", type=cli.usd, default=None, help="Cache reads (default: input).")
        for option in PRICE_RATE_OPTIONS:
            parser.add_argument(f"--{option.replace('_', '-')}", type=cli.usd, default=None)
        parser.add_argument(
            "--long-context-threshold",
            type=int,
            default=None,
            help="Above this many prompt tokens the --long-* rates apply.",
        )
        parser.add_argument("--request-fee", type=cli.usd, default=None, help="USD added to every request.")
        parser.add_argument("--max-output-tokens", type=int, default=None, help="What a budget reserves at most.")
        parser.add_argument("--provider", default=None, help="Only for this provider (default: any).")

    def handle(self, *args: Any, model: str, **options: Any) -> None:
        provider = None
        if options["provider"]:
            provider = Provider.objects.filter(name=options["provider"]).first()
            if provider is None:
                raise CommandError(f"no provider {options['provider']!r}")
        optional = {field: options[option] for option, field in PRICE_RATE_OPTIONS.items()}
        media = any(optional[field] is not None for field in MEDIA_RATE_CAPS)
        if not media and (options["input"] is None or options["output"] is None):
            raise CommandError(
                "--input and --output are required (unless a media rate such as --output-cost-per-image)"
            )
        optional.update(
            long_context_threshold=options["long_context_threshold"],
            request_fee_usd=options["request_fee"],
            max_output_tokens=options["max_output_tokens"],
        )
        try:
            price, changed = price_set(
                model=model,
                input_usd=options["input"] if options["input"] is not None else Decimal(0),
                output_usd=options["output"] if options["output"] is not None else Decimal(0),
                cached_input_usd=options["cached_input"],
                provider=provider,
                **optional,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{'set' if changed else 'unchanged'} price of {model}")
