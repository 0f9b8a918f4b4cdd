"""The remediation lock without a cluster: how a Lease reads as a lock, the bodies we write, and the
judgement by observation (a fake clock and a fake Lease store standing in for the API server)."""

from __future__ import annotations

import copy
import datetime as dt
import os
import subprocess
import sys

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import KubernetesError
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._lock import (
    EXPIRED,
    FREE,
    HELD,
    OURS,
    LeaseObserver,
    LockHeld,
    ProcessIdentity,
    _lease_body,
    acquire,
    describe,
    judge,
    keep_renewing,
    micro_time,
    release,
    renew,
)

NOW = dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.timezone.utc)


def lease(holder="a", renewed_ago=10, duration=60, transitions=0, version="7", run_id=None) -> dict:
    renewed = micro_time(NOW - dt.timedelta(seconds=renewed_ago))
    metadata = {"name": "lock", "namespace": "default", "resourceVersion": version}
    if run_id:
        metadata["annotations"] = {v.RUN_ID: run_id}
    return {"metadata": metadata,
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration, "acquireTime": renewed,
                     "renewTime": renewed, "leaseTransitions": transitions}}


class FakeClock:
    """Monotonic time that moves only when someone sleeps; callbacks play the other runs."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.on_sleep: list = []
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds
        self.slept += seconds
        for callback in self.on_sleep:
            callback(self.now)


class FakeLeaseStore:
    """One Lease with the API server's write rules: create fails with 409 if it exists, an update with
    a stale resourceVersion fails with 409, every write bumps the resourceVersion."""

    def __init__(self, initial: dict | None = None) -> None:
        self.lease = copy.deepcopy(initial)
        self.version = int((initial or {}).get("metadata", {}).get("resourceVersion") or 0)
        self.writes = 0
        self.fail_reads = 0

    def get_or_none(self, path, **_kwargs):
        if self.fail_reads:
            self.fail_reads -= 1
            raise KubernetesError("reading Lease default/lock failed: connection refused")
        return copy.deepcopy(self.lease)

    def request(self, method, path, body=None, **_kwargs):
        if method == "POST" and self.lease is not None:
            raise KubernetesError("already exists (HTTP 409)", status=409)
        if method == "PUT" and (self.lease is None or
                                body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]):
            raise KubernetesError("the object has been modified (HTTP 409)", status=409)
        self.put(body)
        return copy.deepcopy(self.lease)

    def put(self, body: dict) -> None:
        """A write as any client makes it (also the other run's renewals)."""
        self.version += 1
        self.writes += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)

    def renew_as(self, holder: str, renew_time: dt.datetime) -> None:
        body = copy.deepcopy(self.lease)
        body["spec"].update(holderIdentity=holder, renewTime=micro_time(renew_time))
        self.put(body)


# How a Lease reads (pure).

def test_micro_time_is_what_the_api_server_writes():
    assert micro_time(NOW) == "2026-11-29T12:00:00.000000Z"


def test_no_lease_is_a_free_lock():
    assert describe(None) == {"exists": False, "holder": None, "held": False, "expires_at": None}


def test_held_means_a_holder_is_named_whatever_the_renew_time_says():
    old = describe(lease(renewed_ago=7200, duration=60, run_id="run-3"))
    assert old["held"] is True and old["holder"] == "a" and old["run_id"] == "run-3"
    assert old["expires_at"] == "2026-11-29T10:01:00.000000Z"  # information only


def test_a_released_lease_has_no_holder():
    assert describe(lease(holder=None))["held"] is False


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


# The judgement by observation.

def test_judge_names_free_ours_held_and_expired_by_what_was_observed():
    clock = FakeClock()
    observer = LeaseObserver(clock)
    assert judge(None, "me", observer) == FREE
    assert judge(lease(holder=None), "me", observer) == FREE
    assert judge(lease(holder="me", renewed_ago=9999), "me", observer) == OURS
    stale = lease(holder="other", renewed_ago=9999, duration=10)
    assert judge(stale, "me", observer) == HELD  # first sight: never expired, however old its renewTime
    clock.sleep(9.9)
    assert judge(stale, "me", observer) == HELD
    clock.sleep(0.1)
    assert judge(stale, "me", observer) == EXPIRED
    assert judge(lease(holder="other", renewed_ago=9999, duration=10, version="8"), "me", observer) == HELD
    assert observer.renewals_seen == 1 and observer.unchanged_for() == 0


