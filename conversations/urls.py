from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("chat/", views.chat, name="chat"),
    path("chat/conversations/", views.conversation_list, name="conversation-list"),
    path("chat/conversations/new/", views.new_conversation, name="conversation-new"),
    path("chat/availability/", views.team_availability, name="team-availability"),
    path("chat/continue/<str:token>/", views.continue_conversation, name="chat-continue"),
    path("healthz", views.healthz, name="healthz"),
]
