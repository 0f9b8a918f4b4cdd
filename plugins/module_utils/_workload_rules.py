# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

The pure rules of workload recovery, table-tested: the kinds of owners and how each is
recovered (services waited for, distributed training restarted whole, bare pods lost or
re-created), retry budgets, scheduler reasons, the manifests of restart requests, what a
PodDisruptionBudget forbids, and the per-node view of a recovery. The engine that acts
on them is _workloads.py.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Optional

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import object_path
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._drain_rules import budgets_of
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._errors import NodeRecoveryError

# Kinds, keyed by (API group, kind) so that any served version of a group matches.
DEPLOYMENT = ("apps", "Deployment")
REPLICASET = ("apps", "ReplicaSet")
STATEFULSET = ("apps", "StatefulSet")
DAEMONSET = ("apps", "DaemonSet")
REPLICATION_CONTROLLER = ("", "ReplicationController")
BATCH_JOB = ("batch", "Job")
CRONJOB = ("batch", "CronJob")
VOLCANO_JOB = ("batch.volcano.sh", "Job")
PYTORCHJOB = ("kubeflow.org", "PyTorchJob")
TFJOB = ("kubeflow.org", "TFJob")
MPIJOB = ("kubeflow.org", "MPIJob")
JOBSET = ("jobset.x-k8s.io", "JobSet")
NODE = ("", "Node")
POD = ("", "Pod")

SERVICE_KINDS = (DEPLOYMENT, STATEFULSET, REPLICASET, REPLICATION_CONTROLLER)
KUBEFLOW_KINDS = (PYTORCHJOB, TFJOB, MPIJOB)
TRAINING_CRDS = (VOLCANO_JOB, *KUBEFLOW_KINDS, JOBSET)
# The label the operator puts on every pod of a job, naming the job.
JOB_NAME_LABELS = {VOLCANO_JOB: "volcano.sh/job-name", JOBSET: "jobset.sigs.k8s.io/jobset-name",
                   **{k: "training.kubeflow.org/job-name" for k in KUBEFLOW_KINDS}}
# apiVersion assumed when a drain result names an owner by kind only (a Volcano Job must say its apiVersion).
DEFAULT_API_VERSIONS = {"Deployment": "apps/v1", "ReplicaSet": "apps/v1", "StatefulSet": "apps/v1",
                        "DaemonSet": "apps/v1", "ReplicationController": "v1", "Job": "batch/v1",
                        "CronJob": "batch/v1", "PyTorchJob": "kubeflow.org/v1", "TFJob": "kubeflow.org/v1",
                        "MPIJob": "kubeflow.org/v1", "JobSet": "jobset.x-k8s.io/v1alpha2"}
COMMAND_API_VERSION = "bus.volcano.sh/v1alpha1"

# Strategies
WAIT_READY = "wait_ready"  # the controller replaces the pods; wait until the desired replicas are Ready elsewhere
RESTART_JOB = "restart_job"  # batch Job with several workers: stop every active pod, the Job controller recreates them
RESTART_COMMAND = "restart_command"  # Volcano Job: a bus.volcano.sh Command with action RestartJob
RESTART_PODS = "restart_pods"  # Kubeflow and JobSet: stop every pod of the job, the operator recreates them
RECREATE = "recreate"  # bare pod, recreate_unmanaged: a copy without the node binding
LOST = "lost"  # bare pod: nothing brings it back
NONE = "none"  # DaemonSet, static pod, unknown or deleted owner
RESTARTS = (RESTART_JOB, RESTART_COMMAND, RESTART_PODS)
UNRECOVERED = ("timeout", "failed", "blocked")  # statuses of work that does not run again

AT_RISK_REMAINING = 1  # a job with this many retries left (or fewer) after our restart is called out


class WorkloadError(NodeRecoveryError, ValueError):
    """Bad input (a malformed evicted pod record); str() is one sentence."""


# ---------------------------------------------------------------------------------------------------------------------
# Pure helpers


def api_group(api_version: str | None) -> str:
    return api_version.split("/", 1)[0] if api_version and "/" in api_version else ""


def kind_key(api_version: str | None, kind: str | None) -> tuple[str, str]:
    return api_group(api_version), kind or ""


def collection_path(api_version: str, kind: str) -> str:
    """Cluster-wide collection path of a kind (every kind here has the plural kind.lower() + 's')."""
    plural = kind.lower() + "s"
    return f"/api/{api_version}/{plural}" if "/" not in api_version else f"/apis/{api_version}/{plural}"


