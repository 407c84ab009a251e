"""ASGI entry point: `daphne gateway.asgi:application` serves everything.

HTTP is split in two Django handlers that share one URLconf:

* `/v1/...`, `/healthz`, `/readyz` go to a handler built with
  `settings.API_MIDDLEWARE`, behind a body-size guard that answers 413 in
  the API's own error format before Django spools the body, and a lane that
  answers cache hits without Django (gateway.cache_lane);
* everything else (admin, static) gets the full `settings.MIDDLEWARE`.

WebSockets go through channels: /v1/realtime (proxy.realtime) to its
consumer as it comes, since it authenticates by API key and API clients
send no Origin; the rest (/ws/live/, the dashboard's live feed for staff)
with the session's user and an Origin check against ALLOWED_HOSTS.
"""

import gc
import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")

from django.core.asgi import get_asgi_application

# Initialise Django before importing anything that touches models.
admin_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from gateway import lifecycle  # noqa: E402
from gateway.cache_lane import cache_lane  # noqa: E402
from gateway.handlers import ApiHandler, body_limit_guard, split_by_path  # noqa: E402
from gateway.livefeed import live_feed_install, websocket_urlpatterns  # noqa: E402
from proxy.realtime import REALTIME_PATH, RealtimeConsumer  # noqa: E402
from proxy.telemetry import telemetry_asgi, telemetry_setup  # noqa: E402

if settings.GATEWAY_SERVE_STATIC:
    # The admin's CSS and JS, for the embedded run; behind a web server in
    # production, set GATEWAY_SERVE_STATIC=0 and serve `collectstatic` output.
    admin_app = ASGIStaticFilesHandler(admin_app)

# OpenTelemetry traces when OTEL_EXPORTER_OTLP_ENDPOINT is set; unset, telemetry_asgi
# returns the app as it is and nothing of the SDK is loaded.
telemetry_setup()
api_app = telemetry_asgi(body_limit_guard(cache_lane(ApiHandler())))

realtime_app = RealtimeConsumer.as_asgi()
live_feed_app = AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))


async def websocket_app(scope: dict, receive: Any, send: Any) -> None:
    app = realtime_app if scope["path"].rstrip("/") == REALTIME_PATH else live_feed_app
    await app(scope, receive, send)


application = ProtocolTypeRouter(
    {
        "http": split_by_path(api_app=api_app, admin_app=admin_app),
        "websocket": websocket_app,
        # uvicorn and granian send lifespan; daphne never does (see lifecycle).
        "lifespan": lifecycle.LifespanApp(),
    }
)

lifecycle.install_daphne_triggers()
live_feed_install()  # the usage meter forwards every event to the feed's group

# Everything imported and built so far lives as long as the process. Frozen,
# the collector no longer walks it (over 100,000 objects) in each full
# collection, a pause every request in flight would wait for.
gc.collect()
gc.freeze()
