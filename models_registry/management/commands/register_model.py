"""manage.py register_model NAME --source PATH [--engine auto] [--task generate|embed] [--context-length N]
[--alias A] [--option k=v] [--replicas N] [--keep-alive 5m] [--placement-label L] [--placement-host H] [--slots N]."""

import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from engines.platform import ENGINE_CHOICES
from models_registry.keep_alive import parse_keep_alive
from models_registry.models import ServedModel
from models_registry.selectors import served_model_by_name
from models_registry.services.served_models import served_model_register


def parse_option(text: str) -> tuple[str, object]:
    """k=v with v parsed as JSON when it is JSON (numbers, booleans), else kept as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise CommandError(f"--option {text!r}: use key=value")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


class Command(BaseCommand):
    help = "Register (or update) a served model, validated like the admin form."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--source", default="", help="GGUF file or model directory (not needed for echo)")
        parser.add_argument("--engine", default="auto", choices=ENGINE_CHOICES)
        parser.add_argument(
            "--task",
            choices=ServedModel.Task.values,
            help="generate (the default) or embed; registering again keeps it",
        )
        parser.add_argument("--context-length", type=int, default=2048)
        parser.add_argument("--alias", action="append", default=[], help="Another name clients may use")
        parser.add_argument("--option", action="append", default=[], help="Engine option key=value")
        parser.add_argument("--disabled", action="store_true")
        deployment = parser.add_argument_group("deployment (registering again keeps what is not given)")
        deployment.add_argument("--replicas", type=int, help="hosts that keep it loaded; 0: on demand")
        deployment.add_argument("--keep-alive", help="on demand: idle time before unloading (5m, 30s, 0, never)")
        deployment.add_argument("--placement-label", help="only workers with this label ('' for any)")
        deployment.add_argument("--placement-host", help="only workers on this host ('' for any)")
        deployment.add_argument("--slots", type=int, help="requests one copy runs at once (0: engine default)")

    def handle(self, *args, name, source, engine, task, context_length, alias, option, disabled, **options):
        # Sampling defaults have no flag here: registering again keeps those set in the admin.
        existing = served_model_by_name(name=name)
        deployment: dict = {}
        if options["replicas"] is not None:
            deployment["replicas"] = options["replicas"]
        if options["keep_alive"] is not None:
            try:
                deployment["keep_alive_seconds"] = parse_keep_alive(options["keep_alive"])
            except ValidationError as exc:
                raise CommandError(f"--keep-alive: {exc.messages[0]}") from exc
        for field in ("placement_label", "placement_host"):
            if options[field] is not None:
                deployment[field] = options[field]
        if options["slots"] is not None:
            deployment["slots"] = options["slots"] or None
        try:
            model = served_model_register(
                name=name,
                source=source,
                engine=engine,
                context_length=context_length,
                aliases=alias,
                engine_options=dict(parse_option(o) for o in option),
                enabled=not disabled,
                default_params=existing.default_params if existing else None,
                task=task or (existing.task if existing else ServedModel.Task.GENERATE),
                deployment=deployment,
            )
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from exc
        task_note = "" if model.task == ServedModel.Task.GENERATE else f", task {model.task}"
        self.stdout.write(f"Registered {model.name} ({model.engine}, context {model.context_length}{task_note})")
