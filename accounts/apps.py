from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Tenants and keys"

    def ready(self) -> None:
        from accounts import signals  # noqa: F401  (connects config-change signals)
