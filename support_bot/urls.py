from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("agent/", include("inbox.urls")),
    path("studio/", include("studio.urls")),
    path("", include("conversations.urls")),
]
