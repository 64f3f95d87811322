"""llama.cpp's own log through Python logging, and model loads that leave the process's output alone.

llama-cpp-python quiets a load by pointing file descriptors 1 and 2 at /dev/null while it runs
(`suppress_stdout_stderr`). That is process-wide: whatever any other thread wrote meanwhile was
lost, such as a request's log line while a second model loaded. Here llama.cpp's messages go to
the `llama_cpp` logger instead (warnings and below at DEBUG, since a load's chatter is not the
operator's business; errors as warnings), and a verbose load's Python-level prints go to that
logger too, with only `sys.stderr` swapped for the load.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import threading
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger("llama_cpp")

_GGML_LOG_LEVEL_ERROR = 4  # ggml.h: none, debug, info, warn, error, cont
_GGML_LOG_LEVEL_CONT = 5  # continues the previous message

_installed: Any = None  # the ctypes callback: llama.cpp holds a raw pointer to it, so it must stay alive
_install_lock = threading.Lock()
# sys.stderr is one attribute for every thread: two loads swapping it at once could leave it swapped.
_load_lock = threading.Lock()


def _level_of(ggml_level: int, previous: list[int]) -> int:
    if ggml_level == _GGML_LOG_LEVEL_CONT:
        return previous[0]
    previous[0] = logging.WARNING if ggml_level == _GGML_LOG_LEVEL_ERROR else logging.DEBUG
    return previous[0]


def route_llama_log_to_logging() -> None:
    """Send llama.cpp's log (and ggml's) to the `llama_cpp` logger; idempotent."""
    global _installed
    import llama_cpp

    with _install_lock:
        if _installed is not None:
            return
        previous = [logging.DEBUG]

        def log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
            message = text.decode("utf-8", errors="replace").rstrip("\n")
            python_level = _level_of(level, previous)
            if message and logger.isEnabledFor(python_level):
                logger.log(python_level, "%s", message)

        _installed = llama_cpp.llama_log_callback(log)
        llama_cpp.llama_log_set(_installed, ctypes.c_void_p(0))


@contextlib.contextmanager
def quiet_load() -> Iterator[None]:
    """Around `Llama(..., verbose=True)`: its prints go to the debug log, the process's stderr stays."""
    route_llama_log_to_logging()
    captured = io.StringIO()
    with _load_lock, contextlib.redirect_stderr(captured):
        yield
    if captured.getvalue().strip():
        logger.debug("%s", captured.getvalue().rstrip())
