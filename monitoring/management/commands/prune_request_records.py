"""manage.py prune_request_records --days N [--batch-size B]: delete old request records in batches."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from monitoring.services import request_records_prune


class Command(BaseCommand):
    help = "Delete request records older than N days (default RECORD_RETENTION_DAYS), in batches."

    def add_arguments(self, parser):
        parser.add_argument(
            "--days", type=int, default=None, help="Keep this many days of records (default: RECORD_RETENTION_DAYS)."
        )
        parser.add_argument("--batch-size", type=int, default=5000, help="Rows deleted per transaction.")

    def handle(self, *args, days, batch_size, **options):
        days = settings.RECORD_RETENTION_DAYS if days is None else days
        if days <= 0:
            raise CommandError("--days must be at least 1 (RECORD_RETENTION_DAYS=0 keeps records forever)")
        try:
            deleted = request_records_prune(older_than_days=days, batch_size=batch_size)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Deleted {deleted} request records older than {days} days.")
