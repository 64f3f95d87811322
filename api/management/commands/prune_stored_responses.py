"""manage.py prune_stored_responses: delete stored `/v1/responses` answers past RESPONSE_RETENTION_DAYS."""

from django.conf import settings
from django.core.management.base import BaseCommand

from api.services.stored_responses import stored_responses_prune


class Command(BaseCommand):
    help = "Delete stored /v1/responses answers older than RESPONSE_RETENTION_DAYS (Celery beat does it daily)."

    def handle(self, *args, **options):
        days = settings.RESPONSE_RETENTION_DAYS
        if days <= 0:
            self.stdout.write("RESPONSE_RETENTION_DAYS=0 keeps stored responses forever: nothing deleted.")
            return
        self.stdout.write(f"Deleted {stored_responses_prune()} stored responses older than {days} days.")
