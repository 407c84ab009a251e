from django.apps import AppConfig


class ProxyConfig(AppConfig):
    name = "proxy"
    verbose_name = "Providers and routes"

    def ready(self) -> None:
        from accounts.signals import watch
        from proxy.breaker import state_listeners
        from proxy.circuit_events import circuit_state_reported
        from proxy.guardrails.services import guardrails_watch
        from proxy.models import Augmentor, Deployment, ModelAlias, Provider, Route, Router

        watch(Provider, Route, Deployment, ModelAlias, Router, Augmentor)
        guardrails_watch()
        if circuit_state_reported not in state_listeners:
            state_listeners.append(circuit_state_reported)  # deployment.circuit_open webhooks
