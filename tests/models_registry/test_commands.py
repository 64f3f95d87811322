import datetime as dt
import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.utils import timezone

from models_registry.models import ApiKey, ServedModel
from models_registry.services.api_keys import api_key_verify
from models_registry.services.served_models import served_model_register

pytestmark = pytest.mark.django_db

KEY = re.compile(r"ipk-[0-9a-f]{8}-[A-Za-z0-9_-]+")


def run(command: str, *args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(command, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def issue(*args: str) -> ApiKey:
    out, _ = run("issue_api_key", *args)
    plaintext = out.strip()
    assert KEY.fullmatch(plaintext), out  # stdout carries the key alone, so scripts can capture it
    key = api_key_verify(plaintext=plaintext)
    assert key is not None
    return key


def test_issue_prints_a_key_that_verifies():
    key = issue("ci")
    assert key.name == "ci"
    assert key.expires_at is None
    assert not key.allowed_models.exists()


def test_issue_with_model_allowlist():
    for name in ("a", "b", "c"):
        served_model_register(name=name, source="", engine="echo")
    key = issue("ci", "--models", "a", "c")
    assert sorted(key.allowed_models.values_list("name", flat=True)) == ["a", "c"]


def test_issue_with_unknown_model_fails_and_issues_nothing():
    served_model_register(name="a", source="", engine="echo")
    with pytest.raises(CommandError, match=r"unknown model.*ghost"):
        run("issue_api_key", "ci", "--models", "a", "ghost")
    assert not ApiKey.objects.exists()


def test_issue_with_relative_expiry():
    key = issue("ci", "--expires", "30d")
    expected = timezone.now() + dt.timedelta(days=30)
    assert abs(key.expires_at - expected) < dt.timedelta(minutes=1)


def test_issue_with_absolute_expiry():
    key = issue("ci", "--expires", "2999-01-02")
    assert key.expires_at == dt.datetime(2999, 1, 2, tzinfo=dt.UTC)


@pytest.mark.parametrize(("value", "message"), [("2001-01-01", "in the past"), ("soon", "use YYYY-MM-DD")])
def test_issue_with_bad_expiry_fails(value, message):
    with pytest.raises(CommandError, match=message):
        run("issue_api_key", "ci", "--expires", value)
    assert not ApiKey.objects.exists()


def test_issue_with_owner():
    user = get_user_model().objects.create_user(username="ops")
    assert issue("ci", "--owner", "ops").owner == user
    with pytest.raises(CommandError, match="no user 'ghost'"):
        run("issue_api_key", "ci", "--owner", "ghost")


def test_setup_embedded_is_idempotent(settings, gguf_path):
    settings.ADMIN_USERNAME = "boss"
    settings.ADMIN_PASSWORD = "correct horse battery"
    out, _ = run("setup_embedded")
    keys = KEY.findall(out)
    assert len(keys) == 1
    assert api_key_verify(plaintext=keys[0]) is not None
    assert "boss / correct horse battery" in out
    admin = get_user_model().objects.get()
    assert admin.is_superuser and admin.check_password("correct horse battery")
    model = ServedModel.objects.get(name="smollm2")
    assert model.source == gguf_path

    out, _ = run("setup_embedded")
    assert KEY.findall(out) == []
    assert "already issued" in out
    assert "correct horse battery" not in out
    assert ApiKey.objects.count() == 1
    assert get_user_model().objects.count() == 1
    assert "Embedding model: smollm2-embed" in out
    assert sorted(ServedModel.objects.values_list("name", "task")) == [
        ("smollm2", "generate"),
        ("smollm2-embed", "embed"),
    ]


def test_setup_embedded_issues_a_new_key_when_all_are_revoked(settings):
    settings.ADMIN_PASSWORD = "x" * 12
    run("setup_embedded")
    ApiKey.objects.update(revoked=True)
    out, _ = run("setup_embedded")
    assert len(KEY.findall(out)) == 1
    assert ApiKey.objects.filter(revoked=False).count() == 1
