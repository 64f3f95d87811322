import html
import re

import pytest
from django.test import Client
from django.urls import reverse

from models_registry.models import ApiKey, ServedModel
from models_registry.services.api_keys import api_key_issue, api_key_verify, hash_secret
from models_registry.services.served_models import served_model_register

from .admin_forms import served_model_form

pytestmark = pytest.mark.django_db

ISSUED = re.compile(r'id="issued-api-key"[^>]*>([^<]+)<')


def add_key(admin_client, **fields):
    data = {"name": "web", "owner": "", "expires_at_0": "", "expires_at_1": "", **fields}
    return admin_client.post(reverse("admin:models_registry_apikey_add"), data)


def test_admin_requires_login():
    for url in (reverse("admin:index"), reverse("admin:models_registry_apikey_add")):
        response = Client().get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_add_shows_the_plaintext_once_and_stores_only_its_hash(admin_client):
    response = add_key(admin_client)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    match = ISSUED.search(response.content.decode())
    assert match, response.content.decode()[:2000]
    plaintext = html.unescape(match.group(1)).strip()

    key = api_key_verify(plaintext=plaintext)
    assert key is not None and key.name == "web"
    row = ApiKey.objects.filter(pk=key.pk).values().get()
    assert row["hashed_secret"] == hash_secret(plaintext)
    assert not any(plaintext in str(v) for v in row.values())

    change = admin_client.get(reverse("admin:models_registry_apikey_change", args=[key.pk]))
    assert change.status_code == 200
    page = change.content.decode()
    assert key.prefix in page
    assert plaintext not in page and plaintext.split("-", 2)[2] not in page
    assert 'id="issued-api-key"' not in page


def test_add_with_model_allowlist(admin_client):
    model = served_model_register(name="echo", source="", engine="echo")
    response = add_key(admin_client, allowed_models=[model.pk])
    plaintext = html.unescape(ISSUED.search(response.content.decode()).group(1)).strip()
    assert list(api_key_verify(plaintext=plaintext).allowed_models.all()) == [model]


def test_editing_a_key_keeps_its_secret(admin_client):
    issued = api_key_issue(name="old")
    url = reverse("admin:models_registry_apikey_change", args=[issued.key.pk])
    response = admin_client.post(url, {"name": "renamed", "owner": "", "expires_at_0": "", "expires_at_1": ""})
    assert response.status_code == 302
    key = api_key_verify(plaintext=issued.plaintext)
    assert key is not None and key.name == "renamed"


def test_revoke_action(admin_client):
    keep = api_key_issue(name="keep")
    drop = api_key_issue(name="drop")
    response = admin_client.post(
        reverse("admin:models_registry_apikey_changelist"),
        {
            "action": "revoke_keys",
            "_selected_action": [drop.key.pk],
        },
        follow=True,
    )
    assert response.status_code == 200
    assert "Revoked 1 key(s)." in response.content.decode()
    assert api_key_verify(plaintext=drop.plaintext) is None
    assert api_key_verify(plaintext=keep.plaintext) is not None


def test_served_model_add_rejects_a_missing_source(admin_client, tmp_path):
    missing = tmp_path / "missing.gguf"
    response = admin_client.post(
        reverse("admin:models_registry_servedmodel_add"), served_model_form(source=str(missing))
    )
    assert response.status_code == 200  # the form again, not a redirect
    errors = response.context["adminform"].form.errors
    assert errors["source"] == [f"No file or directory at {missing}."]
    assert f"No file or directory at {missing}." in response.content.decode()
    assert not ServedModel.objects.exists()


def test_served_model_add_and_change_page(admin_client, gguf_path):
    response = admin_client.post(
        reverse("admin:models_registry_servedmodel_add"),
        served_model_form(name="smol", source=gguf_path, aliases='["s"]'),
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    model = ServedModel.objects.get(name="smol")
    assert model.aliases == ["s"] and model.engine == "llama_cpp"
    page = admin_client.get(reverse("admin:models_registry_servedmodel_change", args=[model.pk]))
    assert page.status_code == 200 and "Resolves to" in page.content.decode()


def test_the_admin_form_sets_the_task_and_refuses_embed_on_an_engine_without_it(admin_client, gguf_path):
    url = reverse("admin:models_registry_servedmodel_add")
    response = admin_client.post(url, served_model_form(name="vectors", source=gguf_path, task="embed"))
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert ServedModel.objects.get(name="vectors").task == "embed"
    refused = admin_client.post(
        url,
        served_model_form(name="on-mlx", source=gguf_path, engine="mlx", task="embed"),
    )
    assert refused.status_code == 200
    assert "does not serve embeddings" in refused.context["adminform"].form.errors["task"][0]


def test_model_page_shows_the_capability_table_with_its_engine_in_bold(admin_client, gguf_path):
    from engines.capabilities import CAPABILITIES

    admin_client.post(
        reverse("admin:models_registry_servedmodel_add"), served_model_form(name="smol", source=gguf_path)
    )
    model = ServedModel.objects.get(name="smol")
    page = admin_client.get(reverse("admin:models_registry_servedmodel_change", args=[model.pk])).content.decode()
    table = page[page.index('id="capability-table"') : page.index("</table>", page.index('id="capability-table"'))]
    assert all(f"<th>{engine}</th>" in table for engine in CAPABILITIES)
    assert '<tr style="font-weight:bold"><th>llama_cpp</th>' in table
