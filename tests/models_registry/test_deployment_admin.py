"""The admin's deployment actions (load, unload, reload; drain, resume), the model page's copies and the worker page."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from models_registry.models import Replica, ServedModel, WorkerRegistration
from models_registry.services.deployments import replica_set_state
from models_registry.services.served_models import served_model_register
from models_registry.services.workers import worker_register

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:models_registry_servedmodel_changelist"
WORKERS = "admin:models_registry_workerregistration_changelist"


@pytest.fixture
def on_demand():
    model = served_model_register(name="lazy", source="", engine="echo")
    ServedModel.objects.filter(pk=model.pk).update(replicas=0)
    model.refresh_from_db()
    return model


@pytest.fixture
def deployed():
    model = served_model_register(name="busy", source="", engine="echo")
    ServedModel.objects.filter(pk=model.pk).update(replicas=2)
    model.refresh_from_db()
    return model


@pytest.fixture
def worker():
    return worker_register(
        worker_id="gpu-1:42:x",
        host="gpu-1",
        pid=42,
        models=[],
        concurrency=4,
        labels=["gpu", "big"],
        capacity={
            "memory_total_bytes": 24 * 1024**3,
            "memory_budget_bytes": 8 * 1024**3,
            "max_loaded_models": 2,
            "gpus": [{"name": "H200", "memory_mb": 143771}],
        },
    )


def logged(obj) -> list[str]:
    """The admin log's change messages for `obj`, oldest first."""
    entries = LogEntry.objects.filter(object_id=str(obj.pk), action_flag=CHANGE).order_by("action_time", "pk")
    return [entry.get_change_message() for entry in entries]


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def act(admin_client, action: str, *models):
    return admin_client.post(
        reverse(CHANGELIST), {"action": action, "_selected_action": [m.pk for m in models]}, follow=True
    )


def test_load_action_wants_an_on_demand_model_and_is_logged(admin_client, on_demand, settings):
    before = timezone.now()
    response = act(admin_client, "load_models", on_demand)
    assert response.status_code == 200
    on_demand.refresh_from_db()
    assert on_demand.wanted_until is not None and on_demand.wanted_until >= before
    assert logged(on_demand) == ["Load"]
    assert any(m.startswith("Loading lazy:") for m in messages_of(response))


def test_unload_action_makes_a_deployed_model_on_demand(admin_client, deployed, on_demand):
    response = act(admin_client, "unload_models", deployed, on_demand)
    assert response.status_code == 200
    deployed.refresh_from_db()
    on_demand.refresh_from_db()
    assert deployed.replicas == 0 and deployed.wanted_until is None
    assert logged(deployed) == ["Unload (replicas set to 0: on demand)"]
    assert logged(on_demand) == ["Unload"]
    assert any("It is on demand now" in m for m in messages_of(response))


def test_reload_action_raises_the_revision(admin_client, deployed):
    act(admin_client, "reload_models", deployed)
    act(admin_client, "reload_models", deployed)
    deployed.refresh_from_db()
    assert deployed.revision == 2
    assert logged(deployed) == ["Reload (revision 1)", "Reload (revision 2)"]


def test_the_model_pages_buttons_post_the_same_actions(admin_client, deployed):
    page = admin_client.get(reverse("admin:models_registry_servedmodel_change", args=[deployed.pk])).content.decode()
    for action in ("load", "unload", "reload"):
        assert f'id="deployment-{action}"' in page
    url = reverse("admin:models_registry_servedmodel_deployment", args=[deployed.pk, "reload"])
    assert admin_client.get(url).status_code == 405  # a link must never reload a model
    response = admin_client.post(url)
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:models_registry_servedmodel_change", args=[deployed.pk])
    deployed.refresh_from_db()
    assert deployed.revision == 1 and logged(deployed) == ["Reload (revision 1)"]
    unload = reverse("admin:models_registry_servedmodel_deployment", args=[deployed.pk, "unload"])
    admin_client.post(unload)
    deployed.refresh_from_db()
    assert deployed.replicas == 0
    assert (
        admin_client.post(reverse("admin:models_registry_servedmodel_deployment", args=[deployed.pk, "x"])).status_code
        == 404
    )


def test_a_disabled_models_action_warns_that_nothing_loads_it(admin_client, on_demand):
    ServedModel.objects.filter(pk=on_demand.pk).update(enabled=False)
    response = act(admin_client, "load_models", on_demand)
    assert any("It is disabled" in m for m in messages_of(response))


def test_staff_without_change_permission_cannot_act(on_demand, deployed):
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_servedmodel"))
    client = Client()
    client.force_login(viewer)
    url = reverse("admin:models_registry_servedmodel_deployment", args=[deployed.pk, "reload"])
    assert client.post(url).status_code == 403
    changelist = client.get(reverse(CHANGELIST))
    assert changelist.status_code == 200 and "reload_models" not in changelist.content.decode()
    # It may still watch the copies.
    assert client.get(reverse("admin:models_registry_servedmodel_replicas", args=[deployed.pk])).status_code == 200
    deployed.refresh_from_db()
    assert deployed.revision == 0


