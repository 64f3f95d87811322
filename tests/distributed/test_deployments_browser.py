"""The operator's round in a real browser, in distributed mode: a model registered in the admin is
answered through a reconcile-mode Celery worker that nobody restarts; an edit of its context length
reloads it on the worker while a steady stream of requests sees no failure; the page's buttons
unload and load it there."""

from __future__ import annotations

import pytest

from ..compat.browser import chromium, new_page
from ..compat.test_deployments_browser import operator_deploys_edits_unloads_and_loads
from .cluster import Cluster

pytestmark = [pytest.mark.live, pytest.mark.distributed]

PASSWORD = "cluster-admin-password"


@pytest.fixture(scope="module")
def operated_cluster(tmp_path_factory):
    cluster = Cluster(tmp=tmp_path_factory.mktemp("operated"))
    cluster.start_redis()
    cluster.create_database()
    try:
        cluster.manage(
            "createsuperuser", "--noinput", "--username", "admin", "--email", "", DJANGO_SUPERUSER_PASSWORD=PASSWORD
        )
        cluster.api_key = cluster.manage("issue_api_key", "operator").strip()
        cluster.start_worker("reconciling", models=None, concurrency=None, RECONCILE_SECONDS="1")
        cluster.base_url = cluster.start_web()
        yield cluster
    finally:
        cluster.shutdown()
        cluster.drop_database()


def test_operator_deploys_edits_unloads_and_loads_through_a_worker(operated_cluster):
    with chromium() as browser, new_page(browser) as page:
        operator_deploys_edits_unloads_and_loads(
            page, operated_cluster.base_url, operated_cluster.api_key, PASSWORD, "distributed-deploy"
        )
    worker_log = operated_cluster.procs[0].log.read_text()
    assert "model browser-echo ready" in worker_log and "(reloaded)" in worker_log
