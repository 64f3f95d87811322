"""The one table of which request features each engine supports.

The API rejects a request that uses a feature its engine lacks (400 naming the parameter and
the engine) instead of silently ignoring it. The admin and the README show this same table;
a test keeps the README's copy in step. Importing this module imports no engine library.
"""

from __future__ import annotations

from .base import GenerationRequest
from .errors import EngineUnavailableError, UnsupportedParameterError

FEATURES = (
    "streaming",
    "stop",
    "seed",
    "logprobs",
    "n",
    "logit_bias",
    "tools",
    "response_format",
    "grammar",
    "embeddings",
    "tokenize",
)

CAPABILITIES: dict[str, frozenset[str]] = {
    "llama_cpp": frozenset(FEATURES),  # every one
    "mlx": frozenset({"streaming", "stop", "seed"}),
    # vLLM itself supports more; these are what its proxy forwards today.
    "vllm": frozenset({"streaming", "stop", "seed", "tools", "response_format", "embeddings", "tokenize"}),
    # Forwarded as they come: the upstream server must have them (OpenAI's API has no tokenizer).
    "upstream": frozenset({"streaming", "stop", "seed", "tools", "response_format", "embeddings"}),
    # Echo's tools: "auto" only, parsing a call out of the text it echoes (engines.echo).
    "echo": frozenset({"streaming", "stop", "seed", "tools", "embeddings", "tokenize"}),
}


def capabilities_of(engine: str) -> frozenset[str]:
    """Features a concrete engine supports."""
    try:
        return CAPABILITIES[engine]
    except KeyError:
        raise EngineUnavailableError(f"unknown engine {engine!r}") from None


def require_request_features(engine: str, features: frozenset[str], request: GenerationRequest) -> None:
    """Raise UnsupportedParameterError where `request` asks for what the engine lacks.

    The API checks the same before dispatch; this keeps an engine from silently dropping
    choices, logprobs, biases, tools or an output format when a request reaches it some other way.
    """
    sampling, output = request.sampling, request.output_format
    wanted = {
        "n": ("n", sampling.n > 1),
        "logprobs": ("logprobs", sampling.logprobs),
        "logit_bias": ("logit_bias", bool(sampling.logit_bias)),
        "tools": ("tools", bool(request.tools) and request.tool_choice != "none"),
        "response_format": ("response_format", output is not None and output.kind != "grammar"),
        "grammar": ("grammar", output is not None and output.kind == "grammar"),
    }
    for feature, (param, used) in wanted.items():
        if used and feature not in features:
            raise UnsupportedParameterError(
                f"The '{param}' parameter is not supported by the {engine} engine.", param=param
            )


def markdown_table() -> str:
    """The table as Markdown, as the README shows it."""
    lines = ["| engine | " + " | ".join(FEATURES) + " |", "|---|" + "---|" * len(FEATURES)]
    for engine, features in CAPABILITIES.items():
        cells = ["yes" if feature in features else "no" for feature in FEATURES]
        lines.append(f"| `{engine}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)
