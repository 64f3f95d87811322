"""The one error hierarchy of the API, and how every exception maps onto an OpenAI error."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import RequestDataTooBig
from rest_framework import exceptions as drf

from engines import errors as engine_errors


class ApiError(Exception):
    """An error with an HTTP status and an OpenAI error body."""

    status = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(ApiError):
    code = "invalid_request"


class InvalidValue(ApiError):
    """A field is well-formed but its value cannot be used (the code DRF validation errors get)."""

    code = "invalid_value"


class UnsupportedParameter(ApiError):
    code = "unsupported_parameter"


class ContextLengthExceeded(ApiError):
    code = "context_length_exceeded"


class InvalidApiKey(ApiError):
    status = 401
    code = "invalid_api_key"


class ModelNotFound(ApiError):
    status = 404
    code = "model_not_found"


class RequestTooLarge(ApiError):
    """The body is over MAX_REQUEST_BODY_BYTES (an HTTP body or a WebSocket message)."""

    status = 413
    code = "request_too_large"


class RateLimited(ApiError):
    """A per-key limit was reached; the response carries Retry-After (seconds)."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int, param: str | None = None):
        super().__init__(message, param=param)
        self.retry_after = retry_after


class ServiceUnavailable(ApiError):
    status = 503
    type = "server_error"
    code = "service_unavailable"


class WorkerLost(ApiError):
    """The worker running the request died; the request cannot be finished."""

    status = 502
    type = "server_error"
    code = "worker_lost"


class EngineFailure(ApiError):
    status = 500
    type = "server_error"
    code = "engine_error"


@dataclass(frozen=True)
class ErrorInfo:
    status: int
    type: str
    code: str | None
    message: str
    param: str | None

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class ModelBusy(RateLimited):
    """The model's waiting queue is full (backpressure): 429 with a Retry-After from its drain rate."""

    type = "server_error"
    code = "model_busy"


def _from_engine_error(exc: engine_errors.EngineError) -> ApiError:
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


def _flatten_validation(detail, path: str = "") -> tuple[str | None, str]:
    """First (param, message) of a nested DRF validation error."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            if key == "non_field_errors":
                return _flatten_validation(value, path)
            if isinstance(key, int):  # DRF keys list-item errors by index
                sub = f"{path}[{key}]"
            else:
                sub = f"{path}.{key}" if path else str(key)
            return _flatten_validation(value, sub)
    if isinstance(detail, list):
        for index, value in enumerate(detail):
            if isinstance(value, (dict, list)) and value:
                return _flatten_validation(value, f"{path}[{index}]")
            if value:
                return _flatten_validation(value, path)
    return (path or None), str(detail)


def error_info(exc: BaseException) -> ErrorInfo | None:
    """Map any exception the API expects to an ErrorInfo; None means an unexpected bug."""
    if isinstance(exc, engine_errors.EngineError):
        exc = _from_engine_error(exc)
    if isinstance(exc, RequestDataTooBig):  # Django's own check of DATA_UPLOAD_MAX_MEMORY_SIZE
        exc = RequestTooLarge("The request body is larger than this server's limit.")
    if isinstance(exc, ApiError):
        return ErrorInfo(exc.status, exc.type, exc.code, exc.message, exc.param)
    if isinstance(exc, (drf.NotAuthenticated, drf.AuthenticationFailed)):
        message = str(exc.detail) if isinstance(exc, drf.AuthenticationFailed) else (
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
        )
        return ErrorInfo(401, "invalid_request_error", "invalid_api_key", message, None)
    if isinstance(exc, drf.ParseError):
        return ErrorInfo(400, "invalid_request_error", "invalid_json",
                         f"We could not parse the JSON body of your request. ({exc.detail})", None)
    if isinstance(exc, drf.UnsupportedMediaType):
        return ErrorInfo(415, "invalid_request_error", "unsupported_media_type",
                         "Send the request body as JSON with 'Content-Type: application/json'.", None)
    if isinstance(exc, drf.ValidationError):
        param, message = _flatten_validation(exc.detail)
        text = f"Invalid value for '{param}': {message}" if param else message
        return ErrorInfo(400, "invalid_request_error", "invalid_value", text, param)
    if isinstance(exc, drf.MethodNotAllowed):
        return ErrorInfo(405, "invalid_request_error", "method_not_allowed", str(exc.detail), None)
    if isinstance(exc, drf.NotFound):
        return ErrorInfo(404, "invalid_request_error", "not_found", str(exc.detail), None)
    if isinstance(exc, drf.PermissionDenied):
        return ErrorInfo(403, "invalid_request_error", "permission_denied", str(exc.detail), None)
    if isinstance(exc, drf.APIException):
        return ErrorInfo(exc.status_code, "invalid_request_error", exc.default_code, str(exc.detail), None)
    return None


INTERNAL_ERROR = ErrorInfo(500, "server_error", "internal_error",
                           "The server had an error while processing your request.", None)
