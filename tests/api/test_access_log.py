"""What the access log may say about a request target."""

import logging

from api.access_log import MAX_LOGGED_PATH, ServerErrorsOnly, redact_uri


def test_query_values_are_redacted_and_names_kept():
    assert redact_uri("/v1/models?api_key=ipk-abc-def&x=1&flag") == (
        "/v1/models?api_key=[redacted]&x=[redacted]&flag=[redacted]"
    )
    assert redact_uri("/admin/?next=/admin/secret") == "/admin/?next=[redacted]"
    assert redact_uri("/v1/models") == "/v1/models"


def test_a_key_in_the_path_is_redacted():
    assert redact_uri("/v1/models/ipk-abcdefgh-S3cr3t_value") == "/v1/models/ipk-[redacted]"


def test_long_paths_are_cut():
    logged = redact_uri("/v1/models/" + "m" * 100_000)
    assert len(logged) < MAX_LOGGED_PATH + 30 and logged.endswith("(100011 chars)")


def test_django_request_keeps_only_server_errors():
    def record(status):
        entry = logging.LogRecord("django.request", logging.WARNING, __file__, 1, "x", (), None)
        entry.status_code = status
        return entry

    keep = ServerErrorsOnly()
    assert [keep.filter(record(status)) for status in (401, 404, 500, 503)] == [False, False, True, True]
