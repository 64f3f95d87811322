"""/v1/models and /v1/system/status through the ASGI stack."""

import pytest
from asgiref.sync import sync_to_async

from models_registry.models import Replica, ServedModel, WorkerRegistration
from models_registry.services.api_keys import api_key_issue
from models_registry.services.deployments import replica_set_state
from models_registry.services.served_models import served_model_register
from models_registry.services.workers import worker_register, worker_set_state

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def second_model(transactional_db):
    return served_model_register(name="echo-2", source="", engine="echo", aliases=["e2"])


async def test_model_list_shape(client, echo_model, second_model):
    body = (await client.get("/v1/models")).json()
    assert body["object"] == "list"
    assert sorted(m["id"] for m in body["data"]) == ["echo", "echo-2"]
    for model in body["data"]:
        assert model["object"] == "model" and isinstance(model["created"], int) and model["owned_by"]


async def test_allowlist_limits_listing_and_use(client, echo_model, second_model):
    limited = (await sync_to_async(api_key_issue)(name="limited", model_names=["echo-2"])).plaintext
    headers = {"Authorization": f"Bearer {limited}"}
    listed = (await client.get("/v1/models", headers=headers)).json()["data"]
    assert [m["id"] for m in listed] == ["echo-2"]
    assert (await client.get("/v1/models/echo", headers=headers)).status_code == 404
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    response = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


async def test_model_detail_and_alias(client, echo_model, second_model):
    assert (await client.get("/v1/models/echo-2")).json()["id"] == "echo-2"
    assert (await client.get("/v1/models/e2")).json()["id"] == "e2"
    assert (await client.get("/v1/models/missing")).status_code == 404


async def test_disabled_model_is_hidden(client, echo_model, second_model):
    second_model.enabled = False
    await second_model.asave()
    assert [m["id"] for m in (await client.get("/v1/models")).json()["data"]] == ["echo"]


async def test_system_status(client, echo_model):
    await client.post("/v1/chat/completions", json={"model": "echo", "messages": [{"role": "user", "content": "x"}]})
    body = (await client.get("/v1/system/status")).json()
    assert body["mode"] == "embedded"
    assert body["platform"]["system"] == "linux"
    assert {"cpu_percent", "memory", "disk"} <= set(body["system"])
    echo_state = next(e for e in body["engines"] if e["model"] == "echo")
    assert echo_state["loaded"] and echo_state["engine"] == "echo"
    assert body["ready"] is True


async def test_system_status_needs_a_key(asgi_app, echo_model):
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi_app), base_url="http://t") as anonymous:
        assert (await anonymous.get("/v1/system/status")).status_code == 401


async def test_models_say_which_are_loaded(client, echo_model, second_model):
    """`loaded`: a ready copy on a live host, whichever mode; a loading copy or a dead host's is not.

    echo-2 is placed on a label no host here has, so only the copy this test reports exists."""
    await ServedModel.objects.filter(pk=second_model.pk).aupdate(placement_label="elsewhere")

    async def loaded() -> tuple[bool, bool]:
        listed = {m["id"]: m["loaded"] for m in (await client.get("/v1/models")).json()["data"]}
        return listed["echo-2"], (await client.get("/v1/models/e2")).json()["loaded"]

    assert await loaded() == (False, False)
    await sync_to_async(worker_register)(worker_id="host-a", host="a", pid=1, models=[], concurrency=1)
    report = sync_to_async(replica_set_state)
    await report(worker_id="host-a", model_name="echo-2", revision="1", engine="echo", state=Replica.State.LOADING)
    assert await loaded() == (False, False)
    await report(worker_id="host-a", model_name="echo-2", revision="1", engine="echo", state=Replica.State.READY)
    assert await loaded() == (True, True)
    await sync_to_async(worker_set_state)(worker_id="host-a", state=WorkerRegistration.State.DEAD)
    assert await loaded() == (False, False)
