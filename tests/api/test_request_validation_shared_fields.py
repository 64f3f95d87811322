"""Request bodies are validated by serializers that share one set of bound fields: for any body, the
validated data or the error (its detail, or the UnsupportedParameter raised) is exactly what a fresh,
plain serializer gives, and bodies validated one after another do not leak into each other."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from rest_framework import serializers

from api.openai.format import CHAT, TEXT
from api.openai.requests import validated_body
from api.openai.serializers import ChatCompletionRequestSerializer, CompletionRequestSerializer
from serving.errors import UnsupportedParameter

from .test_fuzz_bodies import chat_bodies, completion_bodies

PLAIN = {CHAT: ChatCompletionRequestSerializer, TEXT: CompletionRequestSerializer}
SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def outcome(validate):
    try:
        return "ok", validate()
    except serializers.ValidationError as exc:
        return "invalid", exc.detail
    except UnsupportedParameter as exc:
        return "unsupported", (str(exc), exc.param)
    except RecursionError:
        return "recursion", None


def plain(kind, body):
    serializer = PLAIN[kind](data=body)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


@SETTINGS
@given(chat_bodies)
def test_chat_bodies_validate_as_a_plain_serializer_does(body):
    assert outcome(lambda: validated_body(CHAT, body)) == outcome(lambda: plain(CHAT, body))


@SETTINGS
@given(completion_bodies)
def test_completion_bodies_validate_as_a_plain_serializer_does(body):
    assert outcome(lambda: validated_body(TEXT, body)) == outcome(lambda: plain(TEXT, body))


def test_one_body_leaves_nothing_behind_for_the_next():
    bad = {"model": "m", "messages": [{"role": "nobody", "content": 3}], "temperature": 9}
    good = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert outcome(lambda: validated_body(CHAT, bad))[0] == "invalid"
    assert outcome(lambda: validated_body(CHAT, good)) == ("ok", plain(CHAT, good))
    assert validated_body(CHAT, good)["messages"][0]["content"] == "hi"
