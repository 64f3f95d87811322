"""A host converging on the deployments: real database, real engines (echo), one reconciler pass at a time."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from engines.host import EngineHost
from models_registry import deployment_events
from models_registry.models import Replica, ServedModel, WorkerRegistration
from models_registry.services import deployments as deployment_services
from models_registry.services.served_models import served_model_register
from models_registry.services.workers import worker_register
from serving.deployments import demand
from serving.deployments.reconciler import Reconciler

pytestmark = pytest.mark.django_db(transaction=True)


class RecordingGateway:
    """A gateway that remembers what it was told, as a worker's queue consumer would act on it."""

    def __init__(self):
        self.events: list[tuple[str, str]] = []

    def open(self, model_name):
        self.events.append(("open", model_name))

    def close(self, model_name):
        self.events.append(("close", model_name))


@pytest.fixture
def host():
    host = EngineHost(load_on_demand=False)
    yield host
    host.shutdown()


def register_worker(worker_id: str, **fields) -> WorkerRegistration:
    worker = worker_register(worker_id=worker_id, host=worker_id, pid=1, models=[], concurrency=1, **fields)
    WorkerRegistration.objects.filter(pk=worker.pk).update(state=WorkerRegistration.State.READY)
    return worker


def echo(name: str, **deployment) -> ServedModel:
    return served_model_register(name=name, source="", engine="echo", context_length=64, deployment=deployment)


@pytest.fixture
def reconciler(host):
    register_worker("w1")
    gateway = RecordingGateway()
    reconciler = Reconciler(host=host, worker_id="w1", gateway=gateway)
    reconciler.gateway_events = gateway.events
    return reconciler


def rows(model_name: str) -> list[tuple[str, str]]:
    return list(Replica.objects.filter(model__name=model_name).values_list("worker__worker_id", "state"))


def test_a_model_with_replicas_loads_and_its_queue_opens(reconciler, host):
    echo("alpha")
    reconciler.reconcile_once()
    assert host.has("alpha")
    assert rows("alpha") == [("w1", "ready")]
    assert reconciler.gateway_events == [("open", "alpha")]
    assert WorkerRegistration.objects.get(worker_id="w1").hosted_models == ["alpha"]


def test_an_edit_reloads_and_the_old_revision_row_goes(reconciler, host):
    model = echo("alpha")
    reconciler.reconcile_once()
    old_engine = host.engine_for("alpha")
    old_revision = Replica.objects.get(model=model).revision
    served_model_register(name="alpha", source="", engine="echo", context_length=128)
    reconciler.reconcile_once()
    assert host.engine_for("alpha") is not old_engine and not old_engine.loaded
    assert host.engine_for("alpha").spec.context_length == 128
    reconciler.reconcile_once()  # the old copy is unloaded: its row goes
    assert [r for r in Replica.objects.filter(model=model).values_list("revision", flat=True)] != [old_revision]
    assert rows("alpha") == [("w1", "ready")]


def test_the_admins_reload_raises_the_revision_and_reloads(reconciler, host):
    model = echo("alpha")
    reconciler.reconcile_once()
    before = host.copies()["alpha"].version
    deployment_services.served_model_reload(model=model)
    reconciler.reconcile_once()
    assert host.copies()["alpha"].version != before


def test_on_demand_loads_when_wanted_and_unloads_after_keep_alive(reconciler, host):
    echo("lazy", replicas=0, keep_alive_seconds=0)
    reconciler.reconcile_once()
    assert not host.has("lazy")
    deployment_services.served_model_want(model_name="lazy", seconds=60)
    reconciler.reconcile_once()
    assert host.has("lazy")
    assert ServedModel.objects.get(name="lazy").wanted_until is None  # demand met: keep-alive decides now
    host._copies["lazy"].last_used = (timezone.now() - dt.timedelta(seconds=1)).timestamp()
    reconciler.reconcile_once()
    assert not host.has("lazy")
    assert rows("lazy") == []
    assert ("close", "lazy") in reconciler.gateway_events


def test_the_admins_unload_drops_every_copy_now(reconciler, host):
    model = echo("alpha", keep_alive_seconds=None)
    reconciler.reconcile_once()
    stop = deployment_events.listen(reconciler._on_event)
    try:
        assert deployment_services.served_model_unload(model=model) is True
    finally:
        stop()
    reconciler.reconcile_once()
    assert not host.has("alpha")
    assert ServedModel.objects.get(name="alpha").replicas == 0


def test_a_drained_worker_gives_its_copies_up_and_resumes(reconciler, host):
    echo("alpha")
    reconciler.reconcile_once()
    worker = WorkerRegistration.objects.get(worker_id="w1")
    deployment_services.worker_drain(worker=worker)
    reconciler.reconcile_once()
    assert not host.has("alpha")
    assert WorkerRegistration.objects.get(worker_id="w1").state == WorkerRegistration.State.DRAINING
    deployment_services.worker_resume(worker=worker)
    reconciler.reconcile_once()
    assert host.has("alpha")
    assert WorkerRegistration.objects.get(worker_id="w1").state == WorkerRegistration.State.READY


def test_placement_leaves_a_model_for_the_labelled_worker(reconciler, host):
    register_worker("w2", labels=["gpu"])
    echo("big", placement_label="gpu")
    reconciler.reconcile_once()
    assert not host.has("big")
    assert demand.why_not_placeable(model_name="big") is None  # w2 can take it


def test_an_unplaceable_model_says_why(reconciler):
    echo("big", replicas=0, placement_label="tpu")
    reason = demand.why_not_placeable(model_name="big")
    assert reason is not None and "label `tpu`" in reason


def test_a_failed_load_is_shown_with_its_error_and_refused_with_it(reconciler, host, tmp_path):
    missing = tmp_path / "missing.gguf"
    missing.write_bytes(b"not a gguf")
    served_model_register(name="broken", source=str(missing), engine="llama_cpp", context_length=64)
    reconciler.reconcile_once()
    row = Replica.objects.get(model__name="broken")
    assert row.state == Replica.State.FAILED and row.error
    assert demand.why_not_placeable(model_name="broken").startswith("it failed to load on w1: ")


def test_a_pinned_worker_holds_exactly_its_models(host):
    register_worker("pinned", capacity={"pinned": True})
    echo("alpha", replicas=0)
    echo("beta")
    Reconciler(host=host, worker_id="pinned", pinned=["alpha"]).reconcile_once()
    assert host.has("alpha") and not host.has("beta")


def test_a_dead_workers_copies_are_placed_again(reconciler, host):
    register_worker("w0")  # sorts first, so only stickiness keeps the copy there
    model = echo("alpha")
    deployment_services.replica_set_state(
        worker_id="w0", model_name="alpha", revision="r", engine="echo", state=Replica.State.READY
    )
    reconciler.reconcile_once()
    assert not host.has("alpha")  # w0 holds the one replica
    WorkerRegistration.objects.filter(worker_id="w0").update(last_heartbeat=timezone.now() - dt.timedelta(hours=1))
    reconciler.reconcile_once()
    assert host.has("alpha")
    assert WorkerRegistration.objects.get(worker_id="w0").state == WorkerRegistration.State.DEAD
    assert rows(model.name) == [("w1", "ready")]


def test_fewer_hosts_than_replicas_still_serves(reconciler):
    echo("wide", replicas=3)
    assert demand.why_not_placeable(model_name="wide") is None
