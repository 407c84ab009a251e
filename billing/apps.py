from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing and usage"

    def ready(self) -> None:
        from accounts.signals import watch
        from billing.models import Budget, Price

        # Not CreditEntry: the meter adds usage entries on every flush. Top-ups
        # bump the version themselves (billing.services.credit_add).
        watch(Price, Budget)
