"""Typed engine errors; the API maps each one to the matching OpenAI error body."""


class EngineError(Exception):
    """Base class for everything an engine raises on purpose."""

    param: str | None = None

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        if param is not None:
            self.param = param


class ContextOverflowError(EngineError):
    """The prompt plus the requested completion does not fit the context window."""

    param = "messages"


class UnsupportedParameterError(EngineError):
    """The request uses a feature this engine does not implement."""


class EngineUnavailableError(EngineError):
    """The engine cannot run here (library missing, model not loaded, wrong hardware)."""


class EngineCrashedError(EngineError):
    """The engine failed while generating; the request cannot be completed."""


class InvalidInputError(EngineError):
    """The messages or prompt cannot become model input (nothing to generate from, bad text)."""

    param = "messages"


class EngineBusyError(EngineError):
    """The model's waiting queue is full; the client should retry after `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: int, param: str | None = None):
        super().__init__(message, param=param)
        self.retry_after = retry_after
