# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

The drain engine: evicts several pods at once by the rules of _drain_rules.py, retries
PodDisruptionBudget refusals with backoff until the timeout, waits until the pods are
gone and reports each one; drains a batch of nodes at once.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import new_run_id, record_event, state_patch
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._batch import batch_result, for_each_node, unique
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import parse_time, recovery_state
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import (
    Client,
    KubernetesError,
    object_path,
    require_access,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._drain_rules import (
    DELETE,
    EVICT,
    REFUSE,
    SKIP,
    WAIT,
    PodDecision,
    PodRules,
    budgets_of,
    decide,
    pdb_named_in,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._isolate import check_not_excluded, cordon_patch
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import (
    combine,
    merge_patch,
    node_is_ready,
    patch_node,
    read_node,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._pods import (
    PODS,
    controller_ref,
    delete_pod,
    pod_key,
)

if TYPE_CHECKING:
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import Call

PDBS = "/apis/policy/v1/poddisruptionbudgets"
DEFAULT_GRACE = 30  # what the API server gives a pod without terminationGracePeriodSeconds

# What happened to it.
EVICTED, DELETED, SKIPPED, REFUSED, BLOCKED, FAILED = "evicted", "deleted", "skipped", "refused", "blocked", "failed"
OUTCOMES = (EVICTED, DELETED, SKIPPED, REFUSED, BLOCKED, FAILED)
# States a drain may move forward from; anything else is further along and stays.
DRAINABLE_STATES = (v.STATE_NONE, v.STATE_ISOLATED, v.STATE_DRAINING)

BACKOFF_FIRST, BACKOFF_MAX = 0.5, 5.0  # PDB refusals: kubectl waits 5 s flat; start sooner
NODE_RECHECK_SECONDS = 5.0
STUCK_CHECK_SECONDS = 1.0
WATCH_WINDOW_SECONDS = 10  # the watcher re-watches this often, so it ends soon after the drain
_RETRY_EVICTION = frozenset({502, 503, 504})  # 429 is ours to retry; 500 is not transient for evictions


@dataclass
class DrainOptions:
    timeout: float = 300
    concurrency: int = 32
    grace_period: int | None = None  # None: each pod's own terminationGracePeriodSeconds
    force: bool = False
    delete_emptydir_data: bool = True
    pod_selector: str | None = None
    exclude_namespaces: tuple = ()
    delete_after_timeout: bool = False
    force_delete_stuck_after: float = 60  # 0: never force-delete pods stuck on a NotReady node
    override_exclusion: bool = False
    run_id: str = ""
    poll_interval: float = 0.25

    @property
    def rules(self) -> PodRules:
        return PodRules(self.force, self.delete_emptydir_data, frozenset(self.exclude_namespaces))


@dataclass
class PodTask:
    pod: dict
    decision: PodDecision
    budgets: list = field(default_factory=list)
    outcome: str | None = None
    reason: str = ""
    pdb: str | None = None
    attempts: int = 0
    next_try: float = 0.0
    backoff: float = BACKOFF_FIRST
    removing: bool = False  # eviction accepted or delete sent: waiting for it to be gone
    delete_now: bool = False  # after the timeout, with delete_after_timeout
    force_deleted: bool = False
    gone_at: float | None = None

    @property
    def uid(self) -> str:
        return self.pod["metadata"]["uid"]

    @property
    def key(self) -> str:
        return pod_key(self.pod)

    def grace(self, override: int | None) -> int:
        if override is not None:
            return override
        own = (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds")
        return DEFAULT_GRACE if own is None else int(own)

    def summary(self, options: DrainOptions, started: float) -> dict:
        owner = controller_ref(self.pod)
        return {
            "node": (self.pod.get("spec") or {}).get("nodeName"),
            "namespace": self.pod["metadata"].get("namespace"),
            "name": self.pod["metadata"]["name"],
            "owner": f"{owner.get('kind')}/{owner.get('name')}" if owner else None,
            "action": self.decision.action,
            "outcome": self.outcome,
            "reason": self.reason or self.decision.reason,
            "pdb": self.pdb,
            "attempts": self.attempts,
            "grace_period": self.grace(options.grace_period) if self.decision.action in (EVICT, DELETE) else None,
            "will_return": self.decision.will_return,
            "seconds": round(self.gone_at - started, 3) if self.gone_at is not None else None,
        }


class _PodWatch(threading.Thread):
    """Watches the node's pods from the planning list on: which are gone (and when), and their
    latest state. One stream instead of listing every pod again and again."""

    def __init__(self, client: Client, node: str, resource_version: str | None, wakeup: threading.Event) -> None:
        super().__init__(name=f"watch-pods-{node}", daemon=True)
        self.client = client
        self.node = node
        self.resource_version = resource_version
        self.wakeup = wakeup
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.gone: dict[str, float] = {}  # uid -> monotonic time it was deleted
        self.latest: dict[str, dict] = {}  # uid -> pod as last seen
        self.failed: Exception | None = None

    def run(self) -> None:
        version = self.resource_version
        try:
            while not self.stopped.is_set():
                for event in self.client.watch(PODS, version, timeout_seconds=WATCH_WINDOW_SECONDS,
                                               field_selector=f"spec.nodeName={self.node}",
                                               what=f"watching pods on node {self.node}", resource="pods"):
                    kind, pod = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":  # 410 Gone and the like: the caller lists instead
                        raise KubernetesError(pod.get("message") or "watch error", status=pod.get("code"))
                    version = (pod.get("metadata") or {}).get("resourceVersion") or version
                    if kind == "BOOKMARK":
                        continue
                    with self.lock:
                        if kind == "DELETED":
                            self.gone[pod["metadata"]["uid"]] = time.monotonic()
                        else:
                            self.latest[pod["metadata"]["uid"]] = pod
                    self.wakeup.set()
                    if self.stopped.is_set():
                        return
        except Exception as err:  # any failure: fall back to listing, never fail the drain for it
            self.failed = err
            self.wakeup.set()

    def snapshot(self) -> tuple[dict[str, float], dict[str, dict]]:
        with self.lock:
            return dict(self.gone), dict(self.latest)


class _Drain:
    def __init__(self, client: Client, name: str, options: DrainOptions) -> None:
        self.client = client
        self.name = name
        self.options = options
        self.started = time.monotonic()
        self.node: dict = {}
        self.tasks: list[PodTask] = []
        self.node_checked_at = 0.0
        self.resource_version: str | None = None
        self.wakeup = threading.Event()

    # --- reading and planning

    def plan(self) -> None:
        self.node = read_node(self.client, self.name)
        check_not_excluded(self.node, self.options.override_exclusion)
        on_node = f"spec.nodeName={self.name}"
        pods = self.client.list(PODS, field_selector=on_node, what=f"listing pods on node {self.name}",
                                resource="pods")
        self.resource_version = self.client.last_resource_version
        selected = None
        if self.options.pod_selector:
            selected = {p["metadata"]["uid"] for p in self.client.list(
                PODS, field_selector=on_node, label_selector=self.options.pod_selector,
                what=f"listing pods on node {self.name} matching pod_selector '{self.options.pod_selector}'",
                resource="pods")}
        rules = self.options.rules
        self.tasks = [PodTask(p, decide(p, rules, selected is None or p["metadata"]["uid"] in selected))
                      for p in sorted(pods, key=pod_key)]
        for task in self.tasks:
            if task.decision.action == SKIP:
                task.outcome = SKIPPED
        evicting = [t for t in self.tasks if t.decision.action == EVICT]
        namespaces = sorted({t.pod["metadata"]["namespace"] for t in evicting})
        pdbs = [p for ns in namespaces for p in self.client.list(
            f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets", what=f"listing PodDisruptionBudgets in namespace {ns}",
            resource="poddisruptionbudgets.policy")]
        for task in evicting:
            task.budgets = budgets_of(task.pod, pdbs)

    def refusals(self) -> list[PodTask]:
        return [t for t in self.tasks if t.decision.action == REFUSE]

    def work(self) -> list[PodTask]:
        return [t for t in self.tasks if t.decision.action in (EVICT, DELETE, WAIT)]

    def predict(self) -> None:
        """Check mode: the outcome each pod would have, judged from the budgets' status now."""
        wanted: dict[str, int] = {}
        for task in self.tasks:
            for budget in task.budgets:
                wanted[budget["metadata"]["name"]] = wanted.get(budget["metadata"]["name"], 0) + 1
        for task in self.tasks:
            action = task.decision.action
            task.outcome = {EVICT: EVICTED, DELETE: DELETED, SKIP: SKIPPED, REFUSE: REFUSED, WAIT: SKIPPED}[action]
            for budget in task.budgets:
                allowed = int((budget.get("status") or {}).get("disruptionsAllowed") or 0)
                if action == EVICT and allowed < wanted[budget["metadata"]["name"]]:
                    task.outcome, task.pdb = BLOCKED, budget["metadata"]["name"]
                    task.reason = (f"PodDisruptionBudget {budget['metadata']['name']} allows {allowed} disruption(s) "
                                   "now; the drain would retry until the timeout")

    # --- acting

    def _act(self, task: PodTask) -> tuple[str, str | None, str]:
        """One eviction or deletion request: ('accepted'|'gone'|'blocked'|'failed', pdb, message)."""
        meta = task.pod["metadata"]
        path = object_path("/api/v1/pods", meta["name"], meta["namespace"])
        options: dict[str, Any] = {"preconditions": {"uid": meta["uid"]}}  # never touch a same-named successor
        if self.options.grace_period is not None:
            options["gracePeriodSeconds"] = self.options.grace_period
        try:
            if task.decision.action == EVICT and not task.delete_now:
                self.client.request(
                    "POST", path + "/eviction", retry_statuses=_RETRY_EVICTION,
                    body={"apiVersion": "policy/v1", "kind": "Eviction",
                          "metadata": {"name": meta["name"], "namespace": meta["namespace"]}, "deleteOptions": options},
                    what=f"evicting pod {task.key}", verb="create", resource="pods/eviction")
            else:
                self.client.request("DELETE", path, body={"apiVersion": "v1", "kind": "DeleteOptions", **options},
                                    what=f"deleting pod {task.key}", verb="delete", resource="pods")
        except KubernetesError as err:
            if err.status in (404, 409):  # gone already, or replaced by a new pod of the same name
                return "gone", None, ""
            if err.status == 429:
                budget = pdb_named_in(err) or next((b["metadata"]["name"] for b in task.budgets), None)
                return "blocked", budget, str(err)
            return "failed", None, str(err)
        return "accepted", None, ""

    def _settle(self, task: PodTask, answer: tuple[str, str | None, str], now: float) -> bool:
        """Record one answer; True when the task goes back to the queue."""
        verdict, budget, message = answer
        task.attempts += 1
        if verdict == "blocked":
            task.pdb, task.reason = budget, message
            task.next_try = now + task.backoff
            task.backoff = min(task.backoff * 2, BACKOFF_MAX)
            return True
        if verdict == "failed":
            task.outcome, task.reason = FAILED, message
        elif verdict == "gone":
            task.gone_at = now
            self._finish(task)
        else:
            task.removing = True
        return False

    def _finish(self, task: PodTask) -> None:
        if task.force_deleted:
            task.outcome = DELETED
            how = "was already terminating" if task.decision.action == WAIT else "evicted"
            task.reason = (f"{how}, then stuck Terminating on NotReady node {self.name}: deleted with grace "
                           "period 0 so that its controller can replace it")
        elif task.delete_now:
            task.outcome = DELETED
            task.reason = (f"still blocked by PodDisruptionBudget {task.pdb} at the timeout: deleted, bypassing "
                           "the budget (delete_after_timeout)")
        elif task.decision.action == WAIT:
            task.outcome, task.reason = SKIPPED, "was already terminating; now gone"
        else:
            task.outcome = EVICTED if task.decision.action == EVICT else DELETED
            task.reason = task.decision.reason
            task.pdb = None

    def _sweep(self, now: float, watch: _PodWatch, listing: bool) -> None:
        """Finish the tasks whose pods are gone; force-delete those stuck on a NotReady node.
        From the watch, or (when it failed) from one list of the node's pods."""
        gone, latest = watch.snapshot()
        present = None
        if listing:
            present = {p["metadata"]["uid"]: p for p in self.client.list(
                PODS, field_selector=f"spec.nodeName={self.name}", what=f"listing pods on node {self.name}",
                resource="pods")}
        stuck = []
        for task in self.tasks:
            if task.outcome is not None or not (task.removing or task.decision.action == WAIT):
                continue
            if task.uid in gone or (present is not None and task.uid not in present):
                task.gone_at = gone.get(task.uid, now)
                self._finish(task)
            elif self._is_stuck((present or latest).get(task.uid) or task.pod):
                stuck.append(task)
        if stuck and self._node_not_ready(now):
            for task in stuck:
                if not task.force_deleted:
                    self._force_delete(task)  # gone only once the watch (or a list) no longer sees it

    def _is_stuck(self, pod: dict) -> bool:
        after = self.options.force_delete_stuck_after
        since = parse_time((pod.get("metadata") or {}).get("deletionTimestamp"))
        return bool(after) and since is not None and (dt.datetime.now(dt.timezone.utc) - since).total_seconds() >= after

    def _node_not_ready(self, now: float) -> bool:
        if now - self.node_checked_at >= NODE_RECHECK_SECONDS:
            self.node = read_node(self.client, self.name)
            self.node_checked_at = now
        return not node_is_ready(self.node)

    def _force_delete(self, task: PodTask) -> bool:
        """Grace 0: the kubelet is gone and will never confirm. True when the delete was accepted (or the pod is
        gone already); the pod counts as gone once the watch or a list no longer sees it."""
        meta = task.pod["metadata"]
        try:
            delete_pod(self.client, meta["namespace"], meta["name"], meta["uid"], 0, f"force-deleting pod {task.key}")
        except KubernetesError as err:
            task.outcome, task.reason = FAILED, str(err)
            return False
        task.force_deleted = True
        return True

    def _waiting(self) -> bool:
        return any(t.outcome is None and (t.removing or t.decision.action == WAIT) for t in self.tasks)

    def execute(self, alongside: Callable[[], Any] | None = None) -> None:
        """Evict and delete, wait until gone. `alongside` runs in the pool with the first requests."""
        options = self.options
        slots = max(1, options.concurrency)
        deadline = self.started + options.timeout
        extended = False  # delete_after_timeout gives the deleted pods one more grace period
        queue = [t for t in self.tasks if t.decision.action in (EVICT, DELETE)]
        inflight: dict = {}
        side = None
        next_list = next_stuck_check = 0.0
        watch = _PodWatch(self.client, self.name, self.resource_version, self.wakeup)
        watch.start()
        try:
            with ThreadPoolExecutor(max_workers=slots) as pool:
                side = pool.submit(alongside) if alongside else None
                while True:
                    self.wakeup.clear()  # before looking, so nothing that happens next is missed
                    now = time.monotonic()
                    for future in [f for f in inflight if f.done()]:
                        task = inflight.pop(future)
                        if self._settle(task, future.result(), now):
                            queue.append(task)
                    if now < deadline:
                        for task in [t for t in queue if t.next_try <= now][:slots - len(inflight)]:
                            queue.remove(task)
                            future = pool.submit(self._act, task)
                            future.add_done_callback(lambda _: self.wakeup.set())
                            inflight[future] = task
                    listing = watch.failed is not None and now >= next_list
                    if self._waiting() and (listing or watch.failed is None):
                        if listing or now >= next_stuck_check or watch.gone:
                            self._sweep(now, watch, listing)
                            next_stuck_check = now + STUCK_CHECK_SECONDS
                        if listing:
                            next_list = time.monotonic() + options.poll_interval
                    waiting = self._waiting()
                    if not queue and not inflight and not waiting:
                        return
                    if now >= deadline and not inflight:
                        if queue and options.delete_after_timeout and not extended:
                            extended = True
                            for task in queue:
                                task.delete_now, task.next_try = True, 0.0
                            deadline = now + max(t.grace(options.grace_period) for t in queue) + 15
                            continue
                        break
                    wake = [now + options.poll_interval]  # at the latest; events and answers wake it sooner
                    if waiting:
                        wake.append(next_list if watch.failed is not None else next_stuck_check)
                    if now < deadline:
                        wake.append(deadline)
                        if len(inflight) < slots:
                            wake += [t.next_try for t in queue]
                    self.wakeup.wait(max(0.0, min(wake) - now))
        finally:
            watch.stopped.set()
        if side is not None:
            side.result()  # its failure is the caller's, like any other API failure
        for task in self.tasks:
            if task.outcome is not None or task.decision.action in (SKIP, REFUSE):
                continue
            if task.removing or task.decision.action == WAIT:
                task.outcome = FAILED
                task.reason = f"still terminating after the {options.timeout:g}s timeout"
            else:
                task.outcome = BLOCKED  # task.pdb and reason hold the last refusal

    # --- reporting

    def blocking_budgets(self) -> list[dict]:
        held: dict[tuple[str, str], list[str]] = {}
        for task in self.tasks:
            if task.outcome == BLOCKED:
                held.setdefault((task.pod["metadata"]["namespace"], task.pdb or ""), []).append(task.pod["metadata"]["name"])
        budgets = []
        for (namespace, name), pods in sorted(held.items()):
            entry = {"namespace": namespace, "name": name or None, "pods": pods}
            if name:
                try:
                    status = self.client.get(object_path(PDBS, name, namespace),
                                             what=f"reading PodDisruptionBudget {namespace}/{name}").get("status") or {}
                    entry.update({k: status.get(k) for k in ("disruptionsAllowed", "currentHealthy", "desiredHealthy",
                                                             "expectedPods")})
                except KubernetesError:
                    pass  # the report still names it
            budgets.append(entry)
        return budgets


def _describe_budget(budget: dict) -> str:
    name = f"PodDisruptionBudget {budget['namespace']}/{budget['name']}" if budget["name"] else "the API server (429)"
    health = ""
    if budget.get("desiredHealthy") is not None:
        health = f" (needs {budget['desiredHealthy']} healthy pods, has {budget['currentHealthy']})"
    return f"{name}{health} holds pod(s) {', '.join(budget['pods'])}"


def _summary(tasks: list[PodTask]) -> dict[str, int]:
    return {outcome: sum(1 for t in tasks if t.outcome == outcome) for outcome in OUTCOMES}


def _node_view(node: dict, pods: list[str]) -> dict:
    return {"unschedulable": bool((node.get("spec") or {}).get("unschedulable")), "state": recovery_state(node),
            "pods": pods}


def _state_patch_for(node: dict, target: str, run_id: str) -> dict:
    """Move the state forward to `target` when the node is not further along; cordon if needed."""
    patch = cordon_patch(node)
    state = recovery_state(node)
    if state in DRAINABLE_STATES and state != target:
        return combine(patch, state_patch(target, {v.RUN_ID: run_id}))
    if patch:
        return combine(patch, {"metadata": {"annotations": {v.RUN_ID: run_id}}})
    return patch


def drain(client: Client, name: str, *, timeout: float = 300, concurrency: int = 32, grace_period: int | None = None,
          force: bool = False, delete_emptydir_data: bool = True, pod_selector: str | None = None,
          exclude_namespaces: list[str] | tuple = (), delete_after_timeout: bool = False,
          force_delete_stuck_after: float = 60, override_exclusion: bool = False, run_id: str = "",
          poll_interval: float = 0.25, check_mode: bool = False) -> dict:
    """Drain `name` (see module node_drain). Returns changed, drained, pods (per-pod outcome), summary,
    blocking_pdbs, elapsed_seconds, state, diff and message; a drain that cannot finish (pods refused
    by the rules: nothing is changed; pods blocked or still terminating at the timeout) returns
    drained False. Raises KubernetesError/NodeRefused on bad input and API failures."""
    options = DrainOptions(timeout, concurrency, grace_period, force, delete_emptydir_data, pod_selector,
                           tuple(exclude_namespaces or ()), delete_after_timeout, force_delete_stuck_after,
                           override_exclusion, run_id, poll_interval)
    run = _Drain(client, name, options)
    run.plan()
    work = run.work()
    leaving = [t.key for t in work]
    staying = [t.key for t in run.tasks if t not in work]
    before = run.node
    target = v.STATE_DRAINING if work else v.STATE_DRAINED
    start_patch = _state_patch_for(before, target, run_id)
    result: dict[str, Any] = {
        "node_name": name,
        "diff": {"before": _node_view(before, leaving + staying),
                 "after": _node_view(merge_patch(before, _state_patch_for(before, v.STATE_DRAINED, run_id)),
                                     staying)},
    }
    refused = run.refusals()
    if refused or check_mode:
        run.predict()
        # In check mode: drained when nothing is refused and no budget is expected to hold a pod.
        result.update(changed=bool(work or start_patch) and not refused,
                      drained=not refused and all(t.outcome != BLOCKED for t in run.tasks),
                      pods=[t.summary(options, run.started) for t in run.tasks], summary=_summary(run.tasks),
                      blocking_pdbs=run.blocking_budgets() if not refused else [],
                      elapsed_seconds=round(time.monotonic() - run.started, 3), state=recovery_state(before))
    if refused:  # judged before any change, like kubectl drain: nothing moves until the operator decides
        why = "; ".join(f"pod {t.key} is {t.decision.reason}" for t in refused)
        result["message"] = f"node '{name}' cannot be drained: {why}; nothing was changed"
        result["diff"]["after"] = result["diff"]["before"]
        return result
    if check_mode:
        would = ", ".join(f"{n} {o}" for o, n in result["summary"].items() if n) or "nothing to do"
        result["message"] = f"check mode: draining node '{name}' would leave pods {would}"
        return result

    checks = [("patch", "nodes", "", None), ("create", "events", "", "default")]
    may_force_delete = options.delete_after_timeout or (options.force_delete_stuck_after and not node_is_ready(before))
    for task in work:
        namespace = task.pod["metadata"]["namespace"]
        checks.append(("create", "pods/eviction", "", namespace) if task.decision.action == EVICT
                      else ("delete", "pods", "", namespace))
        if may_force_delete:
            checks.append(("delete", "pods", "", namespace))
    if work or start_patch:
        require_access(client, checks)
    node, patched = patch_node(client, name, lambda n: _state_patch_for(n, target, run_id) or None,
                               f"starting the drain of node {name}", current=before)
    if work:
        started = node
        run.execute(alongside=lambda: record_event(
            client, started, v.EVENT_DRAIN_STARTED,
            f"Drain by {v.COLLECTION} run {run_id}: {len(work)} pod(s) to move, {len(staying)} stay"))
    drained = all(t.outcome not in (BLOCKED, FAILED) for t in run.tasks)
    summary = _summary(run.tasks)
    budgets = run.blocking_budgets()
    elapsed = round(time.monotonic() - run.started, 3)
    acted = any(t.removing or t.force_deleted for t in run.tasks)  # an eviction or deletion was accepted
    if drained and work:
        node, marked = patch_node(client, name, lambda n: _state_patch_for(n, v.STATE_DRAINED, run_id) or None,
                                  f"marking node {name} drained")
        patched = patched or marked
        message = (f"node '{name}' drained in {elapsed:g}s: {summary[EVICTED]} evicted, {summary[DELETED]} deleted, "
                   f"{summary[SKIPPED]} skipped")
        record_event(client, node, v.EVENT_DRAINED, f"Drained by {v.COLLECTION} run {run_id}: {message}")
    elif drained and patched:
        message = f"node '{name}' has no pods to move and is now marked {recovery_state(node)}"
        record_event(client, node, v.EVENT_DRAINED, f"Drained by {v.COLLECTION} run {run_id}: {message}")
    elif drained:
        message = f"node '{name}' is already drained: no pods to move"
    else:
        problems = [_describe_budget(b) for b in budgets]
        problems += [f"pod {t.key} failed: {t.reason}" for t in run.tasks if t.outcome == FAILED]
        message = f"node '{name}' was not drained within {timeout:g}s: " + "; ".join(problems)
        record_event(client, node, v.EVENT_DRAIN_BLOCKED, f"{v.COLLECTION} run {run_id}: {message}", "Warning")
    remaining = [t.key for t in run.tasks if t.outcome not in (EVICTED, DELETED)
                 and not (t.decision.action == WAIT and t.outcome == SKIPPED)]
    result["diff"]["after"] = _node_view(node, remaining)
    result.update(changed=bool(acted or patched), drained=drained,
                  pods=[t.summary(options, run.started) for t in run.tasks], summary=summary, blocking_pdbs=budgets,
                  elapsed_seconds=elapsed, state=recovery_state(node), message=message)
    return result


def drain_nodes(call: Call) -> dict:
    """node_drain: drain a batch of nodes at once, each on its own (its result as drain() gives it)."""
    params = call.params
    names = unique(params["name"])
    run_id = params["run_id"] or new_run_id()
    options = {key: params[key] for key in ("timeout", "concurrency", "grace_period", "force", "delete_emptydir_data",
                                            "pod_selector", "exclude_namespaces", "delete_after_timeout",
                                            "force_delete_stuck_after", "override_exclusion")}

    def one(name: str) -> dict:
        outcome = drain(call.client, name, run_id=run_id, check_mode=call.check_mode, **options)
        outcome.pop("node_name", None)
        return outcome

    result = batch_result(for_each_node(names, one, params["max_parallel"]), "to drain")
    result["drained"] = all(node.get("drained") for node in result["nodes"])
    result["run_id"] = run_id
    return result
