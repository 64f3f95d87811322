"""Key lifecycle: rotation with a grace period, admin log entries, per-day usage totals."""

import datetime as dt
import html
import re

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse
from django.utils import timezone

from models_registry.models import ApiKey
from models_registry.services.api_keys import api_key_issue, api_key_rotate, api_key_verify
from models_registry.services.served_models import served_model_register
from monitoring.selectors import api_key_usage_by_day
from monitoring.services import request_record_create

pytestmark = pytest.mark.django_db

ISSUED = re.compile(r'id="issued-api-key"[^>]*>([^<]+)<')


def log_entries(key: ApiKey) -> list[LogEntry]:
    return list(
        LogEntry.objects.filter(content_type=ContentType.objects.get_for_model(ApiKey), object_id=str(key.pk)).order_by(
            "id"
        )
    )


def test_rotate_copies_settings_and_keeps_the_old_key_for_the_grace_period():
    model = served_model_register(name="echo", source="", engine="echo")
    issued = api_key_issue(name="svc", model_names=["echo"], rpm_limit=5, tpm_limit=100, concurrency_limit=2)
    before = timezone.now()
    rotated = api_key_rotate(key=issued.key, grace_seconds=3600)

    new = api_key_verify(plaintext=rotated.plaintext)
    assert new is not None and new.pk != issued.key.pk
    assert new.name == "svc (rotated)"
    assert (new.rpm_limit, new.tpm_limit, new.concurrency_limit) == (5, 100, 2)
    assert list(new.allowed_models.all()) == [model]
    assert new.expires_at is None

    old = ApiKey.objects.get(pk=issued.key.pk)
    assert before + dt.timedelta(seconds=3600) <= old.expires_at <= timezone.now() + dt.timedelta(seconds=3600)
    assert api_key_verify(plaintext=issued.plaintext) is not None  # still inside the grace period
    # The grace period passes.
    assert api_key_verify(plaintext=issued.plaintext, now=old.expires_at + dt.timedelta(seconds=1)) is None
    assert api_key_verify(plaintext=rotated.plaintext, now=old.expires_at + dt.timedelta(seconds=1)) is not None


def test_rotate_with_no_grace_ends_the_old_key_now_and_never_extends_an_expiry():
    soon = timezone.now() + dt.timedelta(minutes=5)
    issued = api_key_issue(name="soon", expires_at=soon)
    rotated = api_key_rotate(key=issued.key, grace_seconds=86400)
    assert ApiKey.objects.get(pk=issued.key.pk).expires_at == soon  # a day's grace would extend it
    assert rotated.key.expires_at == soon  # the successor inherits the expiry

    again = api_key_rotate(key=rotated.key, grace_seconds=0)
    assert api_key_verify(plaintext=rotated.plaintext) is None
    assert api_key_verify(plaintext=again.plaintext) is not None
    assert again.key.name == "soon (rotated)"  # not "(rotated) (rotated)"


def test_rotating_a_revoked_key_is_refused():
    issued = api_key_issue(name="gone")
    ApiKey.objects.filter(pk=issued.key.pk).update(revoked=True)
    with pytest.raises(ValueError):
        api_key_rotate(key=issued.key, grace_seconds=0)
    assert ApiKey.objects.count() == 1


def test_issue_rejects_non_positive_limits():
    with pytest.raises(ValueError):
        api_key_issue(name="bad", rpm_limit=0)


def test_admin_add_revoke_and_rotate_are_logged_and_rotation_shows_the_plaintext_once(admin_client):
    add = admin_client.post(
        reverse("admin:models_registry_apikey_add"),
        {"name": "ops", "owner": "", "expires_at_0": "", "expires_at_1": "", "rpm_limit": "7"},
    )
    plaintext = html.unescape(ISSUED.search(add.content.decode()).group(1)).strip()
    key = api_key_verify(plaintext=plaintext)
    assert key.rpm_limit == 7
    assert [e.action_flag for e in log_entries(key)] == [ADDITION]

    change = admin_client.get(reverse("admin:models_registry_apikey_change", args=[key.pk])).content.decode()
    rotate_url = reverse("admin:models_registry_apikey_rotate", args=[key.pk])
    assert rotate_url in change

    form = admin_client.get(rotate_url)
    assert form.status_code == 200 and 'name="grace_seconds"' in form.content.decode()
    response = admin_client.post(rotate_url, {"grace_seconds": "3600"})
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    new_plaintext = html.unescape(ISSUED.search(response.content.decode()).group(1)).strip()
    new_key = api_key_verify(plaintext=new_plaintext)
    assert new_key is not None and new_key.rpm_limit == 7
    assert api_key_verify(plaintext=plaintext) is not None  # grace period of an hour
    assert ApiKey.objects.get(pk=key.pk).expires_at > timezone.now() + dt.timedelta(minutes=59)

    # Shown once: the new key's change page does not carry it.
    page = admin_client.get(reverse("admin:models_registry_apikey_change", args=[new_key.pk])).content.decode()
    assert new_plaintext not in page and 'id="issued-api-key"' not in page

    admin_client.post(
        reverse("admin:models_registry_apikey_changelist"), {"action": "revoke_keys", "_selected_action": [key.pk]}
    )
    assert api_key_verify(plaintext=plaintext) is None

    entries = log_entries(key)
    assert [e.action_flag for e in entries] == [ADDITION, CHANGE, CHANGE]
    assert "Rotated" in entries[1].get_change_message() and new_key.prefix in entries[1].get_change_message()
    assert entries[2].get_change_message() == "Revoked"
    assert [e.action_flag for e in log_entries(new_key)] == [ADDITION]


def test_admin_rotate_of_a_revoked_key_issues_nothing(admin_client):
    issued = api_key_issue(name="gone")
    ApiKey.objects.filter(pk=issued.key.pk).update(revoked=True)
    response = admin_client.post(
        reverse("admin:models_registry_apikey_rotate", args=[issued.key.pk]), {"grace_seconds": "0"}
    )
    assert response.status_code == 302
    assert ApiKey.objects.count() == 1


def _record(key, when, prompt, completion, status=200):
    request_record_create(
        request_id=f"r{when.timestamp()}-{prompt}-{completion}",
        created_at=when,
        endpoint="chat",
        stream=False,
        duration_ms=1.0,
        status_code=status,
        api_key_id=key.pk,
        model_name="echo",
        prompt_tokens=prompt,
        completion_tokens=completion,
    )


def test_usage_by_day_sums_the_records_of_one_key_and_shows_on_its_admin_page(admin_client):
    key = api_key_issue(name="metered").key
    other = api_key_issue(name="other").key
    today = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0)
    yesterday = today - dt.timedelta(days=1)
    _record(key, today, 5, 3)
    _record(key, today + dt.timedelta(minutes=1), 2, 4)
    _record(key, today + dt.timedelta(minutes=2), None, None, status=429)
    _record(key, yesterday, 10, 20)
    _record(other, today, 100, 100)

    rows = api_key_usage_by_day(key=key)
    assert rows == [
        {"day": today.date(), "requests": 3, "prompt_tokens": 7, "completion_tokens": 7, "total_tokens": 14},
        {"day": yesterday.date(), "requests": 1, "prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
    ]
    page = admin_client.get(reverse("admin:models_registry_apikey_change", args=[key.pk])).content.decode()
    assert 'id="usage-by-day"' in page
    assert f"<td>{today.date().isoformat()}</td><td>3</td><td>7</td><td>7</td><td>14</td>" in page