def suspended_by(job: dict | None) -> str | None:
    """The run that suspended this Job to restart it whole, while it is still left suspended (else None)."""
    job = job or {}
    if not (job.get("spec") or {}).get("suspend"):
        return None
    return ((job.get("metadata") or {}).get("labels") or {}).get(v.SUSPENDED_BY_RUN)


def is_distributed(job: dict) -> bool:
    """A batch Job with more than one worker, or Indexed (ranks), must restart as a whole."""
    spec = job.get("spec") or {}
    return spec.get("completionMode") == "Indexed" or int(spec.get("parallelism") or 1) > 1


def expected_job_pods(job: dict) -> int:
    """How many pods a running Job keeps: parallelism, capped by the completions still to go."""
    spec = job.get("spec") or {}
    status = job.get("status") or {}
    parallelism = int(spec.get("parallelism") if spec.get("parallelism") is not None else 1)
    completions = spec.get("completions")
    if completions is None:
        return parallelism
    return max(min(parallelism, int(completions) - int(status.get("succeeded") or 0)), 0)


def job_finished(job: dict) -> str | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return cond["type"]
    return None


def ignores_disruptions(job: dict) -> bool:
    """Whether the Job's podFailurePolicy keeps disrupted pods (eviction, node loss) from consuming backoffLimit."""
    rules = ((job.get("spec") or {}).get("podFailurePolicy") or {}).get("rules") or []
    return any(rule.get("action") == "Ignore"
               and any(c.get("type") == "DisruptionTarget" for c in rule.get("onPodConditions") or [])
               for rule in rules)


def strategy_for(key: tuple[str, str], obj: dict | None, recreate_unmanaged: bool) -> tuple[str, str]:
    """(strategy, why) for one owner."""
    if key == POD:
        if recreate_unmanaged:
            return RECREATE, "a bare pod: nothing recreates it, so it is re-created from its spec without the node"
        return LOST, "a bare pod: no controller recreates it (set recreate_unmanaged to re-create it)"
    if key == NODE:
        return NONE, "a static pod: it belongs to its node"
    if key == DAEMONSET:
        return NONE, "a DaemonSet pod: it belongs to its node and is not moved"
    if obj is None:
        return NONE, "its owner no longer exists"
    if key in SERVICE_KINDS:
        return WAIT_READY, "its controller replaces the pods on other nodes"
    if key == BATCH_JOB:
        if is_distributed(obj):
            if (obj.get("spec") or {}).get("suspend") and suspended_by(obj) is None:
                return NONE, "a distributed Job that someone else suspended: it runs no pods to restart"
            how = ("suspended until every rank has stopped with its grace period, then resumed so the Job controller "
                   "recreates all ranks together") if job_restart_method(obj) == "suspend" else (
                "admitted by Kueue: every rank is evicted with its grace period and the Job controller recreates them")
            return RESTART_JOB, f"a distributed Job (Indexed or parallelism > 1): {how}"
        return WAIT_READY, "a single-worker Job: the Job controller replaces its pod"
    if key == VOLCANO_JOB:
        return RESTART_COMMAND, "a Volcano Job: a bus.volcano.sh Command RestartJob restarts every task together"
    if key in KUBEFLOW_KINDS or key == JOBSET:
        return RESTART_PODS, f"a {key[1]}: every pod is stopped with its grace period and the operator recreates them"
    return NONE, f"owned by a {key[1]} ({key[0] or 'core'}), which this module does not know how to recover"


KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def job_restart_method(job: dict) -> str:
    """How a distributed batch Job is restarted whole.

    'suspend': suspend it (the Job controller stops every pod with its grace period, without counting failures),
    then resume it once they are gone (it recreates every rank at once), as Kueue does to preempt a Job.
    'evict': for a Job that Kueue admits (suspend is Kueue's lever, not ours), evict every pod instead; the Job
    controller recreates them after its pod-failure backoff."""
    labels = (job.get("metadata") or {}).get("labels") or {}
    return "evict" if KUEUE_QUEUE_LABEL in labels else "suspend"


def job_restart_cost(job: dict, active_pods: int) -> int:
    """backoffLimit a whole restart consumes: none when suspended, evicted pods unless podFailurePolicy ignores them."""
    if job_restart_method(job) == "suspend" or ignores_disruptions(job):
        return 0
    return active_pods


