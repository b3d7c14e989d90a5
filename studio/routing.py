from channels.auth import AuthMiddlewareStack
from django.urls import path

from . import consumers

# Staff session auth on this route only, as /ws/inbox/.
websocket_urlpatterns = [
    path("ws/studio/", AuthMiddlewareStack(consumers.StudioConsumer.as_asgi())),
]
