"""The Responses API's bodies and stream events: format.py builds them, the OpenAPI schema documents them.

No `from __future__ import annotations` here: TypedDict reads `NotRequired` from evaluated annotations.
Output items and stream events come in several kinds; each is one TypedDict whose kind-specific
keys are NotRequired (the schema mapping has no tagged unions), and `type` says which are present.
"""

from typing import Annotated, Any, Literal, NotRequired, TypedDict

from ...typed_shapes import Field

ResponseStatus = Literal["completed", "incomplete", "failed", "in_progress"]
ItemStatus = Literal["completed", "incomplete", "in_progress"]


class OutputText(TypedDict):
    type: Literal["output_text"]
    text: str
    annotations: Annotated[list[dict[str, Any]], Field(help_text="Always empty here.")]
    logprobs: Annotated[list[dict[str, Any]], Field(help_text="Always empty here.")]


class OutputItem(TypedDict):
    """An output item: an assistant `message` (role, content) or a `function_call` (call_id, name, arguments)."""

    type: Literal["message", "function_call"]
    id: str
    status: ItemStatus
    role: NotRequired[Literal["assistant"]]
    content: NotRequired[list[OutputText]]
    call_id: NotRequired[str]
    name: NotRequired[str]
    arguments: NotRequired[Annotated[str, Field(help_text="The function's arguments as JSON text.")]]


class InputTokensDetails(TypedDict):
    cached_tokens: Annotated[int, Field(min_value=0, help_text="Input tokens reused from the prefix cache.")]


class OutputTokensDetails(TypedDict):
    reasoning_tokens: Annotated[int, Field(min_value=0, help_text="Always 0 here.")]


class ResponseUsage(TypedDict):
    input_tokens: Annotated[int, Field(min_value=0)]
    input_tokens_details: InputTokensDetails
    output_tokens: Annotated[int, Field(min_value=0)]
    output_tokens_details: OutputTokensDetails
    total_tokens: Annotated[int, Field(min_value=0)]


class IncompleteDetails(TypedDict):
    reason: Literal["max_output_tokens"]


class ResponseError(TypedDict):
    code: str
    message: str


class ResponseObject(TypedDict):
    """A response (`object` "response"): its output items, usage, and the request's settings echoed."""

    id: Annotated[str, Field(help_text="`resp_...`")]
    object: Literal["response"]
    created_at: Annotated[int, Field(help_text="Unix time in seconds.")]
    status: ResponseStatus
    error: ResponseError | None
    incomplete_details: IncompleteDetails | None
    instructions: str | None
    max_output_tokens: int | None
    model: Annotated[str, Field(help_text="The model name as the request gave it.")]
    output: list[OutputItem]
    parallel_tool_calls: bool
    previous_response_id: str | None
    reasoning: Annotated[dict[str, Any], Field(help_text="Always `{effort: null, summary: null}` here.")]
    store: bool
    temperature: float
    text: Annotated[dict[str, Any], Field(help_text="`{format: ...}` as the request gave it (`text` by default).")]
    tool_choice: Annotated[object, Field(help_text="`none`, `auto`, `required` or `{type: function, name}`.")]
    tools: list[dict[str, Any]]
    top_p: float
    truncation: Literal["disabled"]
    usage: ResponseUsage | None
    user: str | None
    metadata: dict[str, str]


class DeletedResponse(TypedDict):
    id: str
    object: Literal["response.deleted"]
    deleted: Literal[True]


class InputItem(TypedDict):
    """A stored input item: a `message` (role, content), `function_call` or `function_call_output`."""

    type: Literal["message", "function_call", "function_call_output"]
    id: str
    role: NotRequired[Literal["user", "assistant", "system", "developer"]]
    content: NotRequired[list[dict[str, Any]]]
    call_id: NotRequired[str]
    name: NotRequired[str]
    arguments: NotRequired[str]
    output: NotRequired[str]


class InputItemList(TypedDict):
    object: Literal["list"]
    data: list[InputItem]
    first_id: str | None
    last_id: str | None
    has_more: bool


EventType = Literal[
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.output_item.done",
    "response.completed",
    "response.incomplete",
    "response.failed",
]


class ResponseStreamEvent(TypedDict):
    """One event of a streamed response; which keys it has depends on its `type`, as OpenAI's events."""

    type: EventType
    sequence_number: Annotated[int, Field(min_value=0, help_text="0, 1, 2, ... in the order sent.")]
    response: NotRequired[ResponseObject]
    output_index: NotRequired[Annotated[int, Field(min_value=0)]]
    item: NotRequired[OutputItem]
    item_id: NotRequired[str]
    content_index: NotRequired[Annotated[int, Field(min_value=0)]]
    part: NotRequired[OutputText]
    delta: NotRequired[str]
    text: NotRequired[str]
    arguments: NotRequired[str]
    logprobs: NotRequired[list[dict[str, Any]]]
