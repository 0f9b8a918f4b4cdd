"""remediation_lock against the real local control plane: acquire, hold, expire, take over,
renew, release, check/diff mode, two real processes racing, and one-sentence failures."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._lock import LockHeld, acquire, release, renew

from .helpers import REPO, VENV_BIN, exists, run_module, service_account_kubeconfig, unique

LEASES = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"

# Each racer waits for the same start instant, then tries to take the lock once.
RACER = """
import json, sys, time
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._lock import LockHeld, acquire
kubeconfig, namespace, lease, holder, start_at = sys.argv[1:6]
client = Client({"kubeconfig": kubeconfig})
client.get("/version")  # connect before the start line
time.sleep(max(0.0, float(start_at) - time.time()))
try:
    result = acquire(client, namespace, lease, holder, 60)
    print(json.dumps({"holder": holder, "won": result["changed"]}))
except LockHeld as err:
    print(json.dumps({"holder": holder, "won": False, "msg": str(err)}))
"""


def lease_of(api, namespace: str, name: str) -> dict:
    return api.get(LEASES.format(ns=namespace) + "/" + name)


def test_acquire_hold_release_through_the_module(api, kubeconfig, namespace):
    base = {"namespace": namespace, "name": "remediation", "kubeconfig": kubeconfig}

    checked = run_module("remediation_lock", {**base, "holder": "job-1"}, check=True, diff=True)
    assert checked["changed"] is True and checked["diff"]["before"]["exists"] is False
    assert checked["diff"]["after"]["holder"] == "job-1"
    assert not exists(api, LEASES.format(ns=namespace) + "/remediation"), "check mode must create nothing"

    taken = run_module("remediation_lock", {**base, "holder": "job-1", "duration": 600, "run_id": "run-7"}, diff=True)
    assert taken["changed"] is True and taken["lock"]["holder"] == "job-1" and taken["lock"]["held"] is True
    lease = lease_of(api, namespace, "remediation")
    assert lease["spec"]["holderIdentity"] == "job-1" and lease["spec"]["leaseDurationSeconds"] == 600
    assert lease["metadata"]["annotations"]["node-recovery.ai-infra.io/run-id"] == "run-7"

    again = run_module("remediation_lock", {**base, "holder": "job-1", "duration": 600})
    assert again["changed"] is False and "already holds" in again["message"]

    other = run_module("remediation_lock", {**base, "holder": "job-2"})
    assert other["failed"] is True and "\n" not in other["msg"]
    assert "held by 'job-1' until" in other["msg"] and other["lock"]["expires_at"] in other["msg"]

    not_ours = run_module("remediation_lock", {**base, "holder": "job-2", "state": "released"})
    assert not_ours["changed"] is False and "held by 'job-1'" in not_ours["message"]
    assert lease_of(api, namespace, "remediation")["spec"]["holderIdentity"] == "job-1"

    given_back = run_module("remediation_lock", {**base, "holder": "job-1", "state": "released"}, diff=True)
    assert given_back["changed"] is True and given_back["diff"]["after"]["holder"] is None
    assert not lease_of(api, namespace, "remediation")["spec"].get("holderIdentity")
    assert run_module("remediation_lock", {**base, "holder": "job-1", "state": "released"})["changed"] is False

    now_other = run_module("remediation_lock", {**base, "holder": "job-2"})
    assert now_other["changed"] is True and now_other["lock"]["transitions"] == 1


def test_an_expired_lease_is_taken_over(api, namespace):
    acquire(api, namespace, "short", "crashed-run", 1)
    with pytest.raises(LockHeld, match="crashed-run"):
        acquire(api, namespace, "short", "next-run", 60)
    time.sleep(1.5)
    taken = acquire(api, namespace, "short", "next-run", 60)
    assert taken["changed"] is True and "taken over from expired holder 'crashed-run'" in taken["message"]
    assert lease_of(api, namespace, "short")["spec"]["leaseTransitions"] == 1


def test_renew_extends_our_hold_and_fails_for_a_lost_lock(api, namespace):
    first = acquire(api, namespace, "long", "run-a", 30)
    time.sleep(1.1)
    renewed = renew(api, namespace, "long", "run-a", 120)
    assert renewed["lock"]["expires_at"] > first["lock"]["expires_at"] and renewed["lock"]["duration"] == 120
    assert renewed["lock"]["acquired_at"] == first["lock"]["acquired_at"]
    with pytest.raises(LockHeld, match="held by 'run-a'"):
        renew(api, namespace, "long", "run-b")
    release(api, namespace, "long", "run-a")
    with pytest.raises(LockHeld, match="does not hold"):
        renew(api, namespace, "long", "run-a")


def test_two_processes_racing_for_a_free_lock_exactly_one_wins(kubeconfig, namespace):
    for round_ in range(5):
        lease = unique(f"race{round_}")
        start_at = str(time.time() + 2.0)
        procs = [subprocess.Popen([str(VENV_BIN / "python"), "-c", RACER, kubeconfig, namespace, lease, holder, start_at],
                                  cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for holder in ("racer-a", "racer-b")]
        outcomes = []
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            outcomes.append(json.loads(out.strip().splitlines()[-1]))
        winners = [o["holder"] for o in outcomes if o["won"]]
        assert len(winners) == 1, outcomes
        loser = next(o for o in outcomes if not o["won"])
        assert f"held by '{winners[0]}'" in loser["msg"]


def test_forbidden_verb_is_named(api, namespace, tmp_path):
    reader = service_account_kubeconfig(api, namespace, "lease-reader", [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list"]}], tmp_path)
    result = run_module("remediation_lock", {"namespace": namespace, "holder": "x", "kubeconfig": str(reader)})
    assert result["failed"] is True and "\n" not in result["msg"]
    assert "verb 'create' on resource 'leases.coordination.k8s.io'" in result["msg"], result["msg"]


def test_bad_options_each_one_sentence(kubeconfig):
    missing = run_module("remediation_lock", {"kubeconfig": kubeconfig})
    assert missing["failed"] is True and "holder" in missing["msg"]
    bad = run_module("remediation_lock", {"holder": "x", "duration": 0, "kubeconfig": kubeconfig})
    assert bad["failed"] is True and bad["msg"] == "duration must be at least 1 second, not 0"
    state = run_module("remediation_lock", {"holder": "x", "state": "stolen", "kubeconfig": kubeconfig})
    assert state["failed"] is True and "stolen" in state["msg"] and "\n" not in state["msg"]
