from channels.auth import AuthMiddlewareStack
from django.urls import path

from . import consumers

# Staff session auth on this route only; the customer's route keeps the visitor cookie.
websocket_urlpatterns = [
    path("ws/inbox/", AuthMiddlewareStack(consumers.InboxConsumer.as_asgi())),
]
