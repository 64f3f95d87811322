"""Migrate, run first-run setup, and serve HTTP on HOST:PORT through daphne."""

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Start the platform on HOST:PORT (embedded default: SQLite, in-process engines)."

    def add_arguments(self, parser):
        parser.add_argument("--reload", action="store_true", help="Restart on code changes (development).")

    def handle(self, *args, reload, **options):
        call_command("migrate", interactive=False, verbosity=0)
        call_command("setup_embedded")
        call_command("runserver", f"{settings.HOST}:{settings.PORT}", use_reloader=reload)