def retry_budget(key: tuple[str, str], obj: dict, active_pods: int = 0) -> dict | None:
    """Retry budget of a training job: limit, used, remaining, what our restart costs and whether it is at risk."""
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    cost: int | None
    if key == BATCH_JOB:
        field_name, limit = "backoffLimit", int(spec.get("backoffLimit", 6))
        used = int(status.get("failed") or 0)
        cost = job_restart_cost(obj, active_pods)
    elif key == VOLCANO_JOB:
        field_name, limit = "maxRetry", int(spec.get("maxRetry", 3))
        used, cost = int(status.get("retryCount") or 0), 1
    elif key in KUBEFLOW_KINDS:
        field_name = "runPolicy.backoffLimit"
        raw_limit = (spec.get("runPolicy") or {}).get("backoffLimit")
        if raw_limit is None:
            return {"field": field_name, "limit": None, "used": None, "remaining": None, "restart_cost": None,
                    "at_risk": False, "message": "no runPolicy.backoffLimit: the operator retries without limit"}
        limit = int(raw_limit)
        used = sum(int((s or {}).get("failed") or 0) for s in (status.get("replicaStatuses") or {}).values())
        cost = None  # the operator decides whether a deleted pod counts
    elif key == JOBSET:
        field_name = "failurePolicy.maxRestarts"
        limit = int((spec.get("failurePolicy") or {}).get("maxRestarts", 0))
        used = int(status.get("restartsCountTowardsMax", status.get("restarts")) or 0)
        cost = 1
    else:
        return None
    remaining = max(limit - used, 0)
    after = remaining - (cost or 0)
    at_risk = after <= AT_RISK_REMAINING
    if after < 0 or (after == 0 and cost):
        message = f"{field_name} {limit}, {used} used: this restart can exhaust it and fail the job"
    elif at_risk:
        message = f"{field_name} {limit}, {used} used: {max(after, 0)} retries left after this restart"
    else:
        message = f"{field_name} {limit}, {used} used, {remaining} left"
    return {"field": field_name, "limit": limit, "used": used, "remaining": remaining, "restart_cost": cost,
            "at_risk": at_risk, "message": message}


def scheduler_reason(pod: dict, events: list[dict] | None = None) -> str:
    """Why a pod is not Ready: the scheduler's message if it is unscheduled, else its container state."""
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return cond.get("message") or cond.get("reason") or "not scheduled"
    for event in reversed(events or []):
        if event.get("reason") == "FailedScheduling":
            return event.get("message") or "FailedScheduling"
    if not (pod.get("spec") or {}).get("nodeName"):
        return "waiting for the scheduler"
    for cstatus in status.get("containerStatuses") or []:
        waiting = (cstatus.get("state") or {}).get("waiting")
        if waiting:
            return f"container {cstatus.get('name')}: {waiting.get('reason')} {waiting.get('message') or ''}".strip()
    return f"phase {status.get('phase') or 'unknown'}, not Ready"


def owner_reference(obj: dict, api_version: str, kind: str) -> dict:
    meta = obj.get("metadata") or {}
    return {"apiVersion": api_version, "kind": kind, "name": meta.get("name"), "uid": meta.get("uid"),
            "controller": True, "blockOwnerDeletion": True}


def command_name(job_name: str, run_id: str) -> str:
    """Deterministic per job and run, so a second run finds the Command it already created."""
    suffix = "".join(ch for ch in run_id.lower() if ch.isalnum())[-12:]
    return f"{job_name[:253 - 26]}-restartjob-{suffix}"


def volcano_command(job: dict, api_version: str, run_id: str, message: str) -> dict:
    """What `vcctl job restart` creates: a Command owned by the job, targeting it, action RestartJob."""
    meta = job.get("metadata") or {}
    ref = owner_reference(job, api_version, "Job")
    return {
        "apiVersion": COMMAND_API_VERSION, "kind": "Command",
        "metadata": {"name": command_name(meta["name"], run_id), "namespace": meta.get("namespace"),
                     "ownerReferences": [ref], "annotations": {v.RUN_ID: run_id}},
        "action": "RestartJob",
        "target": dict(ref),
        "reason": "NodeRecovery",
        "message": message,
    }


