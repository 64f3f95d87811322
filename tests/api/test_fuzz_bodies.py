"""Property-based fuzzing of completion request bodies against the real SmolLM2.

Hypothesis builds bodies with random unicode (lone surrogates, NUL, the top code point,
template markers), nesting and wrong types in `messages`, `prompt`, `stop` and the other
fields, and sends them through the real ASGI application. Whatever comes in: never a 5xx,
every error in OpenAI's shape (in-band errors of a stream too), the engine left idle, and
a normal request served afterwards. Example counts are bounded so the module stays quick.
"""

from __future__ import annotations

import asyncio
import collections
import json

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework import serializers

from api.openai.serializers import ROLES
from serving.dispatch.embedded import engine_host

from .sse import sse_events

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.model]

EXAMPLES = 60
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,  # the first example loads the model; a busy machine makes any one slow
    database=None,  # nothing written into the work tree; a failure prints its own reproduction
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
ERROR_FIELDS = {"message", "type", "param", "code"}

# Text a tokenizer or a template might choke on, mixed into arbitrary code points.
NASTY = [
    "\x00",
    "\U0010ffff",
    "\ufeff",
    "\u202e",
    "<|im_end|>",
    "<|im_start|>",
    "<|endoftext|>",
    "{{ x }}",
    "{% if %}",
    "\\",
    '"',
    "\n",
]
SURROGATES = ["\ud800", "\udfff", "\ud83d"]


def text_of_pieces(pieces: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(pieces, max_size=16).map("".join)


clean_text = text_of_pieces(st.one_of(st.characters(), st.sampled_from(NASTY)))
# exclude_categories=() lets in the lone surrogates (Cs) that characters() leaves out. They
# are refused whatever field holds them, so they come in one text in five, letting the rest reach the model.
surrogate_text = text_of_pieces(st.one_of(st.characters(exclude_categories=()), st.sampled_from(NASTY + SURROGATES)))
wild_text = st.integers(0, 4).flatmap(lambda kind: surrogate_text if kind == 0 else clean_text)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), wild_text)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(wild_text, children, max_size=4)),
    max_leaves=12,
)
# Deep but bounded: the parser's own depth limit is tested elsewhere, with bodies too deep to build here.
nested = st.integers(min_value=1, max_value=60).map(lambda depth: json.loads("[" * depth + "]" * depth))


# Near-valid bodies reach the model; each is then sometimes broken in one field, or grown an
# unknown one, or replaced outright by junk, so that both validation and the engine are fuzzed.
parts = st.lists(
    st.one_of(st.fixed_dictionaries({"type": st.just("text"), "text": wild_text}), json_values), max_size=3
)
content = st.one_of(wild_text, st.none(), parts)
# A tool message (a tool's result) answers a call by its id; without one it is refused at once.
message = st.builds(
    lambda role, text, omit: {
        "role": role,
        **({} if omit else {"content": text}),
        **({"tool_call_id": "call_1"} if role == "tool" else {}),
    },
    st.sampled_from(ROLES),
    content,
    st.booleans(),
)
stop = st.one_of(st.none(), wild_text, st.lists(wild_text, max_size=5))
sampling = {
    "stop": stop,
    "temperature": st.floats(min_value=0, max_value=2),
    "top_p": st.floats(min_value=0, max_value=1),
    "seed": st.integers(),
    "stream": st.booleans(),
    "user": st.text(max_size=8),  # only validated, never used: wild text in it is broken()'s job
}
# The budget stays tiny so the model's share is short; junk budgets must be refused before it runs.
chat_valid = st.fixed_dictionaries(
    {
        "model": st.just("smollm2"),
        "messages": st.lists(message, min_size=1, max_size=3),
        "max_tokens": st.integers(min_value=1, max_value=3),
    },
    optional=sampling,
)
completion_valid = st.fixed_dictionaries(
    {
        "model": st.just("smollm2"),
        "prompt": st.one_of(wild_text, wild_text.map(lambda text: [text])),
        "max_tokens": st.integers(min_value=1, max_value=3),
    },
    optional=sampling,
)
junk = st.one_of(json_values, nested, wild_text)
BUDGETS = ("max_tokens", "max_completion_tokens")


def spends_long(value) -> bool:
    """Whether a budget field holding `value` lets the model run long (null, or a big number as DRF reads it).

    Long generations are valid but take minutes on a CPU; the budget's validation is what is fuzzed.
    """
    if value is None:
        return True
    try:
        return serializers.IntegerField(min_value=4).run_validation(value) > 0
    except serializers.ValidationError:
        return False


junk_budget = junk.filter(lambda value: not spends_long(value))


def broken(valid: st.SearchStrategy, fields: list[str]) -> st.SearchStrategy:
    """`valid` with one field's value replaced by junk (wrong types, nesting, odd text)."""

    def replace(body, field, value, budget_value):
        return {**body, field: budget_value if field in BUDGETS else value}

    def break_message(body, index, field, value):
        messages = list(body["messages"])
        messages[index % len(messages)] = {**messages[index % len(messages)], field: value}
        return {**body, "messages": messages}

    one_field = st.builds(replace, valid, st.sampled_from(fields), junk, junk_budget)
    if "messages" not in fields:
        return one_field
    in_a_message = st.builds(
        break_message,
        valid,
        st.integers(0, 2),
        st.sampled_from(["role", "content", "name", "tool_call_id", "extra"]),
        junk,
    )
    return st.one_of(one_field, in_a_message)


