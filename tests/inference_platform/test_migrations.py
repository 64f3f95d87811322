"""Every model change ships with its migration."""

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_models_and_migrations_agree():
    # --check exits non-zero (SystemExit) when a model has changes no migration records.
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)
