from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing and usage"

    def ready(self) -> None:
        from accounts.signals import api_key_rotated, watch
        from accounts.snapshots import context_part_register, on_invalidate
        from billing.models import Budget, Price, Webhook
        from billing.receivers import key_budgets_copy
        from billing.snapshots import SpendContext
        from billing.webhooks import subscriptions_forget

        context_part_register(SpendContext())  # a caller's budgets and credit, loaded with its key
        api_key_rotated.connect(key_budgets_copy, dispatch_uid="billing.key_budgets_copy")

        # Not CreditEntry: the meter adds usage entries on every flush. Top-ups
        # bump the version themselves (billing.services.credit_add).
        watch(Price, Budget, Webhook)
        on_invalidate(subscriptions_forget)  # a webhook edited anywhere: who listens is read again
