from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from accounts.audit import audit, command_actor
from accounts.models import Tenant
from billing.webhooks import EVENTS, webhook_set
from gateway.kernel import cli


class Command(BaseCommand):
    help = (
        "Send events to URL as JSON signed with the secret (x-gateway-signature: sha256=<HMAC-SHA256 of the body>). "
        "Safe to re-run: the webhook of URL (and tenant) is brought to the options given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("url", help="Where to POST, http:// or https://.")
        parser.add_argument(
            "--events", required=True, help=f"Comma-separated, from: {', '.join(EVENTS)}.", metavar="EVENT,..."
        )
        parser.add_argument("--secret", required=True, help="The HMAC key receivers check signatures with.")
        parser.add_argument("--tenant", default=None, metavar="SLUG", help="Only this tenant's events (default: all).")
        parser.add_argument("--slack", action="store_true", help="Post a Slack-compatible body ({'text': ...}).")

    def handle(self, *args: Any, url: str, events: str, secret: str, tenant: str | None, slack: bool, **_: Any) -> None:
        owner = None
        if tenant is not None:
            owner = Tenant.objects.filter(slug=tenant).first()
            if owner is None:
                raise CommandError(f"no tenant {tenant!r}; create it with: manage.py tenant_create {tenant}")
        with transaction.atomic():
            try:
                hook, outcome = webhook_set(url=url, events=cli.names(events), secret=secret, tenant=owner, slack=slack)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            if outcome != "unchanged":
                changes = {"url": hook.url, "events": hook.events, "tenant": tenant or "", "slack": hook.slack}
                audit(
                    command_actor(__name__), f"webhook.{'create' if outcome == 'created' else 'update'}", hook, changes
                )
        scope = f"tenant {tenant}" if tenant else "all tenants"
        body = ", Slack body" if hook.slack else ""
        self.stdout.write(f"{outcome} webhook {hook.pk} {hook.url} ({scope}{body}): {', '.join(hook.events)}")
