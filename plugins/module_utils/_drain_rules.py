# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

The drain's rules, pure and table-tested: which pods may leave a node and how (kubectl
drain's filters plus the protection annotations), each decision saying why, and which
PodDisruptionBudgets guard a pod. The engine that acts on them is _drain.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import KubernetesError
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._pods import controller_ref, selector_matches

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
# What the plan does with a pod.
EVICT, DELETE, SKIP, REFUSE, WAIT = "evict", "delete", "skip", "refuse", "wait"
_PDB_IN_MESSAGE = re.compile(r"disruption budget (\S+) needs")


@dataclass(frozen=True)
class PodRules:
    """What the operator allows (the kubectl drain flags, and ours)."""

    force: bool = False  # unmanaged pods are deleted; protected pods are evicted
    delete_emptydir_data: bool = False
    exclude_namespaces: frozenset = frozenset()


@dataclass(frozen=True)
class PodDecision:
    action: str  # EVICT, DELETE, SKIP, REFUSE or WAIT
    reason: str
    will_return: bool = True  # a controller recreates it elsewhere


def decide(pod: dict, rules: PodRules, selected: bool = True) -> PodDecision:
    """The drain rules for one pod (kubectl drain's filters plus protection annotations). Pure."""
    meta = pod.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    spec = pod.get("spec") or {}
    owner = controller_ref(pod)
    # The exclusions first: a terminating pod the drain may not touch is neither waited for nor force-deleted.
    if meta.get("namespace") in rules.exclude_namespaces:
        return PodDecision(SKIP, f"namespace '{meta.get('namespace')}' is excluded")
    if not selected:
        return PodDecision(SKIP, "not matched by pod_selector")
    if MIRROR_ANNOTATION in annotations:
        return PodDecision(SKIP, "mirror pod of a static pod (the kubelet owns it)")
    if owner and owner.get("kind") == "DaemonSet":
        return PodDecision(SKIP, f"DaemonSet pod (DaemonSet {owner.get('name')} keeps it on every node)")
    if meta.get("deletionTimestamp"):
        return PodDecision(WAIT, "already terminating")
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        return PodDecision(DELETE, f"completed (phase {phase})", will_return=False)
    refusals: list[str] = []
    notes: list[str] = []

    def judge(allowed: bool, problem: str, if_allowed: str, how_to_allow: str) -> None:
        if allowed:
            notes.append(problem + if_allowed)
        else:
            refusals.append(problem + how_to_allow)

    if annotations.get(v.PROTECTED_POD) == "true":
        judge(rules.force, f"annotated {v.PROTECTED_POD}=true", " (forced)", "; set force to evict it anyway")
    elif str(annotations.get(v.SAFE_TO_EVICT, "")).lower() == "false":
        judge(rules.force, f"annotated {v.SAFE_TO_EVICT}=false", " (forced)", "; set force to evict it anyway")
    if not owner:
        judge(rules.force, "not managed by a controller", "; deleted, it will not come back by itself",
              "; set force to delete it (it will not come back by itself)")
    if any("emptyDir" in (volume or {}) for volume in spec.get("volumes") or []):
        judge(rules.delete_emptydir_data, "uses emptyDir data", "; the data is lost",
              "; set delete_emptydir_data to evict it and lose the data")
    if refusals:
        return PodDecision(REFUSE, "; ".join(refusals), will_return=bool(owner))
    if not owner:
        return PodDecision(DELETE, "; ".join(notes), will_return=False)
    return PodDecision(EVICT, "; ".join(notes) or f"managed by {owner.get('kind')} {owner.get('name')}")


def budgets_of(pod: dict, pdbs: list[dict]) -> list[dict]:
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    return [p for p in pdbs if p["metadata"].get("namespace") == meta.get("namespace")
            and selector_matches((p.get("spec") or {}).get("selector"), labels)]


def pdb_named_in(err: KubernetesError) -> str | None:
    """The budget an eviction 429 names (its causes say 'The disruption budget X needs ...')."""
    texts = [c.get("message") or "" for c in (err.details or {}).get("causes") or []] + [str(err)]
    return next((m.group(1) for m in map(_PDB_IN_MESSAGE.search, texts) if m), None)
