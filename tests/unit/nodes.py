"""Node JSON builders for unit tests of the pure core (no cluster involved)."""

from __future__ import annotations

import datetime as dt

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v

NOW = dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.timezone.utc)


def ago(seconds: float) -> str:
    return (NOW - dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(ctype: str, status: str, age: float = 86400, reason: str = "r", message: str = "m") -> dict:
    return {"type": ctype, "status": status, "lastTransitionTime": ago(age), "reason": reason, "message": message}


def node(name: str = "npu-a-0001", conditions: list[dict] | None = None, labels: dict | None = None,
         annotations: dict | None = None, unschedulable: bool = False, capacity: int = 8, allocatable: int = 8,
         resource: str = "huawei.com/ascend-1980", taints: list | None = None) -> dict:
    base_labels = {"ai-infra.io/pool": "npu-a", "accelerator": "huawei-Ascend910"}
    base_labels.update(labels or {})
    conds = [condition("Ready", "True"), condition("NT_NPU_CARD_LOSE", "False")]
    by_type = {c["type"]: c for c in conds}
    for c in conditions or []:
        by_type[c["type"]] = c
    spec: dict = {"providerID": f"kwok://{name}"}
    if unschedulable:
        spec["unschedulable"] = True
    if taints:
        spec["taints"] = taints
    return {
        "metadata": {"name": name, "labels": base_labels, "annotations": dict(annotations or {})},
        "spec": spec,
        "status": {
            "capacity": {"cpu": "192", resource: str(capacity)},
            "allocatable": {"cpu": "190", resource: str(allocatable)},
            "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}, {"type": "Hostname", "address": name}],
            "conditions": list(by_type.values()),
        },
    }


def faulty_node():
    """An NPU node isolated and drained by us for NT_NPU_OTHER, one card lost."""
    return node("npu-a-0003", conditions=[condition("NT_NPU_OTHER", "True", age=600, reason="os_task_name:npu-other",
                                                    message="chip 3 | error 0x80")],
                allocatable=7, unschedulable=True,
                annotations={v.ISOLATED_BY: v.COLLECTION, v.ISOLATED_AT: ago(500), v.ISOLATION_REASON: "NT_NPU_OTHER",
                             v.CORDONED_BY_US: "true", v.STATE: v.STATE_DRAINED},
                taints=[{"key": v.TAINT_KEY, "value": "NT_NPU_OTHER", "effect": "NoSchedule"}])