def unbound_copy(pod: dict, run_id: str) -> dict:
    """A bare pod's manifest for re-creation: same name and spec, without the node binding or server fields."""
    meta = pod.get("metadata") or {}
    spec = copy.deepcopy(pod.get("spec") or {})
    spec.pop("nodeName", None)
    # The ServiceAccount admission plugin adds its token volume again.
    token_volumes = {vol.get("name") for vol in spec.get("volumes") or [] if str(vol.get("name", "")).startswith(
        "kube-api-access-")}
    if token_volumes:
        spec["volumes"] = [vol for vol in spec["volumes"] if vol.get("name") not in token_volumes]
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            if container.get("volumeMounts"):
                container["volumeMounts"] = [m for m in container["volumeMounts"] if m.get("name") not in token_volumes]
    annotations = dict(meta.get("annotations") or {})
    annotations.update({v.RECREATED_FROM: meta.get("uid") or "", v.RUN_ID: run_id})
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"),
                         "labels": dict(meta.get("labels") or {}), "annotations": annotations},
            "spec": spec}


def evicted_pod(item: Any, index: int) -> dict:
    """A drain result's pod record as a pod-shaped dict (the pod itself may be gone).

    Accepts the pod itself (key `pod`), or `namespace` and `name` with the owner as raw `owner_references`,
    as `owner` ('Kind/name' as node_drain reports it, or {kind, name, api_version}) or as
    `owner_kind`/`owner_name`/`owner_api_version`; `node` optional."""
    where = f"evicted item {index + 1}"
    if not isinstance(item, dict):
        raise WorkloadError(f"{where} must be a mapping with namespace and name, not {type(item).__name__}")
    if isinstance(item.get("pod"), dict):
        pod = copy.deepcopy(item["pod"])
        pod.setdefault("spec", {})
        if item.get("node") and not pod["spec"].get("nodeName"):
            pod["spec"]["nodeName"] = item["node"]
        if not (pod.get("metadata") or {}).get("name") or not pod["metadata"].get("namespace"):
            raise WorkloadError(f"{where}: its pod has no metadata.name or metadata.namespace")
        pod["_manifest"] = True
        return pod
    name, namespace = item.get("name"), item.get("namespace")
    if not name or not namespace:
        raise WorkloadError(f"{where} needs both 'namespace' and 'name' (got keys: {', '.join(sorted(item)) or 'none'})")
    refs = item.get("owner_references") or item.get("ownerReferences")
    owner = item.get("owner")
    if isinstance(owner, str) and owner:
        kind, owner_name = owner.partition("/")[::2]
        if not owner_name:
            raise WorkloadError(f"{where}: owner '{owner}' is not of the form Kind/name")
        owner = {"kind": kind, "name": owner_name}
    if refs is None and isinstance(owner, dict):
        refs = [owner]
    elif refs is None and item.get("owner_kind"):
        refs = [{"kind": item["owner_kind"], "name": item.get("owner_name"),
                 "api_version": item.get("owner_api_version")}]
    if refs is not None and not isinstance(refs, list):
        raise WorkloadError(f"{where}: owner_references must be a list of owner references")
    normalised = []
    for ref in refs or []:
        if not isinstance(ref, dict) or not ref.get("kind") or not ref.get("name"):
            raise WorkloadError(f"{where}: an owner needs 'kind' and 'name'")
        api_version = ref.get("apiVersion") or ref.get("api_version")
        guessed = not api_version
        api_version = api_version or DEFAULT_API_VERSIONS.get(ref["kind"])
        if not api_version:
            raise WorkloadError(f"{where}: owner kind '{ref['kind']}' needs an api_version")
        normalised.append({"apiVersion": api_version, "kind": ref["kind"], "name": ref["name"],
                           "uid": ref.get("uid"), "controller": ref.get("controller", True), "_guessed": guessed})
    return {"metadata": {"name": name, "namespace": namespace, "uid": item.get("uid"), "ownerReferences": normalised},
            "spec": {"nodeName": item.get("node") or item.get("node_name")}, "status": {}, "_evicted": True}


def required_access(key: tuple[str, str], strategy: str, job: dict | None, namespace: str) -> list[tuple]:
    """(verb, resource, group, namespace) the strategy writes with, for a check before the first write."""
    group, kind = key
    marked = ("patch", kind.lower() + "s", group, namespace)  # the once-per-run annotation
    stopping = [("create", "pods/eviction", "", namespace), ("delete", "pods", "", namespace)]
    if strategy == RESTART_JOB:
        return [marked, ("delete", "pods", "", namespace)] + (
            stopping if job_restart_method(job or {}) == "evict" else [])
    if strategy == RESTART_COMMAND:
        return [marked, ("create", "commands", api_group(COMMAND_API_VERSION), namespace)]
    if strategy == RESTART_PODS:
        return [marked] + stopping
    if strategy == RECREATE:
        return [("delete", "pods", "", namespace), ("create", "pods", "", namespace)]
    return []


