from django.contrib import admin
from django.urls import include, path

from . import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("agent/", include("inbox.urls")),
    path("studio/", include("studio.urls")),
    # For the deployment: readiness (/healthz, liveness, is in conversations/urls.py) and
    # Prometheus metrics (docs/operations.md).
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics, name="metrics"),
    path("", include("conversations.urls")),
]
