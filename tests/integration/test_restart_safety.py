"""The safety of the actions themselves, on the real local cluster: a whole-job restart never bypasses
a PodDisruptionBudget unless asked, never force-deletes a pod on a Ready node (a Job whose pod does
not stop stays suspended, and the next run resumes it once the pod is gone), and a drain counts a
force-deleted pod as gone only once it is gone."""

from __future__ import annotations

import threading
import time

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._drain import drain
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._isolate import isolate
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._workloads import recover

from .helpers import localnodes, pods, pool_of, running_pods, wait_for, workloads

FINALIZER = "test.ai-infra.io/hold"


def train(api, namespace, nodes, ranks=2):
    workloads.apply(api, workloads.training_job("train", namespace, ranks=ranks, node_selector=pool_of(nodes), grace=1))
    wait_for(lambda: len(running_pods(api, namespace, "app=train")) == ranks, 120, "ranks running")
    return running_pods(api, namespace, "app=train")


def test_a_whole_restart_never_bypasses_a_budget_unless_asked(api, namespace, make_nodes):
    nodes = make_nodes(3)
    ranks = train(api, namespace, nodes)
    api.request("POST", f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets", body={
        "metadata": {"name": "train"}, "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "train"}}}})
    wait_for(lambda: api.get(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/train").get("status", {})
             .get("currentHealthy") == 2, 60, "the budget counted by the disruption controller")
    faulty = ranks[0]["spec"]["nodeName"]
    isolate(api, faulty, ["NT_NPU_OTHER"], "run-held")  # its ranks must land elsewhere

    held = recover(api, [faulty], [], "run-held", False, True, 30, False)
    (job,) = of_namespace(held, namespace)
    assert job["status"] == "blocked" and "PodDisruptionBudget train allows 0 disruption(s)" in job["message"]
    assert "restart_ignores_budgets" in job["message"] and held["unrecovered"] == [f"Job {namespace}/train"]
    assert {p["metadata"]["uid"] for p in running_pods(api, namespace, "app=train")} == \
        {p["metadata"]["uid"] for p in ranks}  # nothing was stopped
    assert not api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/train")["spec"].get("suspend")

    asked = recover(api, [faulty], [], "run-asked", False, True, 120, False, ignore_budgets=True)
    assert of_namespace(asked, namespace)[0]["status"] == "recovered", asked["workloads"]
    assert not {p["metadata"]["uid"] for p in running_pods(api, namespace, "app=train")} & \
        {p["metadata"]["uid"] for p in ranks}  # restarted whole


def of_namespace(result: dict, namespace: str) -> list[dict]:
    """A run takes up every Job left suspended by an interrupted restart, wherever it runs: on the shared cluster,
    those of tests running meanwhile too. Each test judges its own."""
    return [w for w in result["workloads"] if w["namespace"] == namespace]


def restart_with_a_stuck_rank(api, namespace, nodes) -> tuple[str, dict, dict]:
    """A training job whose second rank takes ten minutes to shut down (kwok plays its kubelet: on a Ready node only
    the kubelet may end it), restarted whole by run-1 for a fault of its first rank's node: (that node, the stuck
    rank, run-1's result)."""
    ranks = train(api, namespace, nodes)
    stuck = ranks[1]
    api.patch(f"/api/v1/namespaces/{namespace}/pods/{stuck['metadata']['name']}",
              {"metadata": {"annotations": {"pod-delete.stage.kwok.x-k8s.io/delay": "600s"}}})
    faulty = ranks[0]["spec"]["nodeName"]
    isolate(api, faulty, ["NT_NPU_OTHER"], "run-1")
    return faulty, stuck, recover(api, [faulty], [], "run-1", False, True, 120, False)


def test_a_job_whose_pod_does_not_stop_on_a_ready_node_stays_suspended_until_the_next_run(api, namespace, make_nodes):
    faulty, stuck, first = restart_with_a_stuck_rank(api, namespace, make_nodes(3))
    (job,) = of_namespace(first, namespace)
    assert job["status"] == "failed" and "stays suspended" in job["message"], job
    current = api.get(f"/api/v1/namespaces/{namespace}/pods/{stuck['metadata']['name']}")
    assert current["metadata"]["uid"] == stuck["metadata"]["uid"] and current["metadata"].get("deletionTimestamp")
    assert current["metadata"]["deletionGracePeriodSeconds"] != 0  # never force-deleted
    assert api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/train")["spec"]["suspend"] is True

    # Another run meanwhile: the rank is still terminating, so it is not gone and the Job is not resumed.
    meanwhile = recover(api, [faulty], [], "run-2", False, True, 120, False)
    (job,) = of_namespace(meanwhile, namespace)
    assert job["status"] == "failed" and "stays suspended" in job["message"], job
    assert api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/train")["spec"]["suspend"] is True

    # Its kubelet ends it at last; the next run of the same remediation resumes the Job.
    api.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{stuck['metadata']['name']}",
                body={"gracePeriodSeconds": 0})
    wait_for(lambda: not [p for p in pods(api, namespace, "app=train")
                          if p["metadata"]["uid"] == stuck["metadata"]["uid"]], 60, "the stuck rank gone")
    second = recover(api, [faulty], [], "run-1", False, True, 120, False)
    assert of_namespace(second, namespace)[0]["action"] == "resumed: an interrupted whole restart of this run is finished"
    assert not api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/train")["spec"].get("suspend")
    wait_for(lambda: len(running_pods(api, namespace, "app=train")) == 2, 120, "every rank running again")
    labels = api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/train")["metadata"].get("labels") or {}
    assert v.SUSPENDED_BY_RUN not in labels



def test_a_job_the_run_that_suspended_it_resumes_meanwhile_is_left_to_that_run(api, namespace, make_nodes):
    """A run that finds a Job another run left suspended waits for its ranks only while it stays so: once the run
    that suspended it resumes it, the waiting run stops at once and says so, rather than wait for ranks that are
    no longer its business and then report a Job that runs as left suspended."""
    faulty, _stuck, first = restart_with_a_stuck_rank(api, namespace, make_nodes(3))
    (left,) = of_namespace(first, namespace)
    assert left["status"] == "failed", left  # left suspended by run-1

    outcome: dict = {}
    other = threading.Thread(target=lambda: outcome.update(recover(api, [faulty], [], "run-2", False, False, 120,
                                                                   False)))
    other.start()
    time.sleep(2)  # run-2 waits for the stuck rank (up to its grace period and 30 s)
    # run-1 finishes its restart meanwhile, as its next attempt would once the rank is gone.
    api.patch(f"/apis/batch/v1/namespaces/{namespace}/jobs/train",
              {"metadata": {"labels": {v.SUSPENDED_BY_RUN: None}}, "spec": {"suspend": False}})
    other.join(60)
    assert not other.is_alive()
    (job,) = of_namespace(outcome, namespace)
    assert job["status"] == "already_restarted", job
    assert "resumed meanwhile by another run: run run-1" in job["message"], job
    current = api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/train")
    assert not current["spec"].get("suspend") and v.SUSPENDED_BY_RUN not in (current["metadata"].get("labels") or {})

def test_a_force_deleted_pod_counts_as_gone_only_once_it_is_gone(api, namespace, make_nodes):
    name = make_nodes(1)[0]
    workloads.apply(api, workloads.inference_service("svc", namespace, replicas=1, node_selector=pool_of([name]),
                                                     min_available=0))
    wait_for(lambda: running_pods(api, namespace, "app=svc"), 60, "the replica running")
    (pod,) = running_pods(api, namespace, "app=svc")
    api.patch(f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}", {"metadata": {"finalizers": [FINALIZER]}})
    localnodes.set_condition(name, "Ready", "False", api=api)  # its kubelet can confirm nothing any more
    # A grace period of 1 s: the pod counts as stuck half a second after it should have been gone.
    result = drain(api, name, timeout=8, grace_period=1, force_delete_stuck_after=0.5, run_id="run-stuck")
    mine = next(p for p in result["pods"] if p["name"] == pod["metadata"]["name"])
    # Force-deleted, but the object is still there (held by the finalizer): the drain does not call it gone.
    assert result["drained"] is False and mine["outcome"] == "failed", mine
    assert "still terminating" in mine["reason"]
    still = [p for p in pods(api, namespace, "app=svc") if p["metadata"]["uid"] == pod["metadata"]["uid"]]
    assert still and still[0]["metadata"]["deletionGracePeriodSeconds"] == 0
    api.patch(f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}", {"metadata": {"finalizers": None}})
    again = drain(api, name, timeout=30, grace_period=1, force_delete_stuck_after=0.5, run_id="run-stuck")
    assert again["drained"] is True, again["message"]