# ---------------------------------------------------------------------------------------------------------------------
# One owner and what happened to it


@dataclass
class Workload:
    api_version: str
    kind: str
    namespace: str
    name: str
    obj: Optional[dict] = None
    parent: Optional[dict] = None
    pods: list = field(default_factory=list)  # the affected pods (summaries)
    strategy: str = NONE
    why: str = ""
    status: str = "planned"
    message: str = ""
    budget: Optional[dict] = None
    stopped: list = field(default_factory=list)
    landed: list = field(default_factory=list)
    pending: list = field(default_factory=list)
    recovered_seconds: Optional[float] = None
    request: Optional[dict] = None  # the restart request sent (Volcano Command)
    action: Optional[str] = None  # what we did (or, in check mode, would do) to it
    manifests: list = field(default_factory=list)  # bare pods' specs, for re-creation
    desired: Optional[int] = None
    done: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return kind_key(self.api_version, self.kind)

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    @property
    def path(self) -> str:
        return object_path(collection_path(self.api_version, self.kind), self.name, self.namespace)

    def summary(self) -> dict:
        out = {"kind": self.kind, "api_version": self.api_version, "namespace": self.namespace, "name": self.name,
               "strategy": self.strategy, "why": self.why, "status": self.status, "message": self.message,
               "pods": self.pods, "nodes": sorted({p["node"] for p in self.pods if p.get("node")})}
        if self.parent:
            out["parent"] = self.parent
        for name in ("action", "budget", "request", "recovered_seconds", "desired"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        for name in ("stopped", "landed", "pending"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        return out


def budget_refusal(pods: list[dict], pdbs: list[dict]) -> str | None:
    """Why PodDisruptionBudgets forbid stopping these pods together, or None (pure): a budget covering more of them
    than the disruptions it allows now."""
    covered: dict[str, int] = {}
    found: dict[str, dict] = {}
    for pod in pods:
        for budget in budgets_of(pod, pdbs):
            key = budget["metadata"]["name"]
            covered[key] = covered.get(key, 0) + 1
            found[key] = budget
    refusals = []
    for key, count in sorted(covered.items()):
        allowed = int((found[key].get("status") or {}).get("disruptionsAllowed") or 0)
        if count > allowed:
            refusals.append(f"PodDisruptionBudget {key} allows {allowed} disruption(s), the restart stops {count} of "
                            "its pods")
    return "; ".join(refusals) or None


def restarted_whole(workload: dict) -> bool:
    """A training job this call restarted whole and whose restart went through (a failed or blocked one did not)."""
    return workload["strategy"] in RESTARTS and bool(workload.get("action")) and workload["status"] not in UNRECOVERED


def node_view(name: str, workloads: list[dict], check_mode: bool) -> dict:
    """What the recovery did for the work of one node (pure): its workloads, and whether they all run again."""
    mine = [w for w in workloads if name in w["nodes"]]
    refs = [f"{w['kind']} {w['namespace']}/{w['name']}" for w in mine]
    unrecovered = [ref for ref, w in zip(refs, mine) if w["status"] in UNRECOVERED + ("not_waited",)]
    return {"name": name, "workloads": refs, "recovered": not check_mode and not unrecovered,
            "unrecovered": unrecovered,
            "restarted": [ref for ref, w in zip(refs, mine) if restarted_whole(w) and not check_mode],
            "lost": [f"{w['namespace']}/{w['name']}" for w in mine if w["status"] == "lost"],
            "messages": [f"{ref}: {w['message']}" for ref, w in zip(refs, mine) if w.get("message")]}


def workloads_diff(result: dict) -> dict:
    before, after = {}, {}
    for workload in result["workloads"]:
        if workload.get("action"):
            ref = f"{workload['kind']} {workload['namespace']}/{workload['name']}"
            before[ref] = f"{len(workload['pods'])} pod(s) on {', '.join(workload['nodes']) or 'the nodes'}"
            after[ref] = workload["action"]
    return {"before": before, "after": after}
