"""The served model's admin form: typed fields where the model stores JSON, posted as a browser would."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from models_registry.bundled import bundled_model_path
from models_registry.forms_fields import gguf_sources
from models_registry.keep_alive import format_keep_alive
from models_registry.models import ServedModel, WorkerRegistration
from models_registry.services.served_models import served_model_register
from models_registry.services.workers import worker_register

from .admin_forms import resubmitted, served_model_form

pytestmark = pytest.mark.django_db

ADD = "admin:models_registry_servedmodel_add"


def change_url(model: ServedModel) -> str:
    return reverse("admin:models_registry_servedmodel_change", args=[model.pk])


def form_of(response):
    return response.context["adminform"].form


def add(admin_client, **fields):
    return admin_client.post(reverse(ADD), served_model_form(**fields))


def test_typed_engine_options_are_stored_and_shown_again_unchanged(admin_client, gguf_path):
    response = add(
        admin_client,
        name="smol",
        source=gguf_path,
        option_llama_cpp_n_threads="2",
        option_llama_cpp_flash_attn="off",
        option_llama_cpp_kv_unified="no",
        option_llama_cpp_min_p="0.05",
        option_llama_cpp_max_waiting="0",
        engine_options='{"custom": [1, 2]}',
        default_temperature="0.2",
        default_max_tokens="64",
        default_params='{"stop": ["\\n\\n"]}',
        aliases="smol-a, smol-b",
        keep_alive_seconds="90m",
        slots="4",
    )
    assert response.status_code == 302, form_of(response).errors
    model = ServedModel.objects.get(name="smol")
    expected_options = {"n_threads": 2, "flash_attn": False, "kv_unified": False, "min_p": 0.05, "max_waiting": 0}
    assert model.engine_options == {**expected_options, "custom": [1, 2]}
    assert model.default_params == {"temperature": 0.2, "max_tokens": 64, "stop": ["\n\n"]}
    assert model.aliases == ["smol-a", "smol-b"]
    assert model.keep_alive_seconds == 5400 and model.slots == 4

    page = admin_client.get(change_url(model))
    form = form_of(page)
    assert form["option_llama_cpp_n_threads"].value() == 2
    assert form["option_llama_cpp_flash_attn"].value() == "off"
    assert form["option_llama_cpp_kv_unified"].value() == "no"
    assert form["option_llama_cpp_max_waiting"].value() == 0
    assert json.loads(form["engine_options"].value()) == {"custom": [1, 2]}  # only what no field covers
    assert form["default_temperature"].value() == 0.2
    assert json.loads(form["default_params"].value()) == {"stop": ["\n\n"]}
    assert form["aliases"].value() == "smol-a, smol-b"
    assert form["keep_alive_seconds"].value() == "90m"

    saved = admin_client.post(change_url(model), resubmitted(form))
    assert saved.status_code == 302, form_of(saved).errors
    model.refresh_from_db()
    assert model.engine_options == {**expected_options, "custom": [1, 2]}
    assert model.default_params == {"temperature": 0.2, "max_tokens": 64, "stop": ["\n\n"]}
    assert model.aliases == ["smol-a", "smol-b"] and model.keep_alive_seconds == 5400


def test_options_stored_without_a_field_are_kept(admin_client, gguf_path):
    model = served_model_register(
        name="smol", source=gguf_path, engine="llama_cpp", engine_options={"n_batch": 256, "mystery": {"a": 1}}
    )
    form = form_of(admin_client.get(change_url(model)))
    assert form["option_llama_cpp_n_batch"].value() == 256
    assert json.loads(form["engine_options"].value()) == {"mystery": {"a": 1}}
    # Clearing the typed field drops that option (the engine's default again); the unknown key stays.
    saved = admin_client.post(change_url(model), resubmitted(form, option_llama_cpp_n_batch=""))
    assert saved.status_code == 302, form_of(saved).errors
    model.refresh_from_db()
    assert model.engine_options == {"mystery": {"a": 1}}


def test_only_the_posted_engines_fields_count(admin_client):
    # A browser posts every engine's fields (the script only hides the others).
    response = add(
        admin_client,
        name="e",
        engine="echo",
        option_echo_token_delay_ms="20",
        option_llama_cpp_n_threads="3",
        option_upstream_base_url="http://127.0.0.1:9/v1",
    )
    assert response.status_code == 302, form_of(response).errors
    assert ServedModel.objects.get(name="e").engine_options == {"token_delay_ms": 20.0}


def test_each_engine_gets_its_own_typed_options(admin_client, gguf_path):
    up = add(
        admin_client,
        name="up",
        engine="upstream",
        option_upstream_base_url="http://127.0.0.1:8080/v1",
        option_upstream_api_key="sk-up",
        option_upstream_timeout="30",
        option_upstream_stream="no",
    )
    assert up.status_code == 302, form_of(up).errors
    assert ServedModel.objects.get(name="up").engine_options == {
        "base_url": "http://127.0.0.1:8080/v1",
        "api_key": "sk-up",
        "timeout": 30.0,
        "stream": False,
    }
    vllm = add(
        admin_client,
        name="big",
        engine="vllm",
        source="Qwen/Qwen2.5-0.5B-Instruct",
        option_vllm_gpu="0,1",
        option_vllm_gpu_memory_utilization="0.8",
        option_vllm_extra_args="--dtype half --enforce-eager",
    )
    assert vllm.status_code == 302, form_of(vllm).errors
    assert ServedModel.objects.get(name="big").engine_options == {
        "gpu": [0, 1],
        "gpu_memory_utilization": 0.8,
        "extra_args": ["--dtype", "half", "--enforce-eager"],
    }
    page = form_of(admin_client.get(change_url(ServedModel.objects.get(name="big"))))
    assert page["option_vllm_gpu"].value() == "0,1"
    assert page["option_vllm_extra_args"].value() == "--dtype half --enforce-eager"


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"option_llama_cpp_n_threads": "0"}, "option_llama_cpp_n_threads", "greater than or equal to 1"),
        ({"option_llama_cpp_n_threads": "two"}, "option_llama_cpp_n_threads", "whole number"),
        ({"option_llama_cpp_max_waiting": "-1"}, "option_llama_cpp_max_waiting", "greater than or equal to 0"),
        ({"option_llama_cpp_max_waiting": "1.5"}, "option_llama_cpp_max_waiting", "whole number"),
        ({"option_llama_cpp_flash_attn": "maybe"}, "option_llama_cpp_flash_attn", "valid choice"),
        ({"option_llama_cpp_min_p": "2"}, "option_llama_cpp_min_p", "less than or equal to 1"),
        ({"engine_options": "[1, 2]"}, "engine_options", "JSON object"),
        ({"engine_options": "{not json"}, "engine_options", "valid JSON"),
        (
            {"option_llama_cpp_n_threads": "2", "engine_options": '{"n_threads": 4}'},
            "engine_options",
            "n_threads",
        ),
        ({"default_temperature": "3"}, "default_temperature", "less than or equal to 2"),
        ({"default_params": '{"temprature": 1}'}, "default_params", "Unknown default parameter"),
        ({"default_params": '{"stop": 5}'}, "default_params", "stop must be"),
        ({"aliases": "good, not ok!"}, "aliases", "letters, digits"),
        ({"aliases": "a, a"}, "aliases", "twice"),
        ({"keep_alive_seconds": "5 minutes"}, "keep_alive_seconds", "not a keep-alive"),
        ({"keep_alive_seconds": ""}, "keep_alive_seconds", "required"),
        ({"keep_alive_seconds": "1h30"}, "keep_alive_seconds", "not a keep-alive"),
        # Past the column's 32-bit range: once a database error, or an OverflowError for 400 digits.
        ({"keep_alive_seconds": "9" * 400 + "d"}, "keep_alive_seconds", "write never instead"),
        ({"replicas": "-1"}, "replicas", "greater than or equal to 0"),
        ({"slots": "0"}, "slots", "greater than or equal to 1"),
        (
            {"engine": "upstream", "option_upstream_base_url": "ftp://x/v1"},
            "option_upstream_base_url",
            "http:// or https://",
        ),
        ({"engine": "upstream"}, "engine_options", "base_url"),
        # An edit of a model must not send the platform's own secrets to an upstream of its choosing.
        (
            {
                "engine": "upstream",
                "option_upstream_base_url": "http://127.0.0.1:9/v1",
                "option_upstream_api_key": "os.environ/SECRET_KEY",
            },
            "option_upstream_api_key",
            "ends in _API_KEY",
        ),
        ({"engine": "vllm", "source": "a/b", "option_vllm_gpu": "first"}, "option_vllm_gpu", "GPU indices"),
        (
            {"engine": "vllm", "source": "a/b", "option_vllm_gpu_memory_utilization": "0"},
            "option_vllm_gpu_memory_utilization",
            "more than 0",
        ),
        (
            {"engine": "vllm", "source": "a/b", "option_vllm_extra_args": '--x "open'},
            "option_vllm_extra_args",
            "command line",
        ),
        ({"engine": "echo", "option_echo_token_delay_ms": "-5"}, "option_echo_token_delay_ms", "greater than or equal"),
        # Re-showing the form once wrote these back into the page undecodable (a lone surrogate): a 500.
        ({"engine_options": '["\\ud800"]'}, "engine_options", "lone UTF-16 surrogate"),
        ({"default_params": '{"stop": ["\\ud800"]}'}, "default_params", "lone UTF-16 surrogate"),
        ({"engine_options": "[" * 100 + "]" * 100}, "engine_options", "nested more than"),
    ],
)
def test_bad_values_are_form_errors(admin_client, gguf_path, fields, field, message):
    response = add(admin_client, name="bad", **{"source": gguf_path, **fields})
    assert response.status_code == 200  # the form again, with the error
    errors = form_of(response).errors
    assert field in errors, errors
    assert any(message in e for e in errors[field]), errors[field]
    assert not ServedModel.objects.filter(name="bad").exists()


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("never", None),
        ("-1", None),
        ("0", 0),
        ("10s", 10),
        ("2h", 7200),
        (" 5M ", 300),
        ("45", 45),
        ("1h30m", 5400),  # Go's duration form, as Ollama's keep_alive takes it
        ("1.5h", 5400),
    ],
)
def test_keep_alive_is_saved_from_the_form(admin_client, typed, stored):
    response = add(admin_client, name="e", engine="echo", replicas="0", keep_alive_seconds=typed)
    assert response.status_code == 302, form_of(response).errors
    model = ServedModel.objects.get(name="e")
    assert model.keep_alive_seconds == stored and model.on_demand
    assert form_of(admin_client.get(change_url(model)))["keep_alive_seconds"].value() == format_keep_alive(stored)


def test_the_source_offers_the_gguf_files_under_models_dir(admin_client, settings, tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "nested").mkdir()
    for name in ("b/nested/deep.gguf", "a.gguf", "b/upper.GGUF", "notes.txt", "b/weights.bin"):
        (tmp_path / name).write_bytes(b"GGUF")
    settings.MODELS_DIR = str(tmp_path)
    bundled = str(bundled_model_path())
    expected = [str(tmp_path / "a.gguf"), str(tmp_path / "b/nested/deep.gguf"), str(tmp_path / "b/upper.GGUF"), bundled]
    assert gguf_sources() == expected

    page = admin_client.get(reverse(ADD)).content.decode()
    datalist = page[page.index('<datalist id="id_source_suggestions">') :]
    datalist = datalist[: datalist.index("</datalist>")]
    assert [line.split('"')[1] for line in datalist.split("<option")[1:]] == expected
    assert 'list="id_source_suggestions"' in page

    response = add(admin_client, name="picked", source=str(tmp_path / "b/nested/deep.gguf"))
    assert response.status_code == 302, form_of(response).errors
    assert ServedModel.objects.get(name="picked").source == str(tmp_path / "b/nested/deep.gguf")


def test_without_models_dir_the_bundled_model_is_offered(settings):
    settings.MODELS_DIR = ""
    assert gguf_sources() == [str(bundled_model_path())]


def test_placement_suggests_the_labels_and_hosts_of_live_workers(admin_client):
    worker_register(worker_id="h1:1:a", host="h1", pid=1, models=[], concurrency=1, labels=["gpu", "fast"])
    worker_register(worker_id="h2:2:b", host="h2", pid=2, models=[], concurrency=1, labels=["cpu"])
    gone = worker_register(worker_id="h3:3:c", host="h3", pid=3, models=[], concurrency=1, labels=["old"])
    WorkerRegistration.objects.filter(pk=gone.pk).update(state=WorkerRegistration.State.DEAD)
    page = admin_client.get(reverse(ADD)).content.decode()
    labels = page[page.index('<datalist id="id_placement_label_suggestions">') :]
    labels = labels[: labels.index("</datalist>")]
    assert labels.count("<option") == 3 and all(f'value="{v}"' in labels for v in ("cpu", "fast", "gpu"))
    hosts = page[page.index('<datalist id="id_placement_host_suggestions">') :]
    hosts = hosts[: hosts.index("</datalist>")]
    assert hosts.count("<option") == 2 and 'value="h1"' in hosts and 'value="h2"' in hosts

    response = add(admin_client, name="placed", engine="echo", placement_label="gpu", placement_host="h1")
    assert response.status_code == 302, form_of(response).errors
    model = ServedModel.objects.get(name="placed")
    assert (model.placement_label, model.placement_host) == ("gpu", "h1")


def test_the_upstream_key_is_never_shown_and_blank_keeps_it(admin_client):
    response = add(
        admin_client,
        name="up",
        engine="upstream",
        option_upstream_base_url="http://127.0.0.1:8080/v1",
        option_upstream_api_key="sk-secret-upstream",
    )
    assert response.status_code == 302, form_of(response).errors
    model = ServedModel.objects.get(name="up")
    page = admin_client.get(change_url(model))
    assert "sk-secret-upstream" not in page.content.decode()
    assert 'name="option_upstream_api_key"' in page.content.decode()

    def save(**changes) -> dict:
        saved = admin_client.post(
            change_url(model), resubmitted(form_of(admin_client.get(change_url(model))), **changes)
        )
        assert saved.status_code == 302, form_of(saved).errors
        return ServedModel.objects.get(pk=model.pk).engine_options

    assert save(option_upstream_timeout="20")["api_key"] == "sk-secret-upstream"  # blank kept it
    assert save(option_upstream_api_key="os.environ/UPSTREAM_API_KEY")["api_key"] == "os.environ/UPSTREAM_API_KEY"
    assert "api_key" not in save(option_upstream_api_key_forget="on")
    assert "api_key" not in save()  # and it stays gone


def test_the_page_marks_each_engines_fieldset_for_the_script(admin_client):
    page = admin_client.get(reverse(ADD))
    html = page.content.decode()
    for engine in ("llama_cpp", "echo", "upstream", "vllm", "mlx"):
        assert f"engine-options engine-{engine}" in html
    assert 'id="auto-engines"' in html
    auto = json.loads(html.split('id="auto-engines" type="application/json">')[1].split("</script>")[0])
    assert auto["embed"] == "llama_cpp"
