"""What the recovery benchmarks share: a bench cluster of accelerator pools whose services are
spread one replica per node (so every faulty node carries one), a watch on their pods that
notes when the cluster shows an eviction or the services whole again, the fault injected on
many nodes at once, the kubectl floor, and the nodes put back as they were afterwards.

Not a benchmark itself (no bench_ prefix): bench_runbook and bench_watch use it."""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client, KubernetesError
from tools.localcluster import build, nodes, workloads

from . import log

NAMESPACE = "bench"
POOLS = 10
FAULT = "NT_NPU_ECC_COUNT"  # action repair in the default catalog
# Its minimum duration set to 0: the figures are the run's own reaction, not the flap-protection wait.
CLASSIFICATION = {"catalog": [{"type": FAULT, "min_duration": 0}]}
FLOOR_SCRIPT = Path(__file__).with_name("kubectl_floor.sh")
FLOOR_TAINT = "bench.ai-infra.io/faulty"
OUR_DOMAIN = "node-recovery.ai-infra.io/"  # every annotation, label and taint the collection writes
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"


def pool_of(node: str) -> str:
    return node.rsplit("-", 1)[0]


# -- the cluster ----------------------------------------------------------------------------------

def grow(api: Client, total: int, existing: int, quiet_seconds: float = 30) -> None:
    """Add nodes to the POOLS pools until there are `total`; wait until they are Ready and settled."""
    per_pool = (total - existing) // POOLS
    manifests = []
    for p in range(POOLS):
        spec = nodes.Pool(f"pool{p}", "npu", per_pool)
        manifests += [nodes.node_manifest(spec, existing // POOLS + i) for i in range(per_pool)]
    nodes.create_nodes(manifests, api, workers=32)
    nodes.wait_ready([m["metadata"]["name"] for m in manifests], timeout=900, api=api, settle=True)
    time.sleep(quiet_seconds)  # the controllers' and kwok's last work on the new nodes is not the run's


def spread_service(name: str, pool: str, replicas: int) -> list[dict]:
    """An inference Deployment with one replica per node of its pool at most (required anti-affinity on
    the hostname, as a service spread for availability) and a PodDisruptionBudget of maxUnavailable 20%."""
    deployment, pdb = workloads.inference_service(name, NAMESPACE, replicas=replicas,
                                                  node_selector={nodes.POOL_LABEL: pool}, accelerators=4)
    deployment["spec"]["template"]["spec"]["affinity"] = {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": name}}, "topologyKey": "kubernetes.io/hostname"}]}}
    pdb["spec"] = {"maxUnavailable": "20%", "selector": pdb["spec"]["selector"]}
    return [deployment, pdb]


def services(size: int) -> dict[str, int]:
    """One service per pool, a replica on half its nodes: name -> replicas."""
    return {f"svc{p}": size // POOLS // 2 for p in range(POOLS)}


def populate(api: Client, size: int) -> dict[str, int]:
    """size nodes in POOLS pools and the spread services on them, all running; returns the services."""
    log(f"creating {size} nodes in {POOLS} pools")
    grow(api, size, 0)
    api.request("POST", "/api/v1/namespaces", body={"metadata": {"name": NAMESPACE}})
    time.sleep(3)  # the namespace's default service account
    wanted = services(size)
    for p, (name, replicas) in enumerate(wanted.items()):
        workloads.apply(api, spread_service(name, f"pool{p}", replicas))
    deadline = time.monotonic() + 900
    while len(running(api)) < sum(wanted.values()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(running(api))} of {sum(wanted.values())} replicas running after 900 s")
        time.sleep(2)
    return wanted


def running(api: Client) -> list[dict]:
    return [p for p in api.list(PODS) if p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")]


def victims(api: Client, count: int, used: set[str]) -> list[str]:
    """Unused nodes that carry a replica, spread over the pools (the pools with the fewest faulty nodes
    so far first), so that no pool reaches the storm brake and no PodDisruptionBudget refuses."""
    by_pool: dict[str, list[str]] = {}
    for pod in running(api):
        node = pod["spec"]["nodeName"]
        if node not in used:
            by_pool.setdefault(pool_of(node), []).append(node)
    picked: list[str] = []
    faulty_in = {pool: sum(1 for n in used if pool_of(n) == pool) for pool in by_pool}
    while len(picked) < count:
        before = len(picked)
        for pool in sorted(by_pool, key=lambda p: (faulty_in[p], p)):
            candidates = [n for n in sorted(set(by_pool[pool])) if n not in picked]
            if candidates and len(picked) < count:
                picked.append(candidates[0])
        if len(picked) == before:
            raise RuntimeError(f"only {len(picked)} unused nodes carry work, {count} faulty ones were asked for")
    return picked


def affected(api: Client, names: Iterable[str]) -> list[str]:
    """The services with a replica on these nodes."""
    on = set(names)
    return sorted({p["metadata"]["labels"]["app"] for p in running(api) if p["spec"].get("nodeName") in on})


# -- faults and the way back ----------------------------------------------------------------------

def inject(api: Client, names: list[str], ctype: str = FAULT) -> float:
    """node-agent reports the fault on every node at once (concurrent status PATCHes, merged by type);
    returns the time (epoch) just before the first PATCH."""
    def patch(name: str) -> None:
        now = nodes.rfc3339(dt.datetime.now(dt.timezone.utc))
        condition = {"type": ctype, "status": "True", "lastTransitionTime": now, "lastHeartbeatTime": now,
                     "reason": "os_task_name:" + ctype[3:].lower().replace("_", "-"), "message": "bench fault"}
        api.patch(f"{nodes.NODES}/{name}/status", {"status": {"conditions": [condition]}}, patch_type="strategic",
                  what=f"injecting {ctype} on node {name}")

    started = time.time()
    with ThreadPoolExecutor(max_workers=min(32, len(names))) as pool:
        list(pool.map(patch, names))
    return started


def restore(api: Client, names: Iterable[str]) -> None:
    """Put nodes back as healthy, schedulable and unannotated (what a repair and a return would end
    with), so the faults of earlier runs neither count for the storm brake nor take capacity."""
    def one(name: str) -> None:
        nodes.clear(name, api)
        node = api.get(f"{nodes.NODES}/{name}")
        meta = node["metadata"]
        patch = {"metadata": {kind: {k: None for k in meta.get(kind) or {} if k.startswith(OUR_DOMAIN)}
                              for kind in ("annotations", "labels")},
                 "spec": {"unschedulable": None,
                          "taints": [t for t in node["spec"].get("taints") or []
                                     if not t["key"].startswith(OUR_DOMAIN) and t["key"] != FLOOR_TAINT] or None}}
        api.patch(f"{nodes.NODES}/{name}", patch, what=f"restoring node {name}")

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, list(names)))


def kubectl() -> Path:
    return build.binary_paths()["kubectl"]


def floor_command(kubeconfig: Path, names: list[str], services_: list[str], timeout: int = 300) -> list[str]:
    return ["bash", str(FLOOR_SCRIPT), str(kubectl()), str(kubeconfig), NAMESPACE, ",".join(services_),
            str(timeout), *names]


# -- what the cluster shows -----------------------------------------------------------------------

@dataclass
class Goal:
    """A predicate over the watched pods; met_at is the arrival time (epoch) of the watch event after
    which it first held."""
    test: Callable[[PodWatch], bool]
    met_at: float | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout: float, what: str) -> float:
        if not self.done.wait(timeout):
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        return self.met_at


class PodWatch(threading.Thread):
    """The namespace's pods as the cluster shows them, kept current by a watch, judged against goals
    after every event: which pods are Ready where, and which were seen being deleted."""

    def __init__(self, kubeconfig: Path) -> None:
        super().__init__(daemon=True, name="bench-pod-watch")
        self.api = Client({"kubeconfig": str(kubeconfig)}, pool_size=4)
        self.pods: dict[str, dict] = {}
        self.deleted_on: dict[str, int] = {}  # node -> pods seen being deleted or gone from it
        self._seen_deleting: set[str] = set()
        self.goals: list[Goal] = []
        self.lock = threading.Lock()
        self.listed = threading.Event()
        self.stopped = False
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            while not self.stopped:
                listing = self.api.get(PODS)
                with self.lock:
                    self.pods = {p["metadata"]["uid"]: p for p in listing.get("items") or []}
                    self._judge(time.time())
                self.listed.set()
                version = listing["metadata"]["resourceVersion"]
                while not self.stopped and version:
                    version = self._follow(version)
        except Exception as err:  # noqa: BLE001 - reported by check()
            self.error = err
            self.listed.set()

    def _follow(self, version: str) -> str | None:
        """One watch request; the version to go on from, or None to list again (410 Gone)."""
        try:
            for event in self.api.watch(PODS, version, timeout_seconds=60, what="watching the bench pods"):
                now = time.time()
                obj = event.get("object") or {}
                if event["type"] == "ERROR":
                    return None
                version = obj.get("metadata", {}).get("resourceVersion") or version
                if event["type"] == "BOOKMARK":
                    continue
                uid = obj["metadata"]["uid"]
                with self.lock:
                    node = obj["spec"].get("nodeName")
                    if event["type"] == "DELETED":
                        self.pods.pop(uid, None)
                    else:
                        self.pods[uid] = obj
                    if node and uid not in self._seen_deleting and (
                            event["type"] == "DELETED" or obj["metadata"].get("deletionTimestamp")):
                        self._seen_deleting.add(uid)
                        self.deleted_on[node] = self.deleted_on.get(node, 0) + 1
                    self._judge(now)
                if self.stopped:
                    break
        except KubernetesError as err:
            if err.status == 410:
                return None
            raise
        return version

    def _judge(self, now: float) -> None:
        for goal in [g for g in self.goals if not g.done.is_set()]:
            if goal.test(self):
                goal.met_at = now
                goal.done.set()
        self.goals = [g for g in self.goals if not g.done.is_set()]

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"the pod watch failed: {self.error}")

    def expect(self, test: Callable[[PodWatch], bool]) -> Goal:
        """A goal judged from now on (and at once, against the pods as they are)."""
        self.check()
        goal = Goal(test)
        with self.lock:
            self.goals.append(goal)
            self._judge(time.time())
        return goal

    def stop(self) -> None:
        self.stopped = True

    # Predicates (called with the lock held).
    def ready_elsewhere(self, service: str, away_from: set[str]) -> int:
        """Replicas of the service Running and Ready, not being deleted, on none of these nodes."""
        return sum(1 for p in self.pods.values()
                   if (p["metadata"].get("labels") or {}).get("app") == service
                   and not p["metadata"].get("deletionTimestamp") and p["spec"].get("nodeName")
                   and p["spec"]["nodeName"] not in away_from and p["status"].get("phase") == "Running"
                   and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or []))


