"""ASGI entry point: HTTP through Django, websockets through Channels."""

import os

from django.core.asgi import get_asgi_application

from support_bot import local

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "support_bot.settings")
local.prepare()
# Build the Django app first: it sets up apps before the consumers' models are imported.
django_asgi_app = get_asgi_application()
local.check_static_files()

from support_bot import metrics  # noqa: E402

metrics.forget_dead_processes()

from channels.layers import get_channel_layer  # noqa: E402

from bot.providers import registry  # noqa: E402
from support_bot.celery import app as celery_app  # noqa: E402

# What taking a customer's message uses, built now rather than while this process's first
# customer waits for the ack (~100 ms in all): the provider that holds their place in the
# model's line with its HTTP client, the channel layer, and Celery's task registry.
registry.get_provider()
get_channel_layer()
celery_app.finalize(auto=True)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import OriginValidator, WebsocketDenier  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import re_path  # noqa: E402

from conversations.routing import websocket_urlpatterns  # noqa: E402
from conversations.visitors import VisitorMiddleware  # noqa: E402
from inbox.routing import websocket_urlpatterns as inbox_websocket_urlpatterns  # noqa: E402
from studio.routing import websocket_urlpatterns as studio_websocket_urlpatterns  # noqa: E402

# A path no socket serves is refused at the handshake (403), not an error with a traceback.
refuse_unknown_paths = [re_path(r"", WebsocketDenier.as_asgi())]

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # The browser's full origin (scheme, host and port) must be one of ALLOWED_ORIGINS,
        # for every socket: a page on another port of the same host is another site.
        "websocket": OriginValidator(
            # /ws/inbox/ authenticates staff by their session (inbox/routing.py); the visitor
            # cookie means nothing there.
            VisitorMiddleware(
                URLRouter(
                    inbox_websocket_urlpatterns
                    + studio_websocket_urlpatterns
                    + websocket_urlpatterns
                    + refuse_unknown_paths
                )
            ),
            settings.ALLOWED_ORIGINS,
        ),
    }
)
