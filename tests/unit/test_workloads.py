"""Pure parts of workload recovery: strategies, retry budgets, selectors, scheduler reasons, manifests."""

from __future__ import annotations

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _workload_rules as w


def job(parallelism=None, completion_mode=None, completions=None, backoff=None, failed=None, succeeded=None,
        policy=False, labels=None, suspend=None, annotations=None):
    spec = {}
    for key, val in (("parallelism", parallelism), ("completionMode", completion_mode), ("completions", completions),
                     ("backoffLimit", backoff), ("suspend", suspend)):
        if val is not None:
            spec[key] = val
    if policy:
        spec["podFailurePolicy"] = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}
    status = {k: val for k, val in (("failed", failed), ("succeeded", succeeded)) if val is not None}
    return {"metadata": {"name": "j", "namespace": "ns", "uid": "u-1", "labels": labels or {},
                         "annotations": annotations or {}}, "spec": spec, "status": status}


@pytest.mark.parametrize("obj, distributed", [
    (job(), False),
    (job(parallelism=1), False),
    (job(parallelism=4), True),
    (job(completion_mode="Indexed", completions=1, parallelism=1), True),
    (job(completion_mode="NonIndexed", parallelism=1, completions=5), False),
])
def test_distributed_jobs(obj, distributed):
    assert w.is_distributed(obj) is distributed


@pytest.mark.parametrize("key, obj, recreate, strategy", [
    (w.DEPLOYMENT, {"spec": {}}, False, w.WAIT_READY),
    (w.STATEFULSET, {"spec": {}}, False, w.WAIT_READY),
    (w.REPLICASET, {"spec": {}}, False, w.WAIT_READY),
    (w.REPLICATION_CONTROLLER, {"spec": {}}, False, w.WAIT_READY),
    (w.BATCH_JOB, job(parallelism=4), False, w.RESTART_JOB),
    (w.BATCH_JOB, job(), False, w.WAIT_READY),
    (w.BATCH_JOB, job(parallelism=4, suspend=True), False, w.NONE),  # someone else suspended it
    (w.BATCH_JOB, job(parallelism=4, suspend=True, labels={v.SUSPENDED_BY_RUN: "r"}), False, w.RESTART_JOB),
    (w.VOLCANO_JOB, {"spec": {}}, False, w.RESTART_COMMAND),
    (w.PYTORCHJOB, {"spec": {}}, False, w.RESTART_PODS),
    (w.TFJOB, {"spec": {}}, False, w.RESTART_PODS),
    (w.MPIJOB, {"spec": {}}, False, w.RESTART_PODS),
    (w.JOBSET, {"spec": {}}, False, w.RESTART_PODS),
    (w.DAEMONSET, {"spec": {}}, False, w.NONE),
    (w.NODE, None, False, w.NONE),
    (w.POD, None, False, w.LOST),
    (w.POD, None, True, w.RECREATE),
    (w.DEPLOYMENT, None, False, w.NONE),  # owner deleted
    (("argoproj.io", "Rollout"), {"spec": {}}, False, w.NONE),
])
def test_strategy_per_kind(key, obj, recreate, strategy):
    got, why = w.strategy_for(key, obj, recreate)
    assert got == strategy
    assert why


@pytest.mark.parametrize("obj, run", [
    (job(parallelism=4, suspend=True, labels={v.SUSPENDED_BY_RUN: "run-1"}), "run-1"),
    (job(parallelism=4, suspend=False, labels={v.SUSPENDED_BY_RUN: "run-1"}), None),  # resumed, label not yet removed
    (job(parallelism=4, suspend=True), None),  # someone else's suspension
    (job(parallelism=4), None),
    (None, None),  # gone
])
def test_the_run_that_left_a_job_suspended(obj, run):
    assert w.suspended_by(obj) == run


def test_kueue_admitted_job_is_evicted_not_suspended():
    assert w.job_restart_method(job(parallelism=4)) == "suspend"
    assert w.job_restart_method(job(parallelism=4, labels={w.KUEUE_QUEUE_LABEL: "q"})) == "evict"
    assert "Kueue" in w.strategy_for(w.BATCH_JOB, job(parallelism=4, labels={w.KUEUE_QUEUE_LABEL: "q"}), False)[1]