def whole_again(wanted: dict[str, int], services_: list[str], faulty: list[str]) -> Callable[[PodWatch], bool]:
    """Every replica of these services Running and Ready on a node other than the faulty ones (which are
    cordoned by then, whoever drains them, so these are the schedulable nodes)."""
    away = set(faulty)
    return lambda watch: all(watch.ready_elsewhere(s, away) >= wanted[s] for s in services_)


def first_eviction(node: str, before: int) -> Callable[[PodWatch], bool]:
    """A pod on the node seen being deleted (deletionTimestamp set, or gone), beyond `before` such pods."""
    return lambda watch: watch.deleted_on.get(node, 0) > before


# -- the run's report -----------------------------------------------------------------------------

def when(stamp) -> float | None:
    """An RFC 3339 time of the report as epoch seconds; None when absent or unreadable."""
    if not stamp:
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()


def step_times(step: dict) -> tuple[float | None, float | None, float | None]:
    """(started, finished, the module's own seconds) of one timeline step, read defensively: a step
    carries `at` (when it was done) or `started`/`finished`, and `seconds` (what it took). The module's
    own time is finished - started when both are there, else `seconds`; the start is `started`, else
    the end less `seconds`."""
    finished = when(step.get("finished")) or when(step.get("at"))
    started = when(step.get("started"))
    if started is not None and finished is not None:
        return started, finished, max(finished - started, 0.0)
    try:
        own = float(step["seconds"]) if step.get("seconds") not in (None, "") else None
    except (TypeError, ValueError):
        own = None
    if started is None and finished is not None and own is not None:
        started = finished - own
    return started, finished, own


