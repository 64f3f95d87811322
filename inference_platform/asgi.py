"""ASGI entry point: HTTP through Django, WebSocket streaming through Channels consumers."""

import os

import django
from django.core.asgi import get_asgi_application

from inference_platform.startup import settings_or_exit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inference_platform.settings")
settings_or_exit()  # daphne or uvicorn started directly: one line for a wrong setting
django.setup(set_prefix=False)  # the apps, before the middleware changes below and the handler

from inference_platform.middleware import (  # noqa: E402
    check_csrf_exempt_views_on_the_loop,
    run_django_middleware_on_the_loop,
)

run_django_middleware_on_the_loop()
django_asgi_app = get_asgi_application()
check_csrf_exempt_views_on_the_loop(django_asgi_app)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402  (needs Django set up first)

from api.health import HealthProbe  # noqa: E402
from api.request_body import RequestBodyLimit  # noqa: E402
from api.routing import websocket_urlpatterns  # noqa: E402
from serving.dispatch import start_embedded_host  # noqa: E402
from serving.hosts import start_sampling  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Bodies are bounded by MAX_REQUEST_BODY_BYTES, and chunked ones read, before Django sees them.
        # /health first: it is polled often and must answer while everything else is busy.
        "http": HealthProbe(RequestBodyLimit(django_asgi_app)),
        # No origin check: sockets authenticate with an API key, never with the browser's
        # cookies, so another site's page gains nothing by opening one.
        "websocket": URLRouter(websocket_urlpatterns),
    }
)

start_embedded_host()
start_sampling(role="web")
