"""manage.py issue_api_key NAME [--models m1 m2] [--expires 2027-01-01|30d] [--owner USER]
[--rpm N] [--tpm N] [--concurrency N]."""

import datetime as dt

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from models_registry.services.api_keys import api_key_issue


def parse_expiry(value: str) -> dt.datetime:
    """Accept an ISO date/datetime or a relative 'Nd' (days from now)."""
    if value.endswith("d") and value[:-1].isdigit():
        return timezone.now() + dt.timedelta(days=int(value[:-1]))
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        if day is None:
            raise CommandError(f"--expires {value!r}: use YYYY-MM-DD, an ISO datetime, or e.g. 30d")
        moment = dt.datetime.combine(day, dt.time.min)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, dt.UTC)
    if moment <= timezone.now():
        raise CommandError(f"--expires {value!r} is in the past")
    return moment


class Command(BaseCommand):
    help = "Issue an API key and print its plaintext once."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--models", nargs="+", default=None, help="Allowlist of model names")
        parser.add_argument("--expires", default=None, help="YYYY-MM-DD, ISO datetime, or Nd")
        parser.add_argument("--owner", default=None, help="Username of the key's owner")
        parser.add_argument("--rpm", type=int, default=None, help="Requests per minute (default: unlimited)")
        parser.add_argument(
            "--tpm", type=int, default=None, help="Prompt + completion tokens per minute (default: unlimited)"
        )
        parser.add_argument(
            "--concurrency", type=int, default=None, help="Requests in flight at once (default: unlimited)"
        )

    def handle(self, *args, name, models, expires, owner, rpm, tpm, concurrency, **options):
        owner_obj = None
        if owner:
            owner_obj = get_user_model().objects.filter(username=owner).first()
            if owner_obj is None:
                raise CommandError(f"no user {owner!r}")
        expires_at = parse_expiry(expires) if expires else None
        try:
            issued = api_key_issue(
                name=name,
                owner=owner_obj,
                expires_at=expires_at,
                model_names=models,
                rpm_limit=rpm,
                tpm_limit=tpm,
                concurrency_limit=concurrency,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stderr.write(f"Issued key {issued.key.name!r} (prefix {issued.key.prefix}); it is shown only once:")
        self.stdout.write(issued.plaintext)