def fronts(report: dict, steps: tuple[str, ...]) -> dict[str, dict]:
    """Per step over all nodes of the run: when the first node started it (None when steps carry no
    `started`), when the last node finished it, and the mean of the module's own seconds."""
    out: dict[str, dict] = {}
    for name in steps:
        starts, ends, owns = [], [], []
        for node in report.get("nodes") or []:
            for step in node.get("timeline") or []:
                if step.get("step") != name:
                    continue
                started, finished, own = step_times(step)
                if started is not None:
                    starts.append(started)
                if finished is not None:
                    ends.append(finished)
                if own is not None:
                    owns.append(own)
        out[name] = {"first_start": min(starts) if starts else None, "last_end": max(ends) if ends else None,
                     "own": sum(owns) / len(owns) if owns else None}
    return out


def run_floor(kubeconfig: Path, names: list[str], services_: list[str], watch: PodWatch, wanted: dict[str, int],
              timeout: int = 300) -> dict:
    """The kubectl floor for these nodes: the shell's wall time, and when the services were whole again
    as the cluster shows it; both from just before the shell starts."""
    goal = watch.expect(whole_again(wanted, services_, names))
    started = time.time()
    proc = subprocess.run(floor_command(kubeconfig, names, services_, timeout), capture_output=True, text=True,
                          timeout=timeout * 3)
    ended = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"the kubectl floor failed (rc {proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}")
    whole = goal.wait(timeout, "the services to be whole again after the kubectl floor")
    drained = [float(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("drained ")]
    return {"started": started, "ended": ended, "whole": whole, "drained": max(drained) if drained else None,
            "mttr": max(ended, whole) - started}
