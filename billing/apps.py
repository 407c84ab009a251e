from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing and usage"

    def ready(self) -> None:
        from accounts.signals import watch
        from billing.models import Price

        watch(Price)
