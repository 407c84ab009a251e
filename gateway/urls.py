from django.contrib import admin
from django.urls import path

from gateway import views
from gateway.api import api

urlpatterns = [
    path("healthz", views.healthz),
    path("readyz", views.readyz),
    path("v1/", api.urls),
    path("admin/", admin.site.urls),
]

handler404 = "gateway.views.not_found"
