from django.apps import AppConfig


class ProxyConfig(AppConfig):
    name = "proxy"
    verbose_name = "Providers and routes"

    def ready(self) -> None:
        from accounts.signals import watch
        from proxy.models import Deployment, ModelAlias, Provider, Route

        watch(Provider, Route, Deployment, ModelAlias)