def test_a_lease_renewed_all_along_is_never_taken_however_old_its_renew_time():
    clock = FakeClock()
    store = FakeLeaseStore(lease(holder="live-run", renewed_ago=3600, duration=5))
    # The live run renews every second, writing a renewTime an hour behind (its clock is wrong).
    clock.on_sleep.append(lambda now: store.renew_as("live-run", NOW - dt.timedelta(hours=1, seconds=-now)))
    with pytest.raises(LockHeld) as held:
        acquire(store, "default", "lock", "me", 30, wait=60, clock=clock, sleep=clock.sleep)
    assert store.lease["spec"]["holderIdentity"] == "live-run"
    assert clock.slept == pytest.approx(60) and store.writes >= 50  # it waited the whole time, never wrote
    assert held.value.lease["unrenewed_seconds"] < 5


def test_a_lease_that_stops_changing_is_taken_after_its_duration_even_with_a_future_renew_time():
    clock = FakeClock()
    future = lease(holder="dead-run", renewed_ago=-3600, duration=5, run_id="run-1")
    store = FakeLeaseStore(future)
    taken = acquire(store, "default", "lock", "me", 30, run_id="run-2", wait=60, clock=clock, sleep=clock.sleep)
    assert taken["changed"] is True and taken["lock"]["holder"] == "me" and taken["lock"]["transitions"] == 1
    assert "took over" in taken["message"] and "'dead-run'" in taken["message"]
    assert 5 <= clock.slept <= 6  # its duration of unchanged Lease as observed, plus at most one poll
    assert taken["waited_seconds"] == round(clock.slept, 1)  # the run plans again after such a wait
    assert store.lease["metadata"]["annotations"][v.RUN_ID] == "run-2"


def test_a_lease_that_stops_changing_late_is_taken_its_duration_after_the_last_change():
    clock = FakeClock()
    store = FakeLeaseStore(lease(holder="dying-run", duration=4))
    clock.on_sleep.append(lambda now: store.renew_as("dying-run", NOW) if now < 1010 else None)
    acquire(store, "default", "lock", "me", 30, wait=60, clock=clock, sleep=clock.sleep)
    assert 1013 <= clock.now <= 1014  # last renewal seen at 1009, plus its 4 s, plus at most one poll


def test_wait_exhausted_fails_with_one_sentence_naming_holder_run_and_unrenewed_time():
    clock = FakeClock()
    store = FakeLeaseStore(lease(holder="other-run", duration=30, run_id="run-77"))
    with pytest.raises(LockHeld) as held:
        acquire(store, "default", "lock", "me", 30, wait=10, clock=clock, sleep=clock.sleep)
    message = str(held.value)
    assert "\n" not in message and message.count(". ") == 0
    assert "held by 'other-run'" in message and "run id 'run-77'" in message
    assert "unrenewed for 10.0 s as seen from here" in message and "after 30 s without renewal" in message
    assert "a wait shorter than the lease duration (30 s) cannot outlast" in message
    assert clock.slept == pytest.approx(10) and store.writes == 0
    assert held.value.lease["holder"] == "other-run" and held.value.lease["unrenewed_seconds"] == 10.0


def test_wait_zero_takes_only_a_free_lock_at_once():
    clock = FakeClock()
    store = FakeLeaseStore(lease(holder="other-run", renewed_ago=99999, duration=1))
    with pytest.raises(LockHeld, match="held by 'other-run'"):
        acquire(store, "default", "lock", "me", 30, wait=0, clock=clock, sleep=clock.sleep)
    assert clock.slept == 0


def test_a_released_lease_is_taken_at_once():
    clock = FakeClock()
    store = FakeLeaseStore(lease(holder=None, renewed_ago=1, duration=3600, transitions=4))
    taken = acquire(store, "default", "lock", "me", 30, wait=0, clock=clock, sleep=clock.sleep)
    assert taken["changed"] is True and taken["lock"]["holder"] == "me" and clock.slept == 0
    assert taken["waited_seconds"] == 0
    assert store.lease["spec"]["leaseDurationSeconds"] == 30 and store.lease["spec"]["leaseTransitions"] == 5


