"""What a server process loads: memory is paid per process, so nothing it never uses."""

import os
import subprocess
import sys

from django.conf import settings

# Loads the ASGI application and the URLconf, as the first request does, and
# lists the modules it ended up with.
PROBE = """
import sys
import gateway.asgi
from django.urls import resolve
resolve("/v1/models")
print(" ".join(sorted(sys.modules)))
"""


def loaded_modules(**env: str) -> set[str]:
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "gateway.settings", **env}
    probe = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(probe.stdout.split())


def test_a_server_process_loads_neither_celery_nor_redis_without_redis_url_nor_any_translator() -> None:
    modules = loaded_modules(REDIS_URL="", CELERY_BROKER_URL="")
    packages = {name.split(".")[0] for name in modules}

    assert {"django", "ninja", "aiohttp", "proxy"} <= packages  # the probe sees what it loads
    assert {"proxy.forward", "proxy.exchange"} <= modules
    assert not {"celery", "kombu", "redis"} & packages
    assert not {name for name in modules if name.startswith("proxy.translate.")}
