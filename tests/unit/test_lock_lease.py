"""How a Lease reads as a lock, and the Lease bodies we write (pure)."""

from __future__ import annotations

import datetime as dt

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._lock import _lease_body, describe, micro_time

NOW = dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.timezone.utc)


def lease(holder="a", renewed_ago=10, duration=60, transitions=0) -> dict:
    renewed = micro_time(NOW - dt.timedelta(seconds=renewed_ago))
    return {"metadata": {"name": "lock", "namespace": "default", "resourceVersion": "7"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration, "acquireTime": renewed,
                     "renewTime": renewed, "leaseTransitions": transitions}}


def test_micro_time_is_what_the_api_server_writes():
    assert micro_time(NOW) == "2026-11-29T12:00:00.000000Z"


def test_no_lease_is_a_free_lock():
    assert describe(None, NOW) == {"exists": False, "holder": None, "held": False, "expires_at": None}


def test_a_fresh_hold_is_held_until_renew_plus_duration():
    lock = describe(lease(renewed_ago=10, duration=60), NOW)
    assert lock["held"] and lock["holder"] == "a"
    assert lock["expires_at"] == "2026-11-29T12:00:50.000000Z"


def test_an_expired_hold_is_not_held():
    assert not describe(lease(renewed_ago=61, duration=60), NOW)["held"]


def test_a_released_lease_has_no_holder():
    assert describe(lease(holder=None), NOW)["held"] is False


def test_taking_over_counts_a_transition_and_keeps_the_resource_version():
    body = _lease_body("default", "lock", "b", 120, NOW, lease(holder="a", transitions=2), "run-9")
    assert body["spec"]["holderIdentity"] == "b" and body["spec"]["leaseTransitions"] == 3
    assert body["spec"]["acquireTime"] == body["spec"]["renewTime"] == micro_time(NOW)
    assert body["metadata"]["resourceVersion"] == "7"  # the update is guarded by what we read
    assert body["metadata"]["annotations"][v.RUN_ID] == "run-9"


def test_renewing_keeps_the_acquire_time_and_transitions():
    before = lease(holder="a", renewed_ago=30, transitions=2)
    body = _lease_body("default", "lock", "a", 60, NOW, before, None)
    assert body["spec"]["acquireTime"] == before["spec"]["acquireTime"]
    assert body["spec"]["renewTime"] == micro_time(NOW)
    assert body["spec"]["leaseTransitions"] == 2


def test_a_new_lease_starts_with_no_transitions():
    body = _lease_body("default", "lock", "a", 60, NOW, None, None)
    assert body["spec"]["leaseTransitions"] == 0
    assert body["metadata"]["name"] == "lock" and "resourceVersion" not in body["metadata"]