def test_holding_it_already_renews_without_a_change():
    store = FakeLeaseStore(lease(holder="me", renewed_ago=9999, duration=30))
    again = acquire(store, "default", "lock", "me", 30, wait=0)
    assert again["changed"] is False and "already holds" in again["message"] and store.writes == 1


def test_check_mode_writes_nothing():
    store = FakeLeaseStore(lease(holder=None))
    checked = acquire(store, "default", "lock", "me", 30, check_mode=True, wait=0)
    assert checked["changed"] is True and checked["diff"]["after"]["holder"] == "me" and store.writes == 0


def test_a_conflict_on_takeover_means_judging_again():
    clock = FakeClock()
    store = FakeLeaseStore(None)
    original = store.request

    def someone_creates_first(method, path, body=None, **kwargs):
        if store.lease is None:  # the other racer's create lands between our read and our write
            store.put(_lease_body("default", "lock", "racer", 30, NOW, None, None))
        return original(method, path, body=body, **kwargs)

    store.request = someone_creates_first
    with pytest.raises(LockHeld, match="held by 'racer'"):
        acquire(store, "default", "lock", "me", 30, wait=0, clock=clock, sleep=clock.sleep)
    assert store.lease["spec"]["holderIdentity"] == "racer"


def test_renew_and_release_retry_a_conflict_with_our_own_renewer():
    store = FakeLeaseStore(lease(holder="me", duration=30))
    original = store.request
    interfered = []

    def renewer_writes_first(method, path, body=None, **kwargs):
        if not interfered:
            interfered.append(True)
            store.renew_as("me", NOW)
        return original(method, path, body=body, **kwargs)

    store.request = renewer_writes_first
    assert renew(store, "default", "lock", "me")["changed"] is True
    interfered.clear()
    assert release(store, "default", "lock", "me")["changed"] is True
    assert store.lease["spec"]["holderIdentity"] is None
    with pytest.raises(LockHeld, match="nobody holds it"):
        renew(store, "default", "lock", "me")


# Keeping the lease alive.

def test_the_renewer_renews_every_third_of_the_duration_while_the_controller_lives():
    clock = FakeClock()
    store = FakeLeaseStore(lease(holder="me", duration=9))
    alive_until = clock.now + 30
    why = keep_renewing(store, "default", "lock", "me", 9, lambda: clock.now < alive_until, clock, clock.sleep)
    assert why == "the run's controller is gone"
    assert store.writes == 9  # at +3, +6, ... +27 s; at +30 the controller is gone and nothing is written


def test_the_renewer_stops_when_the_lease_is_no_longer_ours():
    clock = FakeClock()
    store = FakeLeaseStore(lease(holder="me", duration=9))
    clock.on_sleep.append(lambda now: store.renew_as("other", NOW) if now >= 1010 and
                          store.lease["spec"]["holderIdentity"] == "me" else None)
    assert keep_renewing(store, "default", "lock", "me", 9, lambda: True, clock, clock.sleep) == \
        "the Lease is no longer ours"
    assert store.lease["spec"]["holderIdentity"] == "other"


def test_the_renewer_keeps_trying_through_api_errors_until_the_lease_would_have_expired():
    clock = FakeClock()
    store = FakeLeaseStore(lease(holder="me", duration=9))
    store.fail_reads = 3  # a short outage: renewed again afterwards
    clock.on_sleep.append(lambda now: setattr(store, "fail_reads", 10**6) if now >= 1020 else None)
    why = keep_renewing(store, "default", "lock", "me", 9, lambda: True, clock, clock.sleep)
    assert why == "the lease expired while renewing failed"
    last_write = store.lease["spec"]["renewTime"]
    assert last_write and 1020 + 9 - 3 <= clock.now <= 1020 + 9 + 1  # given up once 9 s passed since the last renewal


def test_a_process_is_known_by_pid_and_start_time():
    me = ProcessIdentity.of(os.getpid())
    assert me.alive()
    if me.start_time is not None:  # Linux: a reused pid is another process
        assert not ProcessIdentity(os.getpid(), str(int(me.start_time) + 1)).alive()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child_identity = ProcessIdentity.of(child.pid)
    child.wait()
    assert not child_identity.alive()