def test_the_model_page_shows_its_copies_and_the_json_view_their_live_state(admin_client, deployed, worker):
    url = reverse("admin:models_registry_servedmodel_replicas", args=[deployed.pk])
    assert admin_client.get(url).json() == {
        "model": "busy",
        "replicas": [],
        "html": '<p id="replica-table" class="replica-none">No copy is loaded on any host.</p>',
    }
    replica_set_state(
        worker_id=worker.worker_id,
        model_name="busy",
        revision="r1",
        engine="echo",
        state="ready",
        memory_bytes=150 * 1024**2,
    )
    replica_set_state(
        worker_id=worker.worker_id,
        model_name="busy",
        revision="r2",
        engine="echo",
        state="failed",
        error="out of memory",
    )
    body = admin_client.get(url).json()
    assert [(r["worker"], r["host"], r["revision"], r["state"], r["error"]) for r in body["replicas"]] == [
        ("gpu-1:42:x", "gpu-1", "r1", "ready", ""),
        ("gpu-1:42:x", "gpu-1", "r2", "failed", "out of memory"),
    ]
    assert body["replicas"][0]["memory_bytes"] == 150 * 1024**2
    assert 'class="replica replica-failed"' in body["html"] and "out of memory" in body["html"]
    assert "150.0\xa0MB" in body["html"]

    page = admin_client.get(reverse("admin:models_registry_servedmodel_change", args=[deployed.pk])).content.decode()
    assert f'id="replica-panel" data-url="{url}"' in page
    assert page.count('class="replica replica-') == 2 and "out of memory" in page

    assert Client().get(url).status_code == 302  # to the login page: staff only

    changelist = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert '<td class="field-copies_summary">1 failed, 1 ready</td>' in changelist


def test_drain_and_resume_actions_land_in_the_log(admin_client, worker):
    response = admin_client.post(
        reverse(WORKERS), {"action": "drain_workers", "_selected_action": [worker.pk]}, follow=True
    )
    assert response.status_code == 200
    worker.refresh_from_db()
    assert worker.drained
    assert any(m.startswith("Draining 1 worker(s)") for m in messages_of(response))
    admin_client.post(reverse(WORKERS), {"action": "resume_workers", "_selected_action": [worker.pk]})
    worker.refresh_from_db()
    assert not worker.drained
    assert logged(worker) == ["Drained", "Resumed"]


def test_the_worker_pages_show_labels_capacity_and_copies(admin_client, worker, deployed):
    replica_set_state(worker_id=worker.worker_id, model_name="busy", revision="r1", engine="echo", state="loading")
    changelist = admin_client.get(reverse(WORKERS)).content.decode()
    assert "gpu, big" in changelist
    assert "memory 24.0\xa0GB, budget 8.0\xa0GB, at most 2 models, GPUs: H200 (140.4\xa0GB)" in changelist
    page = admin_client.get(reverse("admin:models_registry_workerregistration_change", args=[worker.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "copies" in html.lower() and "busy" in html and "loading" in html
    assert Replica.objects.filter(worker=worker).count() == 1


def test_drain_needs_the_change_permission(worker):
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_workerregistration"))
    client = Client()
    client.force_login(viewer)
    page = client.get(reverse(WORKERS))
    assert page.status_code == 200 and "drain_workers" not in page.content.decode()
    client.post(reverse(WORKERS), {"action": "drain_workers", "_selected_action": [worker.pk]})
    page = client.get(reverse("admin:models_registry_workerregistration_change", args=[worker.pk]))
    assert page.status_code == 200 and 'id="worker-drain"' not in page.content.decode()
    drain = reverse("admin:models_registry_workerregistration_action", args=[worker.pk, "drain"])
    assert client.post(drain).status_code == 403
    assert not WorkerRegistration.objects.get(pk=worker.pk).drained


def test_the_worker_pages_button_drains_and_resumes_it(admin_client, worker):
    page_url = reverse("admin:models_registry_workerregistration_change", args=[worker.pk])
    drain = reverse("admin:models_registry_workerregistration_action", args=[worker.pk, "drain"])
    assert 'id="worker-drain"' in admin_client.get(page_url).content.decode()
    assert admin_client.get(drain).status_code == 405
    response = admin_client.post(drain)
    assert response.status_code == 302 and response["Location"] == page_url
    worker.refresh_from_db()
    assert worker.drained
    page = admin_client.get(page_url).content.decode()
    assert 'id="worker-resume"' in page and 'id="worker-drain"' not in page
    admin_client.post(reverse("admin:models_registry_workerregistration_action", args=[worker.pk, "resume"]))
    worker.refresh_from_db()
    assert not worker.drained
    assert logged(worker) == ["Drained", "Resumed"]
    assert (
        admin_client.post(
            reverse("admin:models_registry_workerregistration_action", args=[worker.pk, "kill"])
        ).status_code
        == 404
    )
