"""`manage.py register_model`: option parsing, engine choice, refusals, and registering again."""

import io

import pytest
from django.core.management import CommandError, call_command

from models_registry.models import ServedModel

pytestmark = pytest.mark.django_db


def register(*args: str) -> str:
    out = io.StringIO()
    call_command("register_model", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_registers_a_gguf_with_the_defaults(gguf_path):
    out = register("smol", "--source", gguf_path)
    assert out.strip() == "Registered smol (auto, context 2048)"
    model = ServedModel.objects.get(name="smol")
    assert (model.source, model.engine, model.context_length, model.enabled) == (gguf_path, "auto", 2048, True)
    assert model.aliases == [] and model.engine_options == {} and model.default_params == {}


def test_every_field_the_command_takes(gguf_path):
    register(
        "smol",
        "--source",
        gguf_path,
        "--engine",
        "llama_cpp",
        "--context-length",
        "4096",
        "--alias",
        "small",
        "--alias",
        "tiny",
        "--disabled",
    )
    model = ServedModel.objects.get(name="smol")
    assert model.engine == "llama_cpp" and model.context_length == 4096
    assert model.aliases == ["small", "tiny"] and not model.enabled


def test_option_values_are_json_when_they_parse_and_strings_otherwise():
    register(
        "e",
        "--engine",
        "echo",
        "--option",
        "token_delay_ms=20",
        "--option",
        "prefix_cache=true",
        "--option",
        "ratio=0.5",
        "--option",
        "label=fast lane",
        "--option",
        'args=["--x", 1]',
        "--option",
        "url=http://h:1/v1?a=b",
        "--option",
        "empty=",
    )
    assert ServedModel.objects.get(name="e").engine_options == {
        "token_delay_ms": 20,
        "prefix_cache": True,
        "ratio": 0.5,
        "label": "fast lane",
        "args": ["--x", 1],
        "url": "http://h:1/v1?a=b",
        "empty": "",
    }


@pytest.mark.parametrize("option", ["n_threads", "=2", ""])
def test_an_option_without_key_and_value_is_refused(option):
    with pytest.raises(CommandError, match="use key=value"):
        register("e", "--engine", "echo", "--option", option)
    assert not ServedModel.objects.exists()


def test_an_unknown_engine_is_refused():
    with pytest.raises(CommandError, match="invalid choice: 'llamacpp'"):
        register("e", "--engine", "llamacpp")
    assert not ServedModel.objects.exists()


@pytest.mark.parametrize("engine", ["echo", "llama_cpp", "mlx", "vllm", "auto"])
def test_each_engine_choice_is_stored(engine, gguf_path):
    register("m", "--engine", engine, "--source", gguf_path)
    assert ServedModel.objects.get(name="m").engine == engine


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "source: A source is required"),
        (("--source", "/nowhere/model.gguf"), "source: No file or directory at /nowhere/model.gguf"),
        (("--source", __file__), "is a file but not a .gguf file"),
    ],
)
def test_a_missing_or_wrong_source_is_refused(args, message):
    with pytest.raises(CommandError, match=message):
        register("m", "--engine", "llama_cpp", *args)
    assert not ServedModel.objects.exists()


def test_upstream_needs_a_base_url_option():
    with pytest.raises(CommandError, match="engine_options: The upstream engine needs"):
        register("up", "--engine", "upstream")
    register("up", "--engine", "upstream", "--option", "base_url=http://127.0.0.1:9/v1")
    assert ServedModel.objects.get(name="up").engine_options == {"base_url": "http://127.0.0.1:9/v1"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("bad name",), "name: Use 1-128 letters"),
        (("m", "--context-length", "8"), "context_length: Ensure this value is greater than or equal to 16"),
        (("m", "--alias", "m"), "aliases: An alias cannot repeat"),
    ],
)
def test_invalid_fields_are_refused_like_the_admin_refuses_them(args, message):
    with pytest.raises(CommandError, match=message):
        register(*args, "--engine", "echo")
    assert not ServedModel.objects.exists()


def test_an_alias_taken_by_another_model_is_refused():
    register("a", "--engine", "echo", "--alias", "shared")
    with pytest.raises(CommandError, match="aliases: shared already used by model 'a'"):
        register("b", "--engine", "echo", "--alias", "shared")
    assert list(ServedModel.objects.values_list("name", flat=True)) == ["a"]


def test_registering_again_updates_the_same_model(gguf_path):
    register("m", "--engine", "echo", "--option", "token_delay_ms=5", "--alias", "old")
    first = ServedModel.objects.get(name="m")
    out = register("m", "--engine", "llama_cpp", "--source", gguf_path, "--context-length", "1024", "--alias", "new")
    assert out.strip() == "Registered m (llama_cpp, context 1024)"
    model = ServedModel.objects.get()
    assert model.pk == first.pk
    assert (model.engine, model.source, model.context_length) == ("llama_cpp", gguf_path, 1024)
    # What the command line says replaces what was there, options and aliases included.
    assert model.aliases == ["new"] and model.engine_options == {}


def test_registering_again_keeps_default_params_set_in_the_admin():
    # The command has no flag for sampling defaults, so it must not erase the ones an operator set.
    register("m", "--engine", "echo")
    ServedModel.objects.filter(name="m").update(default_params={"temperature": 0.2, "max_tokens": 64})
    register("m", "--engine", "echo", "--context-length", "4096")
    model = ServedModel.objects.get(name="m")
    assert model.context_length == 4096
    assert model.default_params == {"temperature": 0.2, "max_tokens": 64}


def test_a_refused_update_leaves_the_model_as_it_was():
    register("m", "--engine", "echo", "--option", "token_delay_ms=5")
    with pytest.raises(CommandError, match="source: A source is required"):
        register("m", "--engine", "llama_cpp")
    model = ServedModel.objects.get(name="m")
    assert model.engine == "echo" and model.engine_options == {"token_delay_ms": 5}


def test_task_is_set_by_flag_and_kept_on_registering_again(gguf_path):
    out = register("vectors", "--source", gguf_path, "--task", "embed", "--context-length", "512")
    assert out.strip() == "Registered vectors (auto, context 512, task embed)"
    register("vectors", "--source", gguf_path)  # no --task: the registered one stays
    assert ServedModel.objects.get(name="vectors").task == "embed"
    register("vectors", "--source", gguf_path, "--task", "generate")
    assert ServedModel.objects.get(name="vectors").task == "generate"
    with pytest.raises(CommandError):
        register("on-mlx", "--source", gguf_path, "--engine", "mlx", "--task", "embed")
