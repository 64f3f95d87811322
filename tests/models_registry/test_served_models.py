import pytest
from django.conf import settings
from django.core.exceptions import ValidationError

from models_registry.bundled import BUNDLED_EMBEDDING_MODEL_NAME
from models_registry.engine_choice import engine_choice
from models_registry.models import ServedModel
from models_registry.services.served_models import served_model_ensure_bundled, served_model_register

pytestmark = pytest.mark.django_db


def errors_of(**kwargs) -> dict[str, list[str]]:
    kwargs = {"name": "m", "source": "", "engine": "echo", **kwargs}
    with pytest.raises(ValidationError) as excinfo:
        served_model_register(**kwargs)
    assert not ServedModel.objects.filter(name=kwargs["name"]).exists()
    return excinfo.value.message_dict


@pytest.mark.parametrize("name", ["-leading-dash", "has space", "", "x" * 129])
def test_bad_names_are_rejected(name):
    assert "name" in errors_of(name=name)


def test_good_name_with_punctuation():
    assert served_model_register(name="org/Model-1.5:q4_k", source="", engine="echo").pk


def test_engine_other_than_echo_needs_a_source():
    assert "required" in errors_of(engine="llama_cpp")["source"][0]


def test_echo_needs_no_source():
    model = served_model_register(name="echo", source="", engine="echo")
    assert model.source == "" and model.engine == "echo"


def test_missing_source_path(tmp_path):
    missing = tmp_path / "nope.gguf"
    message = errors_of(engine="llama_cpp", source=str(missing))["source"][0]
    assert str(missing) in message and "No file" in message


def test_source_file_must_be_gguf(tmp_path):
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"\0")
    assert ".gguf" in errors_of(engine="llama_cpp", source=str(weights))["source"][0]


def test_source_may_be_a_gguf_or_a_directory(tmp_path, gguf_path):
    assert served_model_register(name="file", source=gguf_path, engine="llama_cpp").pk
    assert served_model_register(name="dir", source=str(tmp_path), engine="mlx").pk


@pytest.mark.parametrize("aliases", ["smol", ["ok", 3], ["bad alias"]])
def test_aliases_must_be_a_list_of_valid_names(aliases):
    assert "aliases" in errors_of(aliases=aliases)


def test_alias_cannot_repeat_own_name():
    assert "own name" in errors_of(name="m", aliases=["m"])["aliases"][0]


@pytest.mark.parametrize("aliases", [["first"], ["f"], ["x", "F"]])
def test_alias_clashing_with_another_model(aliases):
    served_model_register(name="first", source="", engine="echo", aliases=["f", "F"])
    message = errors_of(name="second", aliases=aliases)["aliases"][0]
    assert "'first'" in message


def test_name_clashing_with_another_models_alias():
    served_model_register(name="first", source="", engine="echo", aliases=["smol"])
    assert "already used" in errors_of(name="smol")["aliases"][0]


def test_unknown_default_param():
    message = errors_of(default_params={"temprature": 0.2})["default_params"][0]
    assert "temprature" in message and "temperature" in message


def test_known_default_params_are_kept():
    model = served_model_register(
        name="m", source="", engine="echo", default_params={"temperature": 0.2, "max_tokens": 64, "stop": ["\n"]}
    )
    assert ServedModel.objects.get(pk=model.pk).default_params["max_tokens"] == 64


def test_register_updates_an_existing_name():
    first = served_model_register(name="m", source="", engine="echo", context_length=64)
    again = served_model_register(name="m", source="", engine="echo", context_length=128, aliases=["mm"])
    assert again.pk == first.pk
    assert ServedModel.objects.get().context_length == 128


def test_ensure_bundled_registers_once_and_keeps_operator_edits(gguf_path):
    model = served_model_ensure_bundled()
    assert model.name == settings.BUNDLED_MODEL_NAME
    assert model.source == gguf_path
    assert "SmolLM2-135M-Instruct" in model.aliases

    # An operator edits the entry in the admin.
    ServedModel.objects.filter(pk=model.pk).update(context_length=1024, aliases=["smol"], enabled=False)
    again = served_model_ensure_bundled()
    assert again.pk == model.pk
    assert ServedModel.objects.count() == 2  # and the embedding model
    stored = ServedModel.objects.get(name=settings.BUNDLED_MODEL_NAME)
    assert (stored.context_length, stored.aliases, stored.enabled) == (1024, ["smol"], False)


def test_ensure_bundled_registers_the_gguf_for_embeddings_too(gguf_path):
    served_model_ensure_bundled()
    embed = ServedModel.objects.get(name=BUNDLED_EMBEDDING_MODEL_NAME)
    assert (embed.task, embed.source, embed.engine, embed.context_length) == ("embed", gguf_path, "auto", 512)
    ServedModel.objects.filter(pk=embed.pk).update(enabled=False)  # an operator turns it off: it stays off
    served_model_ensure_bundled()
    assert not ServedModel.objects.get(pk=embed.pk).enabled


def test_ensure_bundled_refreshes_only_a_stale_source(tmp_path, gguf_path):
    model = served_model_ensure_bundled()
    ServedModel.objects.filter(pk=model.pk).update(source=str(tmp_path / "old-venv" / "model.gguf"))
    assert served_model_ensure_bundled().source == gguf_path
    assert ServedModel.objects.get(pk=model.pk).source == gguf_path

    # A source the operator pointed elsewhere, which exists, is theirs to keep.
    ServedModel.objects.filter(pk=model.pk).update(source=str(tmp_path))
    served_model_ensure_bundled()
    assert ServedModel.objects.get(pk=model.pk).source == str(tmp_path)


@pytest.mark.django_db
def test_upstream_needs_a_base_url_not_a_source():

    model = ServedModel(name="up", engine="upstream", engine_options={})
    with pytest.raises(ValidationError) as caught:
        model.full_clean()
    assert "base_url" in str(caught.value.message_dict.get("engine_options"))
    model.engine_options = {"base_url": "http://127.0.0.1:8080/v1"}
    model.full_clean()


@pytest.mark.django_db
def test_vllm_accepts_a_hugging_face_id_but_checks_paths():

    ServedModel(name="v1", engine="vllm", source="HuggingFaceTB/SmolLM2-135M-Instruct").full_clean()
    with pytest.raises(ValidationError) as caught:
        ServedModel(name="v2", engine="vllm", source="/no/such/dir").full_clean()
    assert "No file or directory" in str(caught.value)


def test_auto_embeds_on_llama_cpp_whatever_the_hardware_unless_forced(settings):
    model = ServedModel(name="e", engine="auto", task="embed")
    settings.INFERENCE_ENGINE = "auto"
    assert engine_choice(model)[0] == "llama_cpp"
    settings.INFERENCE_ENGINE = "echo"
    assert engine_choice(model)[0] == "echo"


def test_an_engine_without_embeddings_cannot_take_the_embed_task():
    errors = errors_of(engine="mlx", task="embed")
    assert "embeddings" in errors["task"][0]
