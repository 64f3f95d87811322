"""Migrate, run first-run setup, and serve HTTP and WebSocket on HOST:PORT through uvicorn (else daphne)."""

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.utils import autoreload
from django.utils.module_loading import import_string

from api.uvicorn_server import run_uvicorn, uvicorn_available


class Command(BaseCommand):
    help = (
        "Start the platform on HOST:PORT (embedded default: SQLite, in-process engines). "
        "DEBUG is off unless the environment turns it on."
    )

    def add_arguments(self, parser):
        parser.add_argument("--reload", action="store_true", help="Restart on code changes (development).")
        parser.add_argument(
            "--no-setup",
            action="store_true",
            help="Skip migrate and first-run setup: a distributed web process, where one "
            "`migrate` and `setup_embedded` run before the web processes start.",
        )

    def handle(self, *args, reload, no_setup, **options):
        if not no_setup:
            call_command("migrate", interactive=False, verbosity=0)
            call_command("setup_embedded")
        if reload:
            autoreload.run_with_reloader(self.serve, signal_handlers=False)
        else:
            self.serve(signal_handlers=True)

    def serve(self, *, signal_handlers: bool) -> None:
        """Run the ASGI server itself, not the runserver development command, until interrupted.

        uvicorn with uvloop and httptools costs a gateway request about a millisecond less CPU than
        daphne's Twisted (benchmarks/gateway_overhead.py); daphne stays for installs without uvicorn.
        """
        server = "uvicorn" if uvicorn_available() else "daphne"
        self.stdout.write(
            f"Serving on http://{settings.HOST}:{settings.PORT}/ with {server} "
            f"(DEBUG {'on' if settings.DEBUG else 'off'})"
        )
        self.stdout.flush()  # the key and login above reach a log file before the first request can
        if server == "uvicorn":
            run_uvicorn(import_string(settings.ASGI_APPLICATION), host=settings.HOST, port=settings.PORT)
            return
        from daphne.endpoints import build_endpoint_description_strings

        from api.access_log import log_action
        from api.http_server import PlatformServer  # first: it installs the asyncio reactor twisted must use

        PlatformServer(
            application=import_string(settings.ASGI_APPLICATION),
            endpoints=build_endpoint_description_strings(host=settings.HOST, port=settings.PORT),
            signal_handlers=signal_handlers,
            action_logger=log_action,
        ).run()