def bodies(valid: st.SearchStrategy, fields: list[str]) -> st.SearchStrategy:
    unknown_field = st.builds(
        lambda body, extra: {**extra, **body}, valid, st.dictionaries(wild_text, json_values, min_size=1, max_size=2)
    )
    # Hypothesis merges repeated branches of one_of, so the mix is weighted by hand:
    # 6 in 10 valid, 2 with one field broken, 1 with an unknown field, 1 junk.
    kinds = [valid] * 6 + [broken(valid, fields)] * 2 + [unknown_field, junk]
    return st.integers(0, len(kinds) - 1).flatmap(lambda kind: kinds[kind])


FIELDS = ["model", "max_tokens", *sampling, "stream_options", "n", "logit_bias", "max_completion_tokens"]
# `grammar` junk reaches llama.cpp's GBNF parser: whatever it is, a 400 naming `grammar`, never a crash.
chat_bodies = bodies(chat_valid, ["messages", *FIELDS, "tools", "response_format", "grammar"])
completion_bodies = bodies(completion_valid, ["prompt", *FIELDS, "echo", "suffix", "grammar"])


class Fuzzer:
    """Sends raw JSON bodies through the ASGI app on one event loop, from a sync test body.

    Hypothesis calls the test synchronously, so the loop is driven here (asyncio.Runner)
    rather than by pytest-asyncio; every request and the engine share it.
    """

    def __init__(self, app, api_key: str):
        self.sent = 0
        self.statuses: collections.Counter[int] = collections.Counter()
        self._runner = asyncio.Runner()
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=120,
        )

    def post(self, path: str, body) -> httpx.Response:
        # json.dumps escapes non-ASCII, so lone surrogates travel as the valid JSON "\ud800".
        raw = json.dumps(body).encode("ascii")
        self.sent += 1
        response = self._runner.run(self._client.post(path, content=raw, headers={"Content-Type": "application/json"}))
        self.statuses[response.status_code] += 1
        return response

    def get(self, path: str) -> httpx.Response:
        return self._runner.run(self._client.get(path))

    def close(self) -> None:
        self._runner.run(self._client.aclose())
        # Views ran their ORM calls on asgiref's sync thread; close its connection for the test database.
        self._runner.run(sync_to_async(connections.close_all)())
        self._runner.close()


@pytest.fixture
def fuzzer(asgi_app, api_key, smollm2):
    fuzzer = Fuzzer(asgi_app, api_key)
    yield fuzzer
    fuzzer.close()


def assert_error_shape(payload, context) -> dict:
    assert isinstance(payload, dict) and set(payload) == {"error"}, context
    error = payload["error"]
    assert isinstance(error, dict) and set(error) == ERROR_FIELDS, context
    assert isinstance(error["message"], str) and error["message"], context
    assert isinstance(error["type"], str) and isinstance(error["code"], (str, type(None))), context
    assert error["param"] is None or isinstance(error["param"], str), context
    return error


def assert_answered_well(response: httpx.Response, body) -> None:
    context = f"{response.status_code} {response.text[:300]!r} for {json.dumps(body)[:300]}"
    assert response.status_code < 500, context
    if response.status_code >= 300:
        error = assert_error_shape(response.json(), context)
        assert error["type"] != "server_error", context
    elif response.headers["content-type"].startswith("text/event-stream"):
        events = sse_events(response.text)
        assert events[-1] == "[DONE]", context
        for event in events[:-1]:
            if "error" in event:  # a failure after the headers is reported in-band
                assert assert_error_shape(event, context)["type"] != "server_error", context
    else:
        assert response.json()["object"] in ("chat.completion", "text_completion"), context
    assert engine_idle(), f"the engine is still busy after {context}"


def engine_idle() -> bool:
    engine = engine_host().engine_for("smollm2")
    return engine is None or engine.in_flight == 0  # None: nothing has reached the model yet


def assert_both_paths_ran(fuzzer: Fuzzer) -> None:
    """The property really ran against the server: every example sent, some refused, some served."""
    assert fuzzer.sent >= EXAMPLES
    assert fuzzer.statuses[200] > 0 and sum(n for status, n in fuzzer.statuses.items() if status >= 400) > 0


def assert_still_serves(fuzzer: Fuzzer) -> None:
    """A normal request succeeds and the status page shows nothing running."""
    ok = fuzzer.post(
        "/v1/chat/completions", {"model": "smollm2", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["choices"][0]["finish_reason"] in ("stop", "length")
    engines = {e["model"]: e for e in fuzzer.get("/v1/system/status").json()["engines"]}
    assert engines["smollm2"]["in_flight"] == 0


@pytest.mark.parametrize(
    ("path", "bodies"),
    [("/v1/chat/completions", chat_bodies), ("/v1/completions", completion_bodies)],
    ids=["chat", "completions"],
)
def test_fuzzed_bodies(fuzzer, path, bodies):
    @FUZZ_SETTINGS
    @given(body=bodies)
    def check(body):
        assert_answered_well(fuzzer.post(path, body), body)

    check()
    assert_both_paths_ran(fuzzer)  # the property really ran against the server
    assert_still_serves(fuzzer)