@pytest.mark.parametrize("key, obj, active, expected", [
    # Suspending costs nothing; evicting (Kueue) costs each pod unless the policy ignores disruptions.
    (w.BATCH_JOB, job(parallelism=4, backoff=6, failed=1), 4,
     {"field": "backoffLimit", "limit": 6, "used": 1, "remaining": 5, "restart_cost": 0, "at_risk": False}),
    (w.BATCH_JOB, job(parallelism=4, failed=0, labels={w.KUEUE_QUEUE_LABEL: "q"}), 4,
     {"limit": 6, "used": 0, "remaining": 6, "restart_cost": 4, "at_risk": False}),
    (w.BATCH_JOB, job(parallelism=4, backoff=4, labels={w.KUEUE_QUEUE_LABEL: "q"}), 4,
     {"limit": 4, "remaining": 4, "restart_cost": 4, "at_risk": True}),
    (w.BATCH_JOB, job(parallelism=4, policy=True, labels={w.KUEUE_QUEUE_LABEL: "q"}), 4,
     {"restart_cost": 0, "at_risk": False}),
    (w.BATCH_JOB, job(parallelism=4, backoff=2, failed=1), 4, {"remaining": 1, "at_risk": True}),
    (w.VOLCANO_JOB, {"spec": {"maxRetry": 3}, "status": {"retryCount": 2}}, 2,
     {"field": "maxRetry", "limit": 3, "used": 2, "remaining": 1, "restart_cost": 1, "at_risk": True}),
    (w.VOLCANO_JOB, {"spec": {}, "status": {}}, 2, {"limit": 3, "remaining": 3, "at_risk": False}),
    (w.PYTORCHJOB, {"spec": {"runPolicy": {"backoffLimit": 4}},
                    "status": {"replicaStatuses": {"Master": {"failed": 1}, "Worker": {"failed": 2, "active": 1}}}}, 3,
     {"field": "runPolicy.backoffLimit", "limit": 4, "used": 3, "remaining": 1, "restart_cost": None, "at_risk": True}),
    (w.PYTORCHJOB, {"spec": {}}, 3, {"limit": None, "at_risk": False}),
    (w.JOBSET, {"spec": {"failurePolicy": {"maxRestarts": 5}}, "status": {"restarts": 1}}, 8,
     {"field": "failurePolicy.maxRestarts", "limit": 5, "used": 1, "remaining": 4, "restart_cost": 1,
      "at_risk": False}),
    (w.JOBSET, {"spec": {"failurePolicy": {"maxRestarts": 5}}, "status": {"restarts": 4, "restartsCountTowardsMax": 3}},
     8, {"used": 3, "remaining": 2, "at_risk": True}),
    (w.JOBSET, {"spec": {}}, 8, {"limit": 0, "remaining": 0, "at_risk": True}),
])
def test_retry_budget(key, obj, active, expected):
    budget = w.retry_budget(key, obj, active)
    assert {k: budget[k] for k in expected} == expected
    assert budget["message"]


def test_budget_message_says_when_the_restart_exhausts_it():
    budget = w.retry_budget(w.VOLCANO_JOB, {"spec": {"maxRetry": 3}, "status": {"retryCount": 3}}, 2)
    assert budget["remaining"] == 0 and "exhaust" in budget["message"]
    kueue = w.retry_budget(w.BATCH_JOB, job(parallelism=4, backoff=4, labels={w.KUEUE_QUEUE_LABEL: "q"}), 4)
    assert "exhaust" in kueue["message"]
    assert w.retry_budget(w.DEPLOYMENT, {"spec": {}}, 1) is None


@pytest.mark.parametrize("obj, count", [
    (job(parallelism=4, completions=4), 4),
    (job(parallelism=4, completions=4, succeeded=3), 1),
    (job(parallelism=4), 4),
    (job(), 1),
    (job(parallelism=0), 0),
])
def test_expected_job_pods(obj, count):
    assert w.expected_job_pods(obj) == count


def test_scheduler_reason_prefers_the_podscheduled_message_then_events():
    unscheduled = {"spec": {}, "status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": "0/5 nodes are available: 1 node(s) were unschedulable, 4 Insufficient huawei.com/ascend-1980."}]}}
    assert "Insufficient huawei.com/ascend-1980" in w.scheduler_reason(unscheduled)
    bare = {"spec": {}, "status": {"phase": "Pending"}}
    events = [{"reason": "Scheduled", "message": "old"}, {"reason": "FailedScheduling", "message": "no nodes"}]
    assert w.scheduler_reason(bare, events) == "no nodes"
    assert w.scheduler_reason(bare, []) == "waiting for the scheduler"
    pulling = {"spec": {"nodeName": "n"}, "status": {"phase": "Pending", "containerStatuses": [
        {"name": "main", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "pull failed"}}}]}}
    assert w.scheduler_reason(pulling) == "container main: ImagePullBackOff pull failed"


