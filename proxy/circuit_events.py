"""deployment.circuit_open webhooks: told by the breaker (proxy.breaker's
`state_listeners`, registered in proxy.apps) on the request path, so the
listener only hands the event off (billing.webhooks.run_soon); the lookup
of the deployment and the outbox write happen on the webhook thread.

Once per deployment per hour at most: an outage where every probe fails
reopens the circuit each cooldown, and that is one story, not one a minute.
The hour is the wall clock's, so every process picks the same dedupe key.
"""

import time

from billing.webhooks import emit, run_soon
from proxy.breaker import State, breaker


def circuit_state_reported(key: str, state: State) -> None:
    if state != "open":
        return
    dedupe_key = f"deployment.circuit_open:{key}:{int(time.time() // 3600)}"
    retry_in = round(breaker().retry_in(key), 3)
    run_soon(dedupe_key, lambda: _emit(key, dedupe_key, retry_in))


def _emit(key: str, dedupe_key: str, retry_in: float) -> None:
    from proxy.models import Deployment

    parts = key.split(":", 2)  # "dep:<id>" or "dep:<id>:<upstream model>"
    deployment = Deployment.objects.select_related("provider", "route").filter(pk=int(parts[1])).first()
    payload = {
        "deployment": key,
        "deployment_id": int(parts[1]),
        "upstream_model": parts[2] if len(parts) > 2 else (deployment.upstream_model if deployment else ""),
        "provider": deployment.provider.name if deployment else "",
        "route": deployment.route.model if deployment else "",
        "retry_in_seconds": retry_in,
    }
    emit("deployment.circuit_open", tenant_id=None, dedupe_key=dedupe_key, payload=payload)
