"""The llama.cpp engine's chat template, and its tokenizer jobs beyond what generation needs:
text back from ids, and chat messages without the opening of the assistant's turn."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from .errors import InvalidInputError
from .inputs import render_template, utf8

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from llama_cpp.llama_types import ChatCompletionRequestMessage


def detokenize_text(llama: Llama, token_ids: Sequence[int]) -> str:
    """The text of `token_ids`, special tokens written out as llama-server does; bytes that are
    not whole UTF-8 characters become U+FFFD. An id outside the vocabulary is a 400 on `tokens`."""
    n_vocab = llama.n_vocab()
    bad = next((token for token in token_ids if not 0 <= token < n_vocab), None)
    if bad is not None:
        raise InvalidInputError(
            f"Invalid value for 'tokens': token id {bad} is outside the vocabulary (ids 0 to {n_vocab - 1}).",
            param="tokens",
        )
    return llama.detokenize(list(token_ids), special=True).decode("utf-8", errors="replace")


def chat_tokens_without_generation_prompt(
    llama: Llama, formatter: Jinja2ChatFormatter, messages: list[dict[str, Any]]
) -> list[int]:
    """The conversation's ids as the template renders it with `add_generation_prompt` false."""
    plain = copy.copy(formatter)  # the template is compiled once; only the flag differs
    plain.add_generation_prompt = False
    result = render_template(lambda ready: plain(messages=cast("list[ChatCompletionRequestMessage]", ready)), messages)
    return llama.tokenize(utf8(result.prompt, param="messages"), add_bos=not result.added_special, special=True)


def chat_formatter(llama: Llama) -> Jinja2ChatFormatter | None:
    """The GGUF's own chat template, or None where it has none."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        return None
    return Jinja2ChatFormatter(
        template=template,
        eos_token=_token_text(llama, llama.token_eos()),
        bos_token=_token_text(llama, llama.token_bos()),
        stop_token_ids=[llama.token_eos()],
    )


def _token_text(llama: Llama, token_id: int) -> str:
    return llama.detokenize([token_id], special=True).decode("utf-8", errors="ignore")
