"""The drain's pod rules and budget matching (pure, no cluster)."""

from __future__ import annotations

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import KubernetesError
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._drain_rules import (
    DELETE,
    EVICT,
    REFUSE,
    SKIP,
    WAIT,
    PodRules,
    budgets_of,
    decide,
    pdb_named_in,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._pods import selector_matches


def pod(name="p", namespace="ns", owner="ReplicaSet", phase="Running", annotations=None, emptydir=False,
        terminating=False, labels=None) -> dict:
    meta = {"name": name, "namespace": namespace, "uid": f"uid-{name}", "annotations": dict(annotations or {}),
            "labels": dict(labels or {})}
    if owner:
        meta["ownerReferences"] = [{"kind": owner, "name": f"{owner.lower()}-1", "controller": True}]
    if terminating:
        meta["deletionTimestamp"] = "2026-11-29T12:00:00Z"
    spec = {"containers": [{"name": "c"}]}
    if emptydir:
        spec["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    return {"metadata": meta, "spec": spec, "status": {"phase": phase}}


PROTECTED = {v.PROTECTED_POD: "true"}
NOT_SAFE = {v.SAFE_TO_EVICT: "false"}
MIRROR = {"kubernetes.io/config.mirror": "abc"}
LOOSE = PodRules()
FORCE = PodRules(force=True)
EMPTYDIR_OK = PodRules(delete_emptydir_data=True)
ALL = PodRules(force=True, delete_emptydir_data=True)

# (case, pod, rules, selected, expected action, words the reason must contain, will_return)
CASES = [
    ("replicaset pod is evicted", pod(), LOOSE, True, EVICT, "ReplicaSet", True),
    ("statefulset pod is evicted", pod(owner="StatefulSet"), LOOSE, True, EVICT, "StatefulSet", True),
    ("job pod is evicted", pod(owner="Job"), LOOSE, True, EVICT, "Job", True),
    ("custom controller pod is evicted", pod(owner="PyTorchJob"), LOOSE, True, EVICT, "PyTorchJob", True),
    ("daemonset pod stays", pod(owner="DaemonSet"), ALL, True, SKIP, "DaemonSet", True),
    ("mirror pod stays", pod(owner=None, annotations=MIRROR), ALL, True, SKIP, "mirror", True),
    ("mirror pod owned by its node stays", pod(owner="Node", annotations=MIRROR), LOOSE, True, SKIP, "mirror", True),
    ("completed job pod is deleted", pod(owner="Job", phase="Succeeded"), LOOSE, True, DELETE, "Succeeded", False),
    ("failed pod is deleted", pod(phase="Failed"), LOOSE, True, DELETE, "Failed", False),
    ("completed bare pod needs no force", pod(owner=None, phase="Succeeded"), LOOSE, True, DELETE, "completed", False),
    ("completed emptyDir pod needs no flag", pod(phase="Succeeded", emptydir=True), LOOSE, True, DELETE, "completed",
     False),
    ("bare pod is refused", pod(owner=None), LOOSE, True, REFUSE, "not managed by a controller", False),
    ("bare pod with force is deleted", pod(owner=None), FORCE, True, DELETE, "will not come back", False),
    ("emptyDir pod is refused", pod(emptydir=True), LOOSE, True, REFUSE, "delete_emptydir_data", True),
    ("emptyDir pod with the flag is evicted", pod(emptydir=True), EMPTYDIR_OK, True, EVICT, "data is lost", True),
    ("emptyDir pod is not forced by force", pod(emptydir=True), FORCE, True, REFUSE, "emptyDir", True),
    ("protected pod is refused", pod(annotations=PROTECTED), EMPTYDIR_OK, True, REFUSE, v.PROTECTED_POD, True),
    ("protected pod with force is evicted", pod(annotations=PROTECTED), FORCE, True, EVICT, "forced", True),
    ("safe-to-evict false is refused", pod(annotations=NOT_SAFE), LOOSE, True, REFUSE, v.SAFE_TO_EVICT, True),
    ("safe-to-evict False (any case) is refused", pod(annotations={v.SAFE_TO_EVICT: "False"}), LOOSE, True, REFUSE,
     "safe-to-evict", True),
    ("safe-to-evict true is evicted", pod(annotations={v.SAFE_TO_EVICT: "true"}), LOOSE, True, EVICT, "ReplicaSet",
     True),
    ("protected false is evicted", pod(annotations={v.PROTECTED_POD: "false"}), LOOSE, True, EVICT, "ReplicaSet", True),
    ("every refusal is named", pod(owner=None, emptydir=True, annotations=PROTECTED), LOOSE, True, REFUSE,
     "protected=true; set force to evict it anyway; not managed by a controller", False),
    ("terminating pod is waited for", pod(terminating=True, owner=None), LOOSE, True, WAIT, "terminating", True),
    ("excluded namespace stays", pod(namespace="kube-system", owner=None), PodRules(exclude_namespaces=frozenset(
        {"kube-system"})), True, SKIP, "kube-system", True),
    ("unselected pod stays", pod(owner=None, emptydir=True), LOOSE, False, SKIP, "pod_selector", True),
    ("selection does not bypass rules", pod(owner=None), LOOSE, True, REFUSE, "force", False),
]


@pytest.mark.parametrize("case,the_pod,rules,selected,action,words,will_return", CASES, ids=[c[0] for c in CASES])
def test_decide(case, the_pod, rules, selected, action, words, will_return):
    decision = decide(the_pod, rules, selected)
    assert decision.action == action, decision
    assert words in decision.reason
    assert decision.will_return is will_return


def expression(key, operator, values=None):
    return {"key": key, "operator": operator, "values": values or []}


SELECTORS = [
    ("null selector matches nothing", None, {"app": "a"}, False),
    ("empty selector matches everything", {}, {"app": "a"}, True),
    ("matchLabels equal", {"matchLabels": {"app": "a"}}, {"app": "a", "x": "y"}, True),
    ("matchLabels differ", {"matchLabels": {"app": "a"}}, {"app": "b"}, False),
    ("matchLabels missing", {"matchLabels": {"app": "a"}}, {}, False),
    ("In", {"matchExpressions": [expression("tier", "In", ["web", "api"])]}, {"tier": "api"}, True),
    ("In missing key", {"matchExpressions": [expression("tier", "In", ["web"])]}, {}, False),
    ("NotIn other value", {"matchExpressions": [expression("tier", "NotIn", ["web"])]}, {"tier": "db"}, True),
    ("NotIn missing key", {"matchExpressions": [expression("tier", "NotIn", ["web"])]}, {}, True),
    ("NotIn listed", {"matchExpressions": [expression("tier", "NotIn", ["web"])]}, {"tier": "web"}, False),
    ("Exists", {"matchExpressions": [expression("gpu", "Exists")]}, {"gpu": ""}, True),
    ("Exists missing", {"matchExpressions": [expression("gpu", "Exists")]}, {}, False),
    ("DoesNotExist", {"matchExpressions": [expression("gpu", "DoesNotExist")]}, {}, True),
    ("DoesNotExist present", {"matchExpressions": [expression("gpu", "DoesNotExist")]}, {"gpu": "1"}, False),
    ("labels and expressions together", {"matchLabels": {"app": "a"}, "matchExpressions": [expression("t", "In", ["x"])]},
     {"app": "a", "t": "y"}, False),
]


@pytest.mark.parametrize("case,selector,labels,expected", SELECTORS, ids=[c[0] for c in SELECTORS])
def test_selector_matches(case, selector, labels, expected):
    assert selector_matches(selector, labels) is expected


def test_budgets_of_matches_only_its_namespace():
    pdbs = [{"metadata": {"name": "web", "namespace": "ns"}, "spec": {"selector": {"matchLabels": {"app": "web"}}}},
            {"metadata": {"name": "web", "namespace": "other"}, "spec": {"selector": {"matchLabels": {"app": "web"}}}},
            {"metadata": {"name": "db", "namespace": "ns"}, "spec": {"selector": {"matchLabels": {"app": "db"}}}}]
    found = budgets_of(pod(labels={"app": "web"}), pdbs)
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in found] == [("ns", "web")]


def test_pdb_named_in_a_429_cause():
    err = KubernetesError("evicting pod ns/web-1 failed: Cannot evict pod as it would violate the pod's disruption "
                          "budget. (HTTP 429)", status=429,
                          details={"causes": [{"reason": "DisruptionBudget",
                                               "message": "The disruption budget web needs 2 healthy pods and has 2 "
                                                          "currently"}]})
    assert pdb_named_in(err) == "web"
    assert pdb_named_in(KubernetesError("too many requests (HTTP 429)", status=429)) is None
