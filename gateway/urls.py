from django.contrib import admin
from django.urls import include, path, re_path

from gateway import explorer, views
from gateway.api import api
from gateway.manage_api import api as manage_api
from gateway.metrics import metrics_view
from proxy import compat
from proxy.api import cached_chat_completions

urlpatterns = [
    path("healthz", views.healthz),
    path("readyz", views.readyz),
    path("v1/", api.urls),
    path("cache/chat/completions", cached_chat_completions),
    path("cache/v1/chat/completions", cached_chat_completions),
    path("api/chat", compat.ollama_chat),
    path("api/generate", compat.ollama_generate),
    path("api/embed", compat.ollama_embed),
    path("api/embeddings", compat.ollama_embeddings),
    path("api/tags", compat.ollama_tags_view),
    path("api/show", compat.ollama_show_view),
    path("api/ps", compat.ollama_ps_view),
    path("api/version", compat.ollama_version),
    # The management API's root only raises Http404 (its docs are at /api/docs):
    # answered as any unknown /api/ path is, below.
    path("api/", compat.ollama_not_found),
    path("api/", manage_api.urls),  # the management API (staff); after the fixed Ollama paths above
    path("metrics", metrics_view),
    path("admin/dashboard/", include("billing.admin_views")),  # the operations dashboard, staff only
    path(
        "admin/explorer/trace/<str:request_id>/",
        admin.site.admin_view(explorer.request_trace_view),
        name="gateway_request_trace",
    ),
    path("admin/", admin.site.urls),
    # Last: `<provider>/v1/...` must not shadow any fixed path above.
    path("<slug:provider>/v1/<path:operation>", compat.provider_in_path),
    # Any other /api/ path (an Ollama endpoint not served here, such as
    # /api/pull): Ollama's JSON 404 rather than Django's HTML page.
    re_path(r"^api/(?P<rest>.*)$", compat.ollama_not_found),
]

handler404 = "gateway.views.not_found"