def test_volcano_command_is_what_vcctl_creates():
    vcjob = {"metadata": {"name": "train", "namespace": "ml", "uid": "abc"}}
    command = w.volcano_command(vcjob, "batch.volcano.sh/v1alpha1", "20261129T120000Z-a1b2c3", "why")
    ref = {"apiVersion": "batch.volcano.sh/v1alpha1", "kind": "Job", "name": "train", "uid": "abc",
           "controller": True, "blockOwnerDeletion": True}
    assert command["apiVersion"] == "bus.volcano.sh/v1alpha1" and command["kind"] == "Command"
    assert command["action"] == "RestartJob"
    assert command["target"] == ref and command["metadata"]["ownerReferences"] == [ref]
    assert command["metadata"]["namespace"] == "ml"
    # Deterministic per run (a second call finds it), different across runs, and a valid name.
    assert command["metadata"]["name"] == w.command_name("train", "20261129T120000Z-a1b2c3")
    assert w.command_name("train", "20261129T120000Z-a1b2c3") != w.command_name("train", "20261130T120000Z-ffffff")
    assert len(w.command_name("x" * 300, "r")) <= 253


def test_unbound_copy_drops_the_node_binding_and_server_fields():
    pod = {"metadata": {"name": "p", "namespace": "ns", "uid": "old", "resourceVersion": "9", "labels": {"a": "b"},
                        "creationTimestamp": "t", "annotations": {"keep": "me"}},
           "spec": {"nodeName": "n1", "containers": [{"name": "c", "volumeMounts": [
               {"name": "kube-api-access-x1", "mountPath": "/var/run/secrets"}, {"name": "data", "mountPath": "/d"}]}],
               "volumes": [{"name": "kube-api-access-x1", "projected": {}}, {"name": "data", "emptyDir": {}}]},
           "status": {"phase": "Running"}}
    copy = w.unbound_copy(pod, "run-1")
    assert "nodeName" not in copy["spec"] and "status" not in copy
    assert set(copy["metadata"]) == {"name", "namespace", "labels", "annotations"}
    assert copy["metadata"]["annotations"] == {"keep": "me", v.RECREATED_FROM: "old", v.RUN_ID: "run-1"}
    assert [vol["name"] for vol in copy["spec"]["volumes"]] == ["data"]
    assert [m["name"] for m in copy["spec"]["containers"][0]["volumeMounts"]] == ["data"]
    assert pod["spec"]["nodeName"] == "n1"  # the input is not modified


