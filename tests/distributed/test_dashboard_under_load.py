"""The dashboard under real load: locust's mixed traffic on SmolLM2 through two workers, then chromium.

benchmarks/dashboard_load.py does the work (the same run, only shorter here); this checks that
what the operator sees adds up: every request locust sent is recorded once, and the dashboard's
totals by model, key and worker equal a direct count of the rows.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import dashboard_load
from tests.compat.browser import PNG_MAGIC

pytestmark = [pytest.mark.distributed, pytest.mark.live, pytest.mark.model, pytest.mark.timeout(600)]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
EXPECTED_STATUSES = {200, 400, 429, 499}  # served, oversized max_tokens, batch-jobs over its RPM, abandoned


def test_dashboard_totals_match_what_locust_sent(tmp_path):
    report = dashboard_load.run(tmp_path, ARTIFACTS, duration=40, users=6, rpm_limit=4)

    assert report.failures == 0
    assert report.sent > 20
    assert report.recorded == report.sent
    assert set(report.statuses) <= EXPECTED_STATUSES and report.statuses[200] > 0, report.statuses
    # Two users share batch-jobs at ~20 calls a minute each, against an RPM limit of 4.
    assert report.statuses[429] > 0, report.statuses

    assert set(report.dashboard["model"]) == set(dashboard_load.MODELS)
    assert {label.split(" (")[0] for label in report.dashboard["key"]} == set(dashboard_load.KEYS)
    # Both workers served; rejected requests (429) never reached one.
    assert len([label for label in report.dashboard["worker"] if label != "(none)"]) == 2
    for group, totals in report.dashboard.items():
        assert totals == report.rows[group], group
        assert sum(totals.values()) == report.recorded, group

    for path in report.screenshots:
        data = path.read_bytes()
        assert len(data) > 10_000 and data.startswith(PNG_MAGIC), path
