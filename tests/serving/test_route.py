"""A request's route is resolved once per model version, and follows an edit of the model."""

import pytest

from models_registry.services.served_models import served_model_register
from serving.route import route_for

pytestmark = pytest.mark.django_db


def test_a_model_version_resolves_once_and_an_edit_resolves_again(settings, gguf_path):
    settings.INFERENCE_ENGINE = "echo"
    model = served_model_register(name="m", source=gguf_path, engine="auto", context_length=4096)
    first = route_for(model)
    assert (first.engine, first.spec.name, first.spec.context_length) == ("echo", "m", 4096)
    assert first.capabilities >= {"streaming", "stop", "seed"}
    assert route_for(model).spec is first.spec  # the same version: the cached resolution

    model.context_length = 1024
    model.save()  # a new updated_at: a new version
    assert route_for(model).spec.context_length == 1024

    settings.INFERENCE_ENGINE = "llama_cpp"  # what `auto` resolves to is part of the version
    assert route_for(model).engine == "llama_cpp"


def test_a_route_carries_the_model_as_the_request_found_it(settings):
    settings.INFERENCE_ENGINE = "echo"
    model = served_model_register(name="m", source="", engine="echo", context_length=4096)
    route_for(model)
    model.default_params = {"temperature": 0.2}  # read by the protocol module from route.model
    assert route_for(model).model is model