@pytest.mark.parametrize("item, refs", [
    ({"namespace": "ns", "name": "p", "owner": "ReplicaSet/web-7d"},
     [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d", "_guessed": True}]),
    ({"namespace": "ns", "name": "p", "owner": "Job/t"},
     [{"apiVersion": "batch/v1", "kind": "Job", "name": "t", "_guessed": True}]),
    ({"namespace": "ns", "name": "p", "owner": {"kind": "Job", "name": "t", "api_version": "batch.volcano.sh/v1alpha1"}},
     [{"apiVersion": "batch.volcano.sh/v1alpha1", "kind": "Job", "name": "t", "_guessed": False}]),
    ({"namespace": "ns", "name": "p", "owner_kind": "PyTorchJob", "owner_name": "pt"},
     [{"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "pt", "_guessed": True}]),
    ({"namespace": "ns", "name": "p", "owner_references": [
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "u", "controller": True}]},
     [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "u", "_guessed": False}]),
    ({"namespace": "ns", "name": "p", "owner": None}, []),
])
def test_evicted_records_of_every_shape(item, refs):
    pod = w.evicted_pod(item, 0)
    got = [{k: val for k, val in ref.items() if k in refs[i]} for i, ref in enumerate(
        pod["metadata"]["ownerReferences"])] if refs else pod["metadata"]["ownerReferences"]
    assert got == refs
    assert pod["metadata"]["namespace"] == "ns" and pod["metadata"]["name"] == "p"


def test_evicted_record_with_the_pod_itself_keeps_its_spec():
    pod = w.evicted_pod({"pod": {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": []}},
                         "node": "n1"}, 0)
    assert pod["_manifest"] is True and pod["spec"]["nodeName"] == "n1"


@pytest.mark.parametrize("item, message", [
    ("p", "evicted item 1 must be a mapping"),
    ({"name": "p"}, "evicted item 1 needs both 'namespace' and 'name'"),
    ({"namespace": "ns", "name": "p", "owner": "ReplicaSet"}, "is not of the form Kind/name"),
    ({"namespace": "ns", "name": "p", "owner": {"kind": "Widget", "name": "x"}}, "owner kind 'Widget' needs an api_version"),
    ({"namespace": "ns", "name": "p", "owner_references": "x"}, "owner_references must be a list"),
    ({"pod": {"metadata": {"name": "p"}}}, "has no metadata.name or metadata.namespace"),
])
def test_malformed_evicted_records_are_one_sentence(item, message):
    with pytest.raises(w.WorkloadError, match=message):
        w.evicted_pod(item, 0)


def test_collection_paths():
    assert w.collection_path("v1", "ReplicationController") == "/api/v1/replicationcontrollers"
    assert w.collection_path("kubeflow.org/v1", "PyTorchJob") == "/apis/kubeflow.org/v1/pytorchjobs"
    assert w.kind_key("batch.volcano.sh/v1alpha1", "Job") == w.VOLCANO_JOB
    assert w.kind_key("v1", "Pod") == w.POD


@pytest.mark.parametrize("key, strategy, obj, expected", [
    (w.BATCH_JOB, w.RESTART_JOB, job(parallelism=4),
     [("patch", "jobs", "batch", "ns"), ("delete", "pods", "", "ns")]),
    (w.BATCH_JOB, w.RESTART_JOB, job(parallelism=4, labels={w.KUEUE_QUEUE_LABEL: "q"}),
     [("patch", "jobs", "batch", "ns"), ("delete", "pods", "", "ns"), ("create", "pods/eviction", "", "ns"),
      ("delete", "pods", "", "ns")]),
    (w.VOLCANO_JOB, w.RESTART_COMMAND, {}, [("patch", "jobs", "batch.volcano.sh", "ns"),
                                           ("create", "commands", "bus.volcano.sh", "ns")]),
    (w.PYTORCHJOB, w.RESTART_PODS, {}, [("patch", "pytorchjobs", "kubeflow.org", "ns"),
                                       ("create", "pods/eviction", "", "ns"), ("delete", "pods", "", "ns")]),
    (w.JOBSET, w.RESTART_PODS, {}, [("patch", "jobsets", "jobset.x-k8s.io", "ns"),
                                   ("create", "pods/eviction", "", "ns"), ("delete", "pods", "", "ns")]),
    (w.POD, w.RECREATE, None, [("delete", "pods", "", "ns"), ("create", "pods", "", "ns")]),
    (w.DEPLOYMENT, w.WAIT_READY, {}, []),
    (w.POD, w.LOST, None, []),
])
def test_access_checked_before_the_first_write(key, strategy, obj, expected):
    assert w.required_access(key, strategy, obj, "ns") == expected


def restart_judge(run_id, restarted_run, restarted_at, isolated_at):
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._workloads import RecoveryRun

    node = {"metadata": {"name": "n1", "annotations": {v.ISOLATED_AT: isolated_at} if isolated_at else {}}}
    run = RecoveryRun(client=None, nodes=["n1"], run_id=run_id, node_objects={"n1": node})
    annotations = {v.RESTARTED_RUN: restarted_run, v.RESTARTED_AT: restarted_at} if restarted_run else {}
    workload = w.Workload(api_version="batch/v1", kind="Job", namespace="ml", name="train",
                          obj={"metadata": {"annotations": annotations}}, pods=[{"node": "n1"}])
    return run.already_restarted(workload)


@pytest.mark.parametrize("case, args, expected", [
    ("this run restarted it", ("r2", "r2", "2026-11-29T12:00:00Z", "2026-11-29T11:00:00Z"), True),
    ("an earlier run restarted it after the node was isolated: once per fault episode",
     ("r2", "r1", "2026-11-29T12:00:00Z", "2026-11-29T11:59:00Z"), True),
    ("restarted before this fault began: its ranks may sit on the node again",
     ("r2", "r1", "2026-11-29T11:00:00Z", "2026-11-29T11:59:00Z"), False),
    ("never restarted", ("r2", None, None, "2026-11-29T11:59:00Z"), False),
    ("a node nobody isolated: only the run id counts", ("r2", "r1", "2026-11-29T12:00:00Z", None), False),
])
def test_a_training_job_is_restarted_once_per_fault_episode(case, args, expected):
    assert restart_judge(*args) is expected, case
