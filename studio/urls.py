from django.urls import path

from . import views

app_name = "studio"

urlpatterns = [
    path("playground/", views.playground_page, name="playground"),
    path("evaluations/", views.evaluations_page, name="evaluations"),
    path("evaluations/run/", views.start_run, name="start-run"),
    path("evaluations/add-conversation/", views.add_conversation, name="add-conversation"),
]
