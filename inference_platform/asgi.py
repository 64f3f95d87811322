"""ASGI entry point: HTTP through Django; WebSocket routing arrives with distributed mode."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inference_platform.settings")

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402  (needs Django set up first)

from api.dispatch import start_preloading  # noqa: E402

application = ProtocolTypeRouter({"http": django_asgi_app})

start_preloading()
