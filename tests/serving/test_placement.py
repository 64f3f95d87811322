"""The planner: which host holds which model, from the deployments and the hosts alone."""

from serving.deployments.placement import NEW_COPY_GRACE_SECONDS, CopyView, DeploymentView, HostView, plan

NOW = 1_000_000.0


def hosts(*names, **fields):
    return [HostView(worker_id=name, host=name, **fields) for name in names]


def test_replicas_spread_one_per_host():
    result = plan([DeploymentView(name="m", replicas=3)], hosts("a", "b", "c"), now=NOW)
    assert result.hosts_of("m") == ["a", "b", "c"]
    assert result.unplaced == {}


def test_more_replicas_than_hosts_places_what_it_can_and_says_so():
    result = plan([DeploymentView(name="m", replicas=3)], hosts("a", "b"), now=NOW)
    assert result.hosts_of("m") == ["a", "b"]
    assert "2 of 3 copies placed" in result.unplaced["m"]


def test_a_copy_stays_where_it_is():
    b = HostView(worker_id="b", copies={"m": CopyView(loaded_at=NOW - 100)})
    result = plan([DeploymentView(name="m", replicas=1)], [HostView(worker_id="a"), b], now=NOW)
    assert result.hosts_of("m") == ["b"]


def test_placement_by_label_and_by_host():
    workers = [
        HostView(worker_id="a", host="ha"),
        HostView(worker_id="b", host="hb", labels=frozenset({"gpu"})),
        HostView(worker_id="c", host="hc"),
    ]
    result = plan(
        [DeploymentView(name="big", replicas=2, label="gpu"), DeploymentView(name="pinned", replicas=1, host="hc")],
        workers,
        now=NOW,
    )
    assert result.hosts_of("big") == ["b"]
    assert result.hosts_of("pinned") == ["c"]


def test_a_label_no_host_has_is_unplaced_with_the_reason():
    result = plan([DeploymentView(name="m", replicas=1, label="tpu")], hosts("a"), now=NOW)
    assert result.hosts_of("m") == []
    assert "label `tpu`" in result.unplaced["m"]


def test_drained_and_pinned_hosts_take_no_placements():
    workers = [HostView(worker_id="a", drained=True), HostView(worker_id="b", pinned=True), HostView(worker_id="c")]
    assert plan([DeploymentView(name="m", replicas=3)], workers, now=NOW).hosts_of("m") == ["c"]


def test_on_demand_is_placed_only_when_wanted():
    assert plan([DeploymentView(name="m", replicas=0)], hosts("a"), now=NOW).hosts_of("m") == []
    assert plan([DeploymentView(name="m", replicas=0, wanted=True)], hosts("a"), now=NOW).hosts_of("m") == ["a"]


def test_an_idle_on_demand_copy_goes_after_its_keep_alive():
    deployment = DeploymentView(name="m", replicas=0, keep_alive_seconds=60)
    used = lambda ago: hosts("a", copies={"m": CopyView(last_used=NOW - ago, loaded_at=NOW - 1000)})  # noqa: E731
    assert plan([deployment], used(59), now=NOW).hosts_of("m") == ["a"]
    assert plan([deployment], used(61), now=NOW).hosts_of("m") == []


def test_keep_alive_never_and_zero():
    copies = {"m": CopyView(last_used=NOW - 10**6, loaded_at=NOW - 10**6)}
    never = DeploymentView(name="m", replicas=0, keep_alive_seconds=None)
    assert plan([never], hosts("a", copies=copies), now=NOW).hosts_of("m") == ["a"]
    zero = DeploymentView(name="m", replicas=0, keep_alive_seconds=0)
    just_used = {"m": CopyView(last_used=NOW - 0.01, loaded_at=NOW - 100)}
    assert plan([zero], hosts("a", copies=just_used), now=NOW).hosts_of("m") == []
    busy = {"m": CopyView(busy=True, last_used=NOW - 100, loaded_at=NOW - 100)}
    assert plan([zero], hosts("a", copies=busy), now=NOW).hosts_of("m") == ["a"]


def test_a_new_copy_has_a_grace_before_its_first_request():
    zero = DeploymentView(name="m", replicas=0, keep_alive_seconds=0)
    fresh = {"m": CopyView(loaded_at=NOW - NEW_COPY_GRACE_SECONDS / 2)}
    assert plan([zero], hosts("a", copies=fresh), now=NOW).hosts_of("m") == ["a"]
    stale = {"m": CopyView(loaded_at=NOW - NEW_COPY_GRACE_SECONDS - 1)}
    assert plan([zero], hosts("a", copies=stale), now=NOW).hosts_of("m") == []


def test_a_wanted_model_evicts_the_least_recently_used_idle_one():
    full = hosts(
        "a",
        max_loaded_models=2,
        copies={
            "old": CopyView(last_used=NOW - 50, loaded_at=NOW - 500),
            "recent": CopyView(last_used=NOW - 5, loaded_at=NOW - 500),
        },
    )
    deployments = [
        DeploymentView(name="old", replicas=0),
        DeploymentView(name="recent", replicas=0),
        DeploymentView(name="new", replicas=0, wanted=True),
    ]
    assert plan(deployments, full, now=NOW).for_host("a") == {"new", "recent"}


def test_copies_in_use_and_replicas_are_never_evicted():
    full = hosts(
        "a",
        max_loaded_models=2,
        copies={"pinned": CopyView(loaded_at=NOW - 500), "busy": CopyView(busy=True, loaded_at=NOW - 500)},
    )
    deployments = [
        DeploymentView(name="pinned", replicas=1),
        DeploymentView(name="busy", replicas=0),
        DeploymentView(name="new", replicas=0, wanted=True),
    ]
    result = plan(deployments, full, now=NOW)
    assert result.for_host("a") == {"pinned", "busy"}
    assert "full" in result.unplaced["new"]


def test_a_memory_budget_is_room_too():
    budget = hosts("a", "b", memory_budget_bytes=1000)
    deployments = [DeploymentView(name=f"m{i}", replicas=1, memory_bytes=600) for i in range(3)]
    result = plan(deployments, budget, now=NOW)
    assert sorted(len(result.for_host(h)) for h in ("a", "b")) == [1, 1]
    assert "m2" in result.unplaced


def test_every_host_computes_the_same_plan():
    workers = hosts("a", "b", "c", max_loaded_models=1)
    deployments = [DeploymentView(name=n, replicas=1) for n in ("x", "y", "z")]
    first = plan(deployments, workers, now=NOW)
    second = plan(list(reversed(deployments)), list(reversed(workers)), now=NOW)
    assert first.assignments == second.assignments
    assert sorted(n for names in first.assignments.values() for n in names) == ["x", "y", "z"]
