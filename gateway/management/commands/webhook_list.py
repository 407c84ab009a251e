from typing import Any

from django.core.management.base import BaseCommand
from django.db.models import Count, Q

from billing.models import Webhook, WebhookDelivery


class Command(BaseCommand):
    help = "List the webhooks, their events and deliveries (secrets are never shown)."

    def handle(self, *args: Any, **options: Any) -> None:
        Status = WebhookDelivery.Status
        hooks = Webhook.objects.select_related("tenant").annotate(
            pending=Count("deliveries", filter=Q(deliveries__status=Status.PENDING)),
            delivered=Count("deliveries", filter=Q(deliveries__status=Status.DELIVERED)),
            failed=Count("deliveries", filter=Q(deliveries__status=Status.FAILED)),
        )
        for hook in hooks.order_by("pk"):
            scope = f"tenant {hook.tenant.slug}" if hook.tenant else "all tenants"
            flags = "".join([", Slack body" if hook.slack else "", "" if hook.enabled else ", disabled"])
            self.stdout.write(
                f"{hook.pk} {hook.url} ({scope}{flags}): {', '.join(hook.events)}; "
                f"{hook.delivered} delivered, {hook.pending} pending, {hook.failed} given up"
            )
