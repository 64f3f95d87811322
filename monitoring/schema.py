"""/metrics in the OpenAPI document (a drf-spectacular postprocessing hook).

/metrics is a plain Django view, not a DRF one, so drf-spectacular cannot see it; this hook adds
its operation by hand. tests/api/test_openapi.py runs schemathesis against it with the rest.
"""

from __future__ import annotations

TEXT = {"text/plain": {"schema": {"type": "string"}}}

METRICS_OPERATION = {
    "operationId": "metrics",
    "summary": "Prometheus metrics",
    "description": (
        "Request metrics of every web and worker process in Prometheus text format 0.0.4, under vLLM's "
        "metric names (`vllm:time_to_first_token_seconds`, `vllm:e2e_request_latency_seconds`, "
        "`vllm:num_requests_running`, `vllm:num_requests_waiting`, `vllm:prompt_tokens_total`, "
        "`vllm:generation_tokens_total`, `vllm:request_success_total`, `vllm:prefix_cache_queries_total`, "
        "`vllm:prefix_cache_hits_total`, `vllm:kv_cache_usage_perc`, ...) with the `model_name` label. "
        "No API key: `METRICS_ACCESS` decides who may read it: `open`, `staff` (an admin session) or "
        "`token` (`Authorization: Bearer <METRICS_TOKEN>`)."
    ),
    "tags": ["Monitoring"],
    # Any one of these, as METRICS_ACCESS says: nothing, the metrics token, or a staff session.
    "security": [{}, {"MetricsToken": []}, {"AdminSession": []}],
    "responses": {
        "200": {"description": "The metrics, `text/plain; version=0.0.4`.", "content": TEXT},
        "401": {
            "description": "`METRICS_ACCESS=token` and the bearer token is missing or wrong.",
            "content": TEXT,
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        },
        "403": {
            "description": "`METRICS_ACCESS=staff` without a staff session, or `token` with no "
            "`METRICS_TOKEN` configured.",
            "content": TEXT,
        },
        "500": {
            "description": "An unexpected server error (`internal_error`).",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        },
    },
}

SECURITY_SCHEMES = {
    "MetricsToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "`METRICS_TOKEN`, when `METRICS_ACCESS=token`.",
    },
    "AdminSession": {
        "type": "apiKey",
        "in": "cookie",
        "name": "sessionid",
        "description": "A staff login from the admin, when `METRICS_ACCESS=staff`.",
    },
}


def add_metrics_operation(result, generator, request, public):
    result["paths"]["/metrics"] = {"get": METRICS_OPERATION}
    result.setdefault("components", {}).setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    return result
