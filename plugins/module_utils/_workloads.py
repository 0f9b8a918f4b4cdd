# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

Workload recovery after a node is remediated: find the owner of every pod that ran
there, then recover each owner the way its kind allows. Services are waited for
(their controller replaces the pods); distributed training is restarted whole (a job
whose rank died is dead as a whole); bare pods are reported lost or re-created.
The pure rules (owners, strategies, retry budgets, scheduler reasons, manifests) are
in _workload_rules.py; this is the engine that reads and acts.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import (
    EVENT_NAMESPACE,
    new_run_id,
    record_event,
    rfc3339,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._batch import stamp
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import parse_time
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import (
    Client,
    KubernetesError,
    object_path,
    require_access,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import node_is_ready, read_nodes
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._pods import (
    controller_ref,
    delete_pod,
    label_selector,
    pod_is_active,
    pod_is_ready,
    pod_summary,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._workload_rules import (
    BATCH_JOB,
    COMMAND_API_VERSION,
    CRONJOB,
    DEPLOYMENT,
    JOB_NAME_LABELS,
    JOBSET,
    KUBEFLOW_KINDS,
    LOST,
    NONE,
    POD,
    RECREATE,
    REPLICASET,
    REPLICATION_CONTROLLER,
    RESTART_COMMAND,
    RESTART_JOB,
    RESTARTS,
    SERVICE_KINDS,
    TRAINING_CRDS,
    UNRECOVERED,
    VOLCANO_JOB,
    WAIT_READY,
    Workload,
    api_group,
    budget_refusal,
    collection_path,
    evicted_pod,
    expected_job_pods,
    job_finished,
    job_restart_method,
    kind_key,
    node_view,
    required_access,
    restarted_whole,
    retry_budget,
    scheduler_reason,
    strategy_for,
    suspended_by,
    unbound_copy,
    volcano_command,
    workloads_diff,
)

if TYPE_CHECKING:
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import Call

ACT_PARALLEL = 16  # workloads restarted or looked at at once
BUDGET_RETRIES, BUDGET_RETRY_FIRST = 5, 0.5  # a refused eviction of a restart: tried again for about 15 s
WAIT_INTERVAL = 0.5  # seconds between looks at the workloads waited for
STOP_MARGIN = 30  # seconds beyond the longest grace period a restart waits for its pods to stop


# ---------------------------------------------------------------------------------------------------------------------
# API calls


def _get_or_none(client: Client, path: str, what: str, resource: str) -> dict | None:
    return client.get_or_none(path, what=what, verb="get", resource=resource)


def pods_on_nodes(client: Client, nodes: list[str]) -> list[dict]:
    """Every pod still bound to the nodes and not finished."""
    found = []
    for name in nodes:
        found += [p for p in client.list("/api/v1/pods", field_selector=f"spec.nodeName={name}",
                                         what=f"listing pods on node {name}", resource="pods")
                  if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    return found


class Resolver:
    """Follows owner references to the workload that owns a pod, reading each owner once."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.cache: dict[tuple, dict | None] = {}

    def read(self, api_version: str, kind: str, namespace: str, name: str) -> dict | None:
        cache_key = (kind_key(api_version, kind), namespace, name)
        if cache_key not in self.cache:
            path = object_path(collection_path(api_version, kind), name, namespace)
            self.cache[cache_key] = _get_or_none(self.client, path, f"reading {kind} {namespace}/{name}",
                                                 kind.lower() + "s" + (f".{api_group(api_version)}"
                                                                       if api_group(api_version) else ""))
        return self.cache[cache_key]

    def owner_of(self, pod: dict) -> tuple[str, str, str, dict | None]:
        """(apiVersion, kind, name, parent) of the workload that owns the pod; a bare pod is ('v1', 'Pod', name)."""
        meta = pod.get("metadata") or {}
        namespace = meta.get("namespace")
        ref = controller_ref(pod)
        if ref is None:
            return "v1", "Pod", meta.get("name"), None
        api_version, kind, name = ref.get("apiVersion") or "", ref.get("kind") or "", ref.get("name")
        key = kind_key(api_version, kind)
        if key not in (REPLICASET, BATCH_JOB):
            return api_version, kind, name, None
        obj = self.read(api_version, kind, namespace, name)
        if obj is None and key == BATCH_JOB and ref.get("_guessed"):
            # A drain names the owner 'Job/x': a batch Job, or else a Volcano Job.
            volcano_version = f"{VOLCANO_JOB[0]}/v1alpha1"
            try:
                if self.read(volcano_version, kind, namespace, name) is not None:
                    return volcano_version, kind, name, None
            except KubernetesError as err:
                if err.status != 404 and err.status != 403:
                    raise
        parent_ref = controller_ref(obj) if obj else None
        if parent_ref is None:
            return api_version, kind, name, None
        parent_key = kind_key(parent_ref.get("apiVersion"), parent_ref.get("kind"))
        if key == REPLICASET and parent_key == DEPLOYMENT:
            return parent_ref["apiVersion"], "Deployment", parent_ref["name"], None
        if key == BATCH_JOB and parent_key == CRONJOB:
            return api_version, kind, name, {"kind": "CronJob", "name": parent_ref["name"]}
        if key == BATCH_JOB and (parent_key == JOBSET or parent_key in KUBEFLOW_KINDS):
            return parent_ref["apiVersion"], parent_ref["kind"], parent_ref["name"], None
        return api_version, kind, name, {"kind": parent_ref.get("kind"), "name": parent_ref.get("name")}


def resolve(client: Client, pods: list[dict], recreate_unmanaged: bool) -> list[Workload]:
    """Group the affected pods by owning workload (one entry per workload however many of its nodes failed)."""
    resolver = Resolver(client)
    workloads: dict[tuple, Workload] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        api_version, kind, name, parent = resolver.owner_of(pod)
        key = (kind_key(api_version, kind), meta.get("namespace"), name)
        if key not in workloads:
            workloads[key] = Workload(api_version=api_version, kind=kind, namespace=meta.get("namespace"), name=name,
                                      parent=parent)
        workload = workloads[key]
        workload.pods.append(pod_summary(pod))
        if key[0] == POD:
            workload.manifests.append(pod)
    for workload in workloads.values():
        if workload.key in SERVICE_KINDS or workload.key == BATCH_JOB or workload.key in TRAINING_CRDS:
            workload.obj = resolver.read(workload.api_version, workload.kind, workload.namespace, workload.name)
        workload.strategy, workload.why = strategy_for(workload.key, workload.obj, recreate_unmanaged)
    return sorted(workloads.values(), key=lambda w: (w.namespace or "", w.kind, w.name))


def left_suspended_jobs(client: Client, known: set[tuple], runs: set[str] | None = None) -> list[Workload]:
    """Jobs an interrupted whole restart left suspended (our label on them), wherever they run: none of their pods
    may be left on a node, and they must not stay suspended. `runs`: only those the given runs suspended."""
    found = []
    for job in client.list("/apis/batch/v1/jobs", label_selector=v.SUSPENDED_BY_RUN,
                           what="listing Jobs left suspended by an interrupted restart", resource="jobs.batch"):
        meta, suspender = job["metadata"], suspended_by(job)
        if (BATCH_JOB, meta["namespace"], meta["name"]) in known or suspender is None:
            continue
        if runs is not None and suspender not in runs:
            continue
        found.append(Workload(api_version="batch/v1", kind="Job", namespace=meta["namespace"], name=meta["name"],
                              obj=job, strategy=RESTART_JOB,
                              why=f"left suspended by run {suspender}, an interrupted whole restart: resumed once its "
                                  "pods are gone"))
    return found


def workload_pods(client: Client, workload: Workload) -> list[dict]:
    """Every pod of the workload now (selected by its selector or the operator's job-name label)."""
    obj = workload.obj or {}
    namespace = workload.namespace
    if workload.key in JOB_NAME_LABELS:
        selector = f"{JOB_NAME_LABELS[workload.key]}={workload.name}"
    else:
        selector = label_selector((obj.get("spec") or {}).get("selector"))
        if selector is None and workload.key == REPLICATION_CONTROLLER:
            selector = ",".join(f"{k}={val}" for k, val in sorted(((obj.get("spec") or {}).get("selector")
                                                                  or {}).items())) or None
    if selector is None:
        return []
    pods = client.list(f"/api/v1/namespaces/{namespace}/pods", label_selector=selector,
                       what=f"listing pods of {workload.ref}", resource="pods")
    uid = (obj.get("metadata") or {}).get("uid")
    if uid and (workload.key in KUBEFLOW_KINDS or workload.key == VOLCANO_JOB):
        # Kinds of one operator share the job-name label: keep the pods this very job controls.
        pods = [p for p in pods if (controller_ref(p) or {}).get("uid") == uid]
    return pods


def stop_pods(client: Client, pods: list[dict], unreachable_nodes: set[str], ignore_budgets: bool = False,
              sleep: Callable[[float], None] = time.sleep) -> list[dict]:
    """Stop pods together, each with its own grace period (time for a final checkpoint).

    Through the Eviction API, so Kubernetes marks them DisruptionTarget and a Job's podFailurePolicy can keep the
    restart from consuming backoffLimit. A PodDisruptionBudget refusal is retried for a while and then reported
    (`how` says "refused"); only with ignore_budgets is the pod deleted instead. Pods on a node that cannot confirm
    termination (not Ready) are deleted with grace 0 so the controller can replace them; never one on a Ready node."""

    def stop(pod: dict) -> dict:
        meta = pod["metadata"]
        name, namespace, node = meta["name"], meta["namespace"], (pod.get("spec") or {}).get("nodeName")
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        outcome = {"namespace": namespace, "name": name, "uid": meta.get("uid"), "node": node,
                   "grace_period": (pod.get("spec") or {}).get("terminationGracePeriodSeconds")}
        body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace},
                "deleteOptions": {"preconditions": {"uid": meta.get("uid")}}}
        delay = BUDGET_RETRY_FIRST
        for attempt in range(BUDGET_RETRIES + 1):
            try:
                client.request("POST", path + "/eviction", body=body, what=f"evicting pod {namespace}/{name}",
                               verb="create", resource="pods/eviction", retry_statuses=frozenset({500, 502, 503, 504}))
                outcome["how"] = "evicted"
                break
            except KubernetesError as err:
                if err.status in (404, 409):
                    outcome["how"] = "already gone"
                    return outcome
                if err.status != 429:
                    raise
                if ignore_budgets:
                    delete_pod(client, namespace, name, meta.get("uid"), None, f"deleting pod {namespace}/{name}")
                    outcome["how"] = "deleted (a PodDisruptionBudget refused the eviction; budgets ignored as asked)"
                    break
                if attempt == BUDGET_RETRIES:
                    outcome["how"] = f"refused: {err}"
                    return outcome
                sleep(delay)
                delay = min(delay * 2, 5.0)
        if node in unreachable_nodes:
            delete_pod(client, namespace, name, meta.get("uid"), 0, f"force-deleting pod {namespace}/{name}")
            outcome["how"] += "; force-deleted, its node is not Ready"
        return outcome

    if not pods:
        return []
    with ThreadPoolExecutor(max_workers=min(len(pods), 16)) as pool:
        return list(pool.map(stop, pods))


@dataclass
class RecoveryRun:
    client: Client
    nodes: list  # names of the nodes being remediated
    run_id: str
    recreate_unmanaged: bool = False
    check_mode: bool = False
    ignore_budgets: bool = False
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    node_objects: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    pdbs: dict = field(default_factory=dict)  # namespace -> its PodDisruptionBudgets
    # Nodes remediated card by card: they stay in service, so work landing on them again is placed well.
    kept: set = field(default_factory=set)
    # When each node's fault episode began, where not its isolation (a card-level episode's degraded mark).
    episodes: dict = field(default_factory=dict)

    # -- act -------------------------------------------------------------------------------------------------------

    def already_restarted(self, workload: Workload) -> bool:
        """Restarted by this run, or by any run after the isolation of every node of it being remediated: a whole
        restart already moved its ranks off those nodes, so another would only cost a checkpoint reload."""
        annotations = ((workload.obj or {}).get("metadata") or {}).get("annotations") or {}
        if annotations.get(v.RESTARTED_RUN) == self.run_id:
            return True
        restarted = parse_time(annotations.get(v.RESTARTED_AT))
        isolated = [parse_time(self.episodes.get(name) or ((self.node_objects.get(name) or {}).get("metadata") or {})
                               .get("annotations", {}).get(v.ISOLATED_AT))
                    for name in {p.get("node") for p in workload.pods} & set(self.nodes)]
        return bool(restarted and isolated) and all(t is not None and t <= restarted for t in isolated)

    def mark_restarted(self, workload: Workload) -> None:
        self.client.patch(workload.path, {"metadata": {"annotations": {v.RESTARTED_RUN: self.run_id,
                                                                       v.RESTARTED_AT: rfc3339()}}},
                          what=f"annotating {workload.ref}", verb="patch", resource=workload.kind.lower() + "s")

    def unreachable(self) -> set[str]:
        """The nodes whose kubelet cannot confirm that a pod stopped."""
        return {name for name, node in self.node_objects.items() if not node_is_ready(node)}

    def act(self, workload: Workload) -> bool:
        """Carry out the workload's strategy (in check mode: say what it would do). True when it changes something."""
        if workload.strategy in RESTARTS:
            return self._restart(workload)
        if workload.strategy == RECREATE:
            return self._recreate(workload)
        if workload.strategy == LOST:
            workload.status, workload.done = "lost", True
            workload.message = "lost: no controller recreates a bare pod"
            return False
        if workload.strategy == NONE:
            workload.status, workload.done = "skipped", True
            workload.message = workload.why
            return False
        workload.status = "planned" if self.check_mode else "waiting"
        workload.message = "its controller replaces the pods"
        return False

    def _restart(self, workload: Workload) -> bool:
        pods = [p for p in workload_pods(self.client, workload) if pod_is_active(p)]
        workload.budget = retry_budget(workload.key, workload.obj or {}, len(pods))
        if workload.budget and workload.budget["at_risk"]:
            self.warnings.append(f"{workload.ref} is about to exhaust its retry budget: {workload.budget['message']}")
        # An operator's pace is not ours to wait for; a batch Job's controller runs here, so its ranks are waited for.
        workload.done = workload.strategy != RESTART_JOB
        if self.already_restarted(workload) and not self.left_suspended(workload):
            annotations = ((workload.obj or {}).get("metadata") or {}).get("annotations") or {}
            workload.status = "already_restarted"
            workload.message = (f"already restarted whole since its nodes were isolated (run "
                                f"{annotations.get(v.RESTARTED_RUN)}, {annotations.get(v.RESTARTED_AT)})")
            return False
        recreator = "the Job controller" if workload.strategy == RESTART_JOB else "the operator"
        refusal = None if self.ignore_budgets else budget_refusal(pods, self.budgets(workload.namespace))
        if refusal and not self.left_suspended(workload):
            workload.status, workload.done = "blocked", True
            workload.message = (f"not restarted: {refusal}; set restart_ignores_budgets to restart it anyway "
                                "(its pods are then deleted past the budget)")
            return False
        if workload.strategy == RESTART_COMMAND:
            return self._restart_volcano(workload, pods)
        if workload.strategy == RESTART_JOB and job_restart_method(workload.obj or {}) == "suspend":
            return self._restart_suspending(workload, pods)
        if self.check_mode:
            workload.status = "planned"
            workload.action = f"would stop all {len(pods)} pods with their grace period; {recreator} recreates them"
            workload.message = workload.action
            return bool(pods)
        workload.stopped = stop_pods(self.client, pods, self.unreachable(), self.ignore_budgets, self.sleep)
        self.mark_restarted(workload)
        refused = [p for p in workload.stopped if p["how"].startswith("refused")]
        if refused:
            workload.status, workload.done = "failed", True
            workload.action = workload.message = (
                f"restart incomplete: {len(refused)} of {len(pods)} pods could not be evicted ({refused[0]['how']}); "
                "set restart_ignores_budgets to delete them past the budget")
            return True
        workload.status = "restart_requested" if workload.done else "restarted"
        workload.action = (f"restarted whole: stopped all {len(workload.stopped)} pods together with their grace "
                           f"period; {recreator} recreates them")
        workload.message = workload.action
        return True

    @staticmethod
    def left_suspended(workload: Workload) -> bool:
        return suspended_by(workload.obj) is not None

    def _restart_suspending(self, workload: Workload, pods: list[dict]) -> bool:
        grace = max([int((p.get("spec") or {}).get("terminationGracePeriodSeconds", 30)) for p in pods] or [30])
        if self.check_mode:
            workload.status = "planned"
            workload.action = workload.message = (
                f"would suspend the Job, wait up to {grace + STOP_MARGIN}s for its {len(pods)} pods to stop with "
                f"their grace period, then resume it so the Job controller recreates every rank together")
            return True
        resuming = self.left_suspended(workload)
        still_left = None
        if resuming:  # a rank still terminating is not gone: resuming now could run two copies of it
            # Another run (the one that suspended it, still waiting) may resume it any moment: once it has, the ranks
            # listed here may be its new ones, never to stop, so the Job is read again before and while waiting.
            suspender = suspended_by(workload.obj)

            def still_left() -> bool:
                return suspended_by(_get_or_none(self.client, workload.path, f"reading {workload.ref}",
                                                 "jobs.batch")) == suspender

            if not still_left():
                return self._resumed_elsewhere(workload, suspender)
            pods = [p for p in workload_pods(self.client, workload)
                    if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        else:
            self.client.patch(workload.path, {"metadata": {"annotations": {
                v.RESTARTED_RUN: self.run_id, v.RESTARTED_AT: rfc3339()}, "labels": {v.SUSPENDED_BY_RUN: self.run_id}},
                "spec": {"suspend": True}}, what=f"suspending {workload.ref} to restart it whole", verb="patch",
                resource="jobs.batch")
        workload.stopped = [dict(pod_summary(p), how="stopped by the Job controller (suspended)") for p in pods]
        forced, remaining = self._wait_stopped(pods, grace + STOP_MARGIN, still_left)
        if still_left is not None and remaining and not still_left():
            return self._resumed_elsewhere(workload, suspender)
        for outcome in workload.stopped:
            if outcome["uid"] in forced:
                outcome["how"] += "; force-deleted: its node is not Ready and cannot confirm it stopped"
        if remaining:  # resuming now could run two copies of a rank: the next run resumes it once they are gone
            workload.status, workload.done = "failed", True
            workload.action = workload.message = (
                f"suspended, but {len(remaining)} pod(s) on Ready nodes had not stopped "
                f"{grace + STOP_MARGIN}s later; the Job stays suspended and the next run resumes it once they are gone")
            return True
        self.client.patch(workload.path, {"metadata": {"labels": {v.SUSPENDED_BY_RUN: None}},
                                          "spec": {"suspend": False}},
                          what=f"resuming {workload.ref}", verb="patch", resource="jobs.batch")
        workload.status = "restarted"
        workload.action = (f"restarted whole: suspended until all {len(pods)} pods had stopped with their grace period, "
                           f"then resumed; the Job controller recreates every rank together")
        if resuming:
            workload.action = "resumed: an interrupted whole restart of this run is finished"
        workload.message = workload.action
        return True

    def _resumed_elsewhere(self, workload: Workload, suspender: str) -> bool:
        workload.status = "already_restarted"
        workload.stopped = []
        workload.message = (f"resumed meanwhile by another run: run {suspender} suspended it to restart it whole, "
                            "and it is no longer left suspended")
        return False

    def _wait_stopped(self, pods: list[dict], timeout: float,
                      still_waited_for: Callable[[], bool] | None = None) -> tuple[set[str], set[str]]:
        """Wait until the pods are gone, so no two copies of a rank ever run: (uids force-deleted, uids still there).

        Pods on a node that is not Ready cannot confirm termination and are force-deleted at once; a pod on a Ready
        node is never force-deleted (its kubelet enforces the grace period): it is waited for until the timeout, or
        until `still_waited_for` says the wait has become another's."""
        forced: set[str] = set()
        unreachable = self.unreachable()
        deadline = self.clock() + timeout
        remaining = {p["metadata"]["uid"]: p for p in pods}
        while remaining and self.clock() < deadline:
            for uid, pod in list(remaining.items()):
                meta = pod["metadata"]
                path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
                current = _get_or_none(self.client, path, f"reading pod {meta['namespace']}/{meta['name']}", "pods")
                if current is None or current["metadata"].get("uid") != uid or \
                        (current.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    del remaining[uid]
                elif (pod.get("spec") or {}).get("nodeName") in unreachable and uid not in forced:
                    delete_pod(self.client, meta["namespace"], meta["name"], uid, 0,
                               f"force-deleting pod {meta['namespace']}/{meta['name']}")
                    forced.add(uid)
            if remaining and still_waited_for is not None and not still_waited_for():
                break
            if remaining:
                self.sleep(0.5)
        return forced, set(remaining)

    def budgets(self, namespace: str) -> list[dict]:
        """The PodDisruptionBudgets of a namespace, read once per run."""
        if namespace not in self.pdbs:
            self.pdbs[namespace] = self.client.list(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets",
                                                    what=f"listing PodDisruptionBudgets in namespace {namespace}",
                                                    resource="poddisruptionbudgets.policy")
        return self.pdbs[namespace]

    def _restart_volcano(self, workload: Workload, pods: list[dict]) -> bool:
        command = volcano_command(workload.obj or {}, workload.api_version, self.run_id,
                                  f"restart whole after remediation of node {', '.join(self.nodes) or '?'} "
                                  f"(run {self.run_id})")
        workload.request = {"name": command["metadata"]["name"],
                            **{k: command[k] for k in ("apiVersion", "kind", "action", "target")}}
        if self.check_mode:
            workload.status = "planned"
            workload.action = workload.message = "would create a bus.volcano.sh Command RestartJob"
            return True
        try:
            self.client.request("POST", f"/apis/{COMMAND_API_VERSION}/namespaces/{workload.namespace}/commands",
                                body=command, what=f"creating a RestartJob Command for {workload.ref}", verb="create",
                                resource="commands.bus.volcano.sh")
        except KubernetesError as err:
            if err.status != 409:
                raise
        self.mark_restarted(workload)
        workload.status = "restart_requested"
        workload.action = (f"restart requested: Command {command['metadata']['name']} (RestartJob); the Volcano "
                           f"controller stops its {len(pods)} pods and recreates them together")
        workload.message = workload.action
        return True

    def _recreate(self, workload: Workload) -> bool:
        namespace, name = workload.namespace, workload.name
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        current = _get_or_none(self.client, path, f"reading pod {namespace}/{name}", "pods")
        current_node = ((current or {}).get("spec") or {}).get("nodeName")
        if current and v.RECREATED_FROM in (current["metadata"].get("annotations") or {}) \
                and current_node not in self.nodes:
            workload.status, workload.message = "already_recreated", "already re-created from its spec"
            return False
        source = current or next((m for m in workload.manifests if m.get("_manifest")), None)
        if source is None:
            workload.status, workload.done = "lost", True
            workload.message = "lost: the pod is gone and its spec was not kept (pass the drain result's pod)"
            return False
        manifest = unbound_copy({k: val for k, val in source.items() if not k.startswith("_")}, self.run_id)
        if self.check_mode:
            workload.status = "planned"
            workload.action = workload.message = "would re-create the pod from its spec without the node binding"
            return True
        if current:
            force = current_node in self.unreachable()
            delete_pod(self.client, namespace, name, current["metadata"].get("uid"), 0 if force else None,
                       f"deleting pod {namespace}/{name} before re-creating it")
            if not self._wait_gone(path, current["metadata"].get("uid")):
                workload.status, workload.done = "failed", True
                workload.message = "the original pod did not go away in time, so it was not re-created"
                return True
        self.client.request("POST", f"/api/v1/namespaces/{namespace}/pods", body=manifest,
                            what=f"re-creating pod {namespace}/{name}", verb="create", resource="pods")
        workload.status = "recreated"
        workload.action = workload.message = "re-created from its spec without the node binding"
        return True

    def _wait_gone(self, path: str, uid: str | None, timeout: float = 120.0) -> bool:
        deadline = self.clock() + timeout
        while self.clock() < deadline:
            pod = _get_or_none(self.client, path, "reading pod", "pods")
            if pod is None or pod["metadata"].get("uid") != uid:
                return True
            self.sleep(0.5)
        return False

    # -- wait ------------------------------------------------------------------------------------------------------

    def placed_well(self, pod: dict, cordoned: set[str]) -> bool:
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or (node in self.nodes and node not in self.kept):
            return False
        return node not in cordoned

    def cordoned(self) -> set[str]:
        """The nodes cordoned now, in one list the API server narrows down, of their metadata alone: not one read per
        node a pod runs on (a Deployment of 50 replicas spread over 50 nodes took 50 reads at every look)."""
        return {n["metadata"]["name"] for n in self.client.list(
            "/api/v1/nodes", field_selector="spec.unschedulable=true", what="listing cordoned nodes", resource="nodes",
            metadata_only=True)}

    def check(self, workload: Workload, started: float, cordoned: set[str]) -> None:
        """One look at a waited-for workload: recovered once the desired pods are Ready on schedulable other nodes."""
        if workload.strategy == RECREATE:
            pod = _get_or_none(self.client, f"/api/v1/namespaces/{workload.namespace}/pods/{workload.name}",
                               "reading pod", "pods")
            pods, desired = ([pod] if pod else []), 1
        else:
            workload.obj = _get_or_none(self.client, workload.path, f"reading {workload.ref}",
                                        workload.kind.lower() + "s") or workload.obj
            if workload.key == BATCH_JOB:
                finished = job_finished(workload.obj or {})
                if finished:
                    workload.status, workload.done = ("recovered" if finished == "Complete" else "failed"), True
                    workload.message = f"the Job is {finished}"
                    workload.recovered_seconds = round(self.clock() - started, 1)
                    return
                desired = expected_job_pods(workload.obj or {})
            else:
                desired = int(((workload.obj or {}).get("spec") or {}).get("replicas", 1))
            pods = workload_pods(self.client, workload)
        workload.desired = desired
        stopped = {p.get("uid") for p in workload.stopped}
        current = [p for p in pods if p["metadata"].get("uid") not in stopped and pod_is_active(p)]
        good = [p for p in current if pod_is_ready(p) and self.placed_well(p, cordoned)]
        workload.landed = [{"pod": p["metadata"]["name"], "node": p["spec"]["nodeName"], "uid": p["metadata"]["uid"]}
                           for p in good]
        workload.pending = [p for p in current if p not in good]
        if len(good) >= desired:
            workload.status, workload.done = "recovered", True
            workload.recovered_seconds = round(self.clock() - started, 1)
            workload.message = f"{len(good)}/{desired} Ready on schedulable nodes after {workload.recovered_seconds}s"
            workload.pending = []
        else:
            workload.message = f"{len(good)}/{desired} Ready on schedulable nodes"

    def explain(self, workload: Workload) -> None:
        """On timeout: every pod that is not where it should be, with the scheduler's reason."""
        explained = []
        for pod in workload.pending:
            meta = pod["metadata"]
            node = (pod.get("spec") or {}).get("nodeName")
            if node in self.nodes:
                reason = f"still on node {node}, which is being remediated"
            elif node and pod_is_ready(pod):
                reason = f"on node {node}, which is cordoned"
            else:
                events = []
                if not any(c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("message")
                           for c in (pod.get("status") or {}).get("conditions") or []):
                    events = self.client.list(f"/api/v1/namespaces/{meta['namespace']}/events",
                                              field_selector=f"involvedObject.kind=Pod,involvedObject.name={meta['name']}",
                                              what=f"listing events of pod {meta['name']}", resource="events")
                reason = scheduler_reason(pod, events)
            explained.append({"pod": meta["name"], "node": node, "phase": (pod.get("status") or {}).get("phase"),
                              "reason": reason})
        missing = (workload.desired or 0) - len(workload.landed) - len(explained)
        if missing > 0:
            explained.append({"pod": None, "node": None, "phase": None,
                              "reason": f"{missing} pod(s) not created yet by the controller"})
        workload.pending = explained
        workload.status = "timeout"
        workload.message = f"{workload.message} when the wait ended; " + (
            explained[0]["reason"] if explained else "not Ready in time")

    def wait(self, workloads: list[Workload], timeout: float, started: float, interval: float = WAIT_INTERVAL) -> None:
        deadline = started + timeout
        with ThreadPoolExecutor(max_workers=max(1, min(ACT_PARALLEL, len(workloads)))) as pool:
            while True:
                waiting = [w for w in workloads if not w.done]
                cordoned = self.cordoned()  # once a look, shared by the threads
                list(pool.map(self.check, waiting, [started] * len(waiting), [cordoned] * len(waiting)))
                if all(w.done for w in workloads) or self.clock() >= deadline:
                    break
                self.sleep(interval)
        for workload in workloads:
            if not workload.done:
                self.explain(workload)

    # -- audit -----------------------------------------------------------------------------------------------------

    def record(self, workloads: list[Workload]) -> None:
        """One Event per remediated node saying what was done to the work that ran there."""
        for name, node in self.node_objects.items():
            ran_here = [w for w in workloads if name in {p.get("node") for p in w.pods}]
            lines = [f"{w.ref}: {w.action}" for w in ran_here if w.action]
            lost = [f"bare pod {w.namespace}/{w.name} lost" for w in ran_here if w.status == "lost"]
            if lines:
                record_event(self.client, node, v.EVENT_WORKLOAD_RESTARTED,
                             f"Workload recovery (run {self.run_id}): " + "; ".join(lines + lost),
                             "Warning" if lost else "Normal")


def recover(client: Client, nodes: list[str], evicted: list, run_id: str | None, recreate_unmanaged: bool,
            wait: bool, timeout: float, check_mode: bool, node_objects: dict[str, dict] | None = None,
            clock: Callable[[], float] = time.monotonic, ignore_budgets: bool = False) -> dict:
    """Find, recover and (unless check mode) wait for every workload that ran on the nodes. Returns the report."""
    started = clock()
    records = [evicted_pod(item, i) for i, item in enumerate(evicted or [])]
    node_objects = dict(node_objects or {})
    if not run_id:
        # The run that isolated the node names this remediation: a second call in the same run restarts nothing twice.
        run_id = next((((n.get("metadata") or {}).get("annotations") or {}).get(v.RUN_ID)
                       for n in node_objects.values()
                       if ((n.get("metadata") or {}).get("annotations") or {}).get(v.RUN_ID)), None)
    run = RecoveryRun(client, list(nodes), run_id or new_run_id(), recreate_unmanaged, check_mode,
                      ignore_budgets=ignore_budgets, clock=clock, node_objects=node_objects)
    if len(nodes) == 1:
        for record in records:  # node_drain drains one node and does not repeat it per pod
            record["spec"]["nodeName"] = record["spec"].get("nodeName") or nodes[0]
    run.nodes += sorted({r["spec"].get("nodeName") for r in records if r["spec"].get("nodeName")} - set(run.nodes))
    live = pods_on_nodes(client, list(nodes))
    seen = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in live}
    pods = live + [r for r in records if (r["metadata"]["namespace"], r["metadata"]["name"]) not in seen]
    workloads = resolve(client, pods, recreate_unmanaged)
    workloads += left_suspended_jobs(client, {(w.key, w.namespace, w.name) for w in workloads})
    if not check_mode:
        checks = [check for w in workloads for check in required_access(w.key, w.strategy, w.obj, w.namespace)]
        if checks:
            require_access(client, checks + [("create", "events", "", EVENT_NAMESPACE)])
    # Different jobs restart at once: a job stalled on a dead rank waits for nothing but its own restart.
    with ThreadPoolExecutor(max_workers=max(1, min(ACT_PARALLEL, len(workloads)))) as pool:
        changed = any(list(pool.map(run.act, workloads)))
    if changed and not check_mode:
        run.record(workloads)  # before waiting: the trail is there even if the wait times out
    waited = [w for w in workloads if not w.done and w.strategy in (WAIT_READY, RESTART_JOB, RECREATE)]
    if not check_mode and wait and waited:
        run.wait(waited, timeout, started)
    elif not check_mode:
        for workload in waited:
            if workload.status == "waiting":
                workload.status = "not_waited"
    unrecovered = [w for w in workloads if w.status in UNRECOVERED]
    summaries = [w.summary() for w in workloads]
    return {
        "by_node": [node_view(name, summaries, check_mode) for name in run.nodes],
        "changed": changed,
        "run_id": run.run_id,
        "nodes": run.nodes,
        "workloads": summaries,
        "restarted": [f"{w['kind']} {w['namespace']}/{w['name']}" for w in summaries
                      if restarted_whole(w) and not check_mode],
        "recovered": not check_mode and not unrecovered and all(w.status != "not_waited" for w in workloads),
        "lost": [f"{w.namespace}/{w.name}" for w in workloads if w.status == "lost"],
        "unrecovered": [w.ref for w in unrecovered],
        "warnings": run.warnings,
        "elapsed_seconds": round(clock() - started, 1),
    }


def recover_workloads(call: Call) -> dict:
    """workload_recover: the work of a batch of nodes, running again (training jobs restarted whole, once)."""
    params = call.params
    started = stamp()
    nodes = read_nodes(call.client, params["nodes"]) if params["nodes"] else []
    result = recover(call.client, params["nodes"] or [], params["evicted"] or [], params["run_id"],
                     params["recreate_unmanaged"], params["wait"], params["wait_timeout"], call.check_mode,
                     node_objects={n["metadata"]["name"]: n for n in nodes},
                     ignore_budgets=params["restart_ignores_budgets"])
    result.update(started=started, finished=stamp(), diff=workloads_diff(result))
    for warning in result["warnings"]:
        call.warn(warning)
    if result["unrecovered"]:
        first = next(w for w in result["workloads"] if w["status"] in UNRECOVERED)
        result["failed"] = True
        result["msg"] = (f"{len(result['unrecovered'])} workload(s) not running again after {params['wait_timeout']}s, "
                         f"e.g. {first['kind']} {first['namespace']}/{first['name']}: {first['message']}")
    return result
