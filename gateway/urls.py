from django.contrib import admin
from django.urls import path

from gateway import views
from gateway.api import api
from proxy.api import cached_chat_completions

urlpatterns = [
    path("healthz", views.healthz),
    path("readyz", views.readyz),
    path("v1/", api.urls),
    path("cache/chat/completions", cached_chat_completions),
    path("cache/v1/chat/completions", cached_chat_completions),
    path("admin/", admin.site.urls),
]

handler404 = "gateway.views.not_found"
