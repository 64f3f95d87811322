"""The platform's one error hierarchy, independent of any wire protocol.

Each error carries an HTTP-style status, a type, a code, a message and the parameter at
fault; api/ renders them in its protocol's shape (api/errors.py for OpenAI's). Engines raise
their own typed errors (engines/errors.py), which map onto these here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import overload

from engines import errors as engine_errors


class PlatformError(Exception):
    """An error the platform answers on purpose: a status, a type, a code, a message and the param at fault."""

    status = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(PlatformError):
    code = "invalid_request"


class InvalidValue(PlatformError):
    """A field is well-formed but its value cannot be used (the code DRF validation errors get)."""

    code = "invalid_value"


class UnsupportedParameter(PlatformError):
    code = "unsupported_parameter"


class ContextLengthExceeded(PlatformError):
    code = "context_length_exceeded"


class InvalidApiKey(PlatformError):
    status = 401
    code = "invalid_api_key"


class ModelNotFound(PlatformError):
    status = 404
    code = "model_not_found"


class RequestTooLarge(PlatformError):
    """The body is over MAX_REQUEST_BODY_BYTES (an HTTP body or a WebSocket message)."""

    status = 413
    code = "request_too_large"


class RateLimited(PlatformError):
    """A per-key limit was reached; the response carries Retry-After (seconds)."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int, param: str | None = None):
        super().__init__(message, param=param)
        self.retry_after = retry_after


class ServiceUnavailable(PlatformError):
    status = 503
    type = "server_error"
    code = "service_unavailable"


class ModelNotPlaced(ServiceUnavailable):
    """No engine host can load the model now (its placement, or no room): 503 with Retry-After."""

    code = "model_not_loaded"

    def __init__(self, message: str, *, retry_after: int, param: str | None = None):
        super().__init__(message, param=param)
        self.retry_after = retry_after


class WorkerLost(PlatformError):
    """The worker running the request died; the request cannot be finished."""

    status = 502
    type = "server_error"
    code = "worker_lost"


class EngineFailure(PlatformError):
    status = 500
    type = "server_error"
    code = "engine_error"


@dataclass(frozen=True)
class ErrorInfo:
    """What a client is told about an error, in terms any protocol module can render."""

    status: int
    type: str
    code: str | None
    message: str
    param: str | None


class ModelBusy(RateLimited):
    """The model's waiting queue is full (backpressure): 429 with a Retry-After from its drain rate."""

    type = "server_error"
    code = "model_busy"


def _from_engine_error(exc: engine_errors.EngineError) -> PlatformError:
    if isinstance(exc, engine_errors.EngineBusyError):
        return ModelBusy(str(exc), retry_after=exc.retry_after, param=exc.param)
    mapping = {
        engine_errors.ContextOverflowError: ContextLengthExceeded,
        engine_errors.UnsupportedParameterError: UnsupportedParameter,
        engine_errors.InvalidInputError: InvalidValue,
        engine_errors.EngineUnavailableError: ServiceUnavailable,
        engine_errors.EngineCrashedError: EngineFailure,
    }
    for engine_type, api_type in mapping.items():
        if isinstance(exc, engine_type):
            return api_type(str(exc), param=exc.param)
    return EngineFailure(str(exc))


@overload
def error_info(exc: engine_errors.EngineError | PlatformError) -> ErrorInfo: ...


@overload
def error_info(exc: BaseException) -> ErrorInfo | None: ...


def error_info(exc: BaseException) -> ErrorInfo | None:
    """What to tell the client about a platform or engine error; None for anything else."""
    if isinstance(exc, engine_errors.EngineError):
        exc = _from_engine_error(exc)
    if isinstance(exc, PlatformError):
        return ErrorInfo(exc.status, exc.type, exc.code, exc.message, exc.param)
    return None


INTERNAL_ERROR = ErrorInfo(
    500, "server_error", "internal_error", "The server had an error while processing your request.", None
)
