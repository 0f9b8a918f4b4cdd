"""The runbook end to end on the real local cluster: the recover, repaired and
return_to_service playbooks as an operator runs them (ansible-playbook, k8s_nodes inventory)."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._lock import acquire, release
from tools.localcluster import cluster as localcluster

from ..webhook import Receiver, receiving
from .helpers import (
    PLAN_TASK,
    REPO,
    VENV_BIN,
    NodeFactory,
    kill_with_descendants,
    localnodes,
    node,
    plan_took_the_lock,
    run_module,
    running_pods,
    service_account_kubeconfig,
    unique,
    wait_for,
    workloads,
)

RBAC = REPO / "files" / "rbac" / "node-recovery.yaml"


class Runbook:
    """ansible-playbook against a set of pools, with the k8s_nodes inventory narrowed to them."""

    def __init__(self, tmp: Path, kubeconfig: str, pools: list[str], lock_name: str, include_healthy: bool = True):
        self.tmp = tmp
        self.kubeconfig = kubeconfig
        self.selector = f"{localnodes.POOL_LABEL} in ({','.join(pools)})"
        self.inventory = tmp / "fleet.k8s_nodes.yml"
        self.inventory.write_text(yaml.safe_dump({"plugin": "ai_infra.node_recovery.k8s_nodes",
                                                  "kubeconfig": kubeconfig, "label_selector": self.selector,
                                                  "include_healthy": include_healthy}))
        self.vars = {
            "node_recovery_label_selector": self.selector,
            "node_recovery_report_dir": str(tmp / "reports"),
            "node_recovery_lock_name": lock_name,
            "repair_handoff_ticket_dir": str(tmp / "tickets"),
            "recover_workloads_wait_timeout": 120,
            "drain_timeout": 60,
            "node_recovery_max_parallel": 3,
        }

    def command(self, playbook: str, *args: str, extra: dict | None = None) -> list[str]:
        (self.tmp / "vars.json").write_text(json.dumps(dict(self.vars, **(extra or {}))))
        return [str(VENV_BIN / "ansible-playbook"), "-i", str(self.inventory), f"ai_infra.node_recovery.{playbook}",
                "-e", f"@{self.tmp / 'vars.json'}", *args]

    def env(self, **extra: str) -> dict:
        return dict(os.environ, K8S_AUTH_KUBECONFIG=self.kubeconfig, ANSIBLE_LOCALHOST_WARNING="false",
                    ANSIBLE_PYTHON_INTERPRETER=str(VENV_BIN / "python"), **extra)

    def run(self, playbook: str, *args: str, extra: dict | None = None, env: dict | None = None,
            timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(playbook, *args, extra=extra), capture_output=True, text=True,
                              timeout=timeout, env=env or self.env(), cwd=self.tmp)


def our_marks(api, names: list[str]) -> dict[str, dict]:
    """What the collection wrote on each node: our annotations, our taints, the cordon."""
    marks = {}
    for name in names:
        obj = node(api, name)
        annotations = {k: val for k, val in (obj["metadata"].get("annotations") or {}).items()
                       if k.startswith(v.DOMAIN) and k != v.STATE_SINCE}
        taints = [t for t in obj["spec"].get("taints") or [] if t["key"].startswith(v.DOMAIN)]
        marks[name] = {"annotations": annotations, "taints": taints,
                       "unschedulable": bool(obj["spec"].get("unschedulable"))}
    return marks


def node_events(api, name: str, reason: str) -> list[dict]:
    return [e for e in api.list("/api/v1/events", field_selector=f"involvedObject.kind=Node,involvedObject.name={name}")
            if e["reason"] == reason]


def state_of(api, name: str) -> str:
    return (node(api, name)["metadata"].get("annotations") or {}).get(v.STATE, "none")


@pytest.fixture(scope="module")
def fleet(api, kubeconfig, tmp_path_factory):
    """200 accelerator nodes in four pools with the work an AI pool carries, and five faults of
    different kinds; plus a flapping check, an Unknown check and a node a person cordoned."""
    factory = NodeFactory(api)
    tag = unique("e2e")
    pools = {f"{tag}-{p}": kind for p, kind in (("a", "npu"), ("b", "npu"), ("c", "npu"), ("g", "gpu"))}
    names = {pool: factory(50, kind=kind, pool=pool) for pool, kind in pools.items()}
    namespace = tag
    api.request("POST", "/api/v1/namespaces", body={"metadata": {"name": namespace}})
    wait_for(lambda: api.list(f"/api/v1/namespaces/{namespace}/serviceaccounts"), 30, "default ServiceAccount")
    pool_a, pool_b, pool_c, pool_g = pools
    for pool in pools:
        sel = {localnodes.POOL_LABEL: pool}
        resource = localnodes.GPU_RESOURCE if pools[pool] == "gpu" else localnodes.NPU_RESOURCE
        workloads.apply(api, workloads.inference_service(f"svc-{pool[-1]}", namespace, replicas=6, node_selector=sel,
                                                         accelerators=4, resource=resource))
    workloads.apply(api, workloads.training_job("train", namespace, ranks=4, node_selector={localnodes.POOL_LABEL: pool_a}))
    workloads.apply(api, workloads.stateful_service("kv", namespace, replicas=3, node_selector={localnodes.POOL_LABEL: pool_b}))
    workloads.apply(api, workloads.node_agent_daemonset("agent", namespace, node_selector={localnodes.POOL_LABEL: pool_c}))
    wait_for(lambda: len(running_pods(api, namespace, "app=train")) == 4, 120, "training ranks running")
    wait_for(lambda: len(running_pods(api, namespace)) >= 4 * 6 + 4 + 3 + 50, 180, "all workloads running")

    pods = running_pods(api, namespace)
    on = {}
    for pod in pods:
        on.setdefault(pod["spec"]["nodeName"], set()).add(pod["metadata"]["labels"]["app"])
    train_nodes = sorted(n for n, apps in on.items() if "train" in apps)
    svc_b = sorted(n for n, apps in on.items() if "svc-b" in apps and n in names[pool_b])
    svc_g = sorted(n for n, apps in on.items() if "svc-g" in apps)
    faults = {
        train_nodes[0]: ("allocatable", None),                       # card loss under a training rank: card level
        svc_b[0]: ("NT_NPU_ECC_COUNT", "True"),                                 # repair
        names[pool_c][7]: ("NetworkUnavailable", "True"),                       # isolate only
        svc_g[0]: ("NT_GPU_FAN_FAILURE", "True"),                               # uncatalogued NT_*: repair
        train_nodes[1]: ("Ready", "False"),                                     # node-level, reboot_then_repair
    }
    for name, (ctype, status) in faults.items():
        if ctype == "allocatable":
            localnodes.set_allocatable(name, 7, api=api)
        else:
            localnodes.set_condition(name, ctype, status, ago=localnodes.parse_duration("10m"), api=api)
    untouched = [n for n in names[pool_a] if n not in faults][:3]
    flapping, unknown, personal = untouched
    localnodes.set_condition(flapping, "NT_NPU_NET", "True", api=api)  # just now: under its minimum duration
    localnodes.set_condition(unknown, "NT_NPU_DEVICE", "Unknown", ago=localnodes.parse_duration("10m"), api=api)
    api.patch(f"/api/v1/nodes/{personal}", {"spec": {"unschedulable": True}})  # a person's cordon, no fault
    everyone = [n for pool in names.values() for n in pool]
    yield {"names": everyone, "faults": faults, "card_node": train_nodes[0], "namespace": namespace,
           "pools": list(pools), "flapping": flapping,
           "unknown": unknown, "personal": personal, "tmp": tmp_path_factory.mktemp("fleet"),
           "train_uids": {p["metadata"]["uid"] for p in running_pods(api, namespace, "app=train")}}
    api.request("DELETE", f"/api/v1/namespaces/{namespace}")
    factory.cleanup()


@pytest.fixture(scope="module")
def fleet_runbook(fleet, kubeconfig):
    # The inventory an AWX recover/return job uses: only the nodes that need attention as hosts
    # (the small-pool tests below run over every node).
    return Runbook(fleet["tmp"], kubeconfig, fleet["pools"], lock_name=unique("lock"), include_healthy=False)


def test_recover_acts_on_exactly_the_faulty_nodes(api, fleet, fleet_runbook):
    run = fleet_runbook.run("recover")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    faults, card = fleet["faults"], fleet["card_node"]
    # One lost card: the node keeps serving on its other cards, marked degraded; the job on it restarts whole.
    kept = node(api, card)
    assert not kept["spec"].get("unschedulable") and not kept["spec"].get("taints")
    assert kept["metadata"]["labels"][v.DEGRADED_LABEL] == "true" and state_of(api, card) == "none"
    assert len(node_events(api, card, v.EVENT_DEGRADED)) == 1 and not node_events(api, card, v.EVENT_ISOLATED)
    for name, (ctype, _status) in faults.items():
        if name == card:
            continue
        obj = node(api, name)
        assert obj["spec"].get("unschedulable"), f"{name} not cordoned"
        assert any(t["key"] == v.TAINT_KEY for t in obj["spec"].get("taints") or []), f"{name} not tainted"
        expected = "drained" if ctype == "NetworkUnavailable" else "repair-pending"
        assert state_of(api, name) == expected, name
        assert len(node_events(api, name, v.EVENT_ISOLATED)) == 1
        assert not [p for p in running_pods(api, fleet["namespace"]) if p["spec"]["nodeName"] == name
                    and p["metadata"]["labels"]["app"] != "agent"], f"workloads left on {name}"
    # Work runs again elsewhere; the training job was restarted whole (every rank is new).
    ranks = running_pods(api, fleet["namespace"], "app=train")
    assert len(ranks) == 4
    assert not {p["metadata"]["uid"] for p in ranks} & fleet["train_uids"]
    assert not {p["spec"]["nodeName"] for p in ranks} & (set(faults) - {card})
    for app in ("svc-a", "svc-b", "svc-c", "svc-g"):
        assert len(running_pods(api, fleet["namespace"], f"app={app}")) == 6
    # One ticket for each node handed to repair, none for the isolate-only fault.
    ticketed = sorted(json.loads(p.read_text())["node"]["name"] for p in (fleet["tmp"] / "tickets").glob("*.json"))
    assert ticketed == sorted(n for n, (ctype, _s) in faults.items() if ctype != "NetworkUnavailable" and n != card)
    # Nothing else touched: the flapping, Unknown and person-cordoned nodes and every healthy node.
    others = [n for n in fleet["names"] if n not in faults]
    marks = our_marks(api, others)
    assert all(not m["annotations"] and not m["taints"] for m in marks.values())
    assert [n for n, m in marks.items() if m["unschedulable"]] == [fleet["personal"]]
    report = json.loads((fleet["tmp"] / "reports" / "latest-recover.json").read_text())
    assert {n["name"] for n in report["nodes"]} == set(faults)
    skipped = {s["name"]: s["reason"] for s in report["skipped"]}
    assert skipped[fleet["flapping"]].startswith("suspect: NT_NPU_NET counts in")
    assert skipped[fleet["unknown"]] == "suspect: NT_NPU_DEVICE is Unknown"
    html = (fleet["tmp"] / "reports" / "latest-recover.html").read_text()
    assert all(name in html for name in faults) and "workloads recovered" in html
    (entry,) = [n for n in report["nodes"] if n["name"] == card]
    assert entry["outcome"].startswith("kept in service, card level: ") and not entry["failed"]


def test_the_same_run_again_changes_nothing(api, fleet, fleet_runbook):
    localnodes.clear(fleet["flapping"], api=api)  # the flap ended: it was never a lasting fault
    before = our_marks(api, fleet["names"])
    events_before = {n: len(node_events(api, n, v.EVENT_ISOLATED)) for n in fleet["faults"]}
    run = fleet_runbook.run("recover")
    assert run.returncode == 0, run.stdout[-4000:]
    recap = run.stdout[run.stdout.index("PLAY RECAP"):]
    assert "changed=0" in recap and "changed=1" not in recap and "changed=2" not in recap, recap
    assert PLAN_TASK in run.stdout and not plan_took_the_lock(run.stdout)  # nothing to do: no lock
    after = our_marks(api, fleet["names"])
    changed = {n for n in fleet["names"] if before[n] != after[n]}
    assert not changed, f"changed on a second run: {changed}"
    assert {n: len(node_events(api, n, v.EVENT_ISOLATED)) for n in fleet["faults"]} == events_before
    assert len(list((fleet["tmp"] / "tickets").glob("*.json"))) == 3  # none for the card kept in service


def test_return_to_service_returns_exactly_the_nodes_we_isolated(api, fleet, fleet_runbook):
    card = fleet["card_node"]
    faults = [n for n in fleet["faults"] if n != card]  # isolated by us
    for name in fleet["faults"]:
        localnodes.clear(name, api=api)
    wait_for(lambda: all(next(c for c in node(api, n)["status"]["conditions"] if c["type"] == "Ready")["status"] == "True"
                         for n in faults), 60, "faulty nodes Ready again")
    cleared_at = time.monotonic()
    handed = [n for n in faults if state_of(api, n) == "repair-pending"]
    repaired = fleet_runbook.run("repaired", extra={"repaired_nodes": handed, "repaired_by": "dc-ops"})
    assert repaired.returncode == 0, repaired.stdout[-3000:]
    fleet_runbook.vars["return_to_service_healthy_delay"] = 600
    too_early = fleet_runbook.run("return_to_service")
    assert too_early.returncode == 0, too_early.stdout[-3000:]
    assert all(node(api, n)["spec"].get("unschedulable") for n in faults)  # healthy for less than the delay
    early = json.loads((fleet["tmp"] / "reports" / "latest-return_to_service.json").read_text())
    assert all(n["outcome"].startswith("kept out:") for n in early["nodes"] if n["name"] != card)
    # The lost card is back, for less than the delay: its node (never out of service) keeps the mark for now.
    (waiting,) = [n for n in early["nodes"] if n["name"] == card]
    assert waiting["outcome"].startswith("cards not given back yet: ") and not waiting["failed"]
    healthy_since = json.loads(node(api, card)["metadata"]["annotations"][v.DEGRADED])["healthy_since"]
    fleet_runbook.vars["return_to_service_healthy_delay"] = 10
    time.sleep(max(0.0, 11 - (time.monotonic() - cleared_at)))  # healthy for the whole delay
    since = dt.datetime.fromisoformat(healthy_since.replace("Z", "+00:00"))
    time.sleep(max(0.0, 11 - (dt.datetime.now(dt.timezone.utc) - since).total_seconds()))  # the cards too
    run = fleet_runbook.run("return_to_service")
    assert run.returncode == 0, run.stdout[-4000:]
    for name in faults:
        obj = node(api, name)
        assert not obj["spec"].get("unschedulable"), f"{name} still cordoned"
        assert not [t for t in obj["spec"].get("taints") or [] if t["key"] == v.TAINT_KEY]
        assert state_of(api, name) == "returned"
        assert len(node_events(api, name, v.EVENT_RETURNED)) == 1
    assert node(api, fleet["personal"])["spec"].get("unschedulable") is True  # a person's cordon stays
    report = json.loads((fleet["tmp"] / "reports" / "latest-return_to_service.json").read_text())
    assert {n["name"] for n in report["nodes"] if n["outcome"] == "returned to service"} == set(faults)
    (back,) = [n for n in report["nodes"] if n["name"] == card]
    assert back["outcome"].startswith("cards returned: ") and not back["failed"]
    assert v.DEGRADED_LABEL not in node(api, card)["metadata"]["labels"]
    assert len(node_events(api, card, v.EVENT_CARDS_RETURNED)) == 1


@pytest.fixture
def small_pool(api, make_nodes, namespace, tmp_path, kubeconfig):
    def build(size: int, faulty: int, replicas: int = 0, min_available: int | None = None):
        names = make_nodes(size)
        pool = names[0].rsplit("-", 1)[0]
        if replicas:
            workloads.apply(api, workloads.inference_service("svc", namespace, replicas=replicas,
                                                             node_selector={localnodes.POOL_LABEL: pool},
                                                             min_available=min_available))
            wait_for(lambda: len(running_pods(api, namespace, "app=svc")) == replicas, 60, "service running")
        for name in names[:faulty]:
            localnodes.set_condition(name, "NT_NPU_OTHER", "True", ago=localnodes.parse_duration("10m"), api=api)
        return names, Runbook(tmp_path, kubeconfig, [pool], lock_name=unique("lock"))
    return build


def test_storm_isolates_nothing_and_fails_loudly(api, small_pool):
    names, runbook = small_pool(10, faulty=4)
    run = runbook.run("recover")
    assert run.returncode != 0
    assert "Storm detected" in run.stdout and "has 4 faulty nodes of 10 (allowed 2)" in run.stdout
    assert all(n in run.stdout for n in names[:4])
    assert all(not m["annotations"] and not m["taints"] and not m["unschedulable"]
               for m in our_marks(api, names).values())
    report = json.loads((runbook.tmp / "reports" / "latest-recover.json").read_text())
    assert report["storm"] is True
    # Planned before the lock is taken: a storm never takes it.
    lease = api.get_or_none(f"/apis/coordination.k8s.io/v1/namespaces/default/leases/"
                            f"{runbook.vars['node_recovery_lock_name']}")
    assert lease is None or not lease["spec"].get("holderIdentity")


def test_check_mode_shows_the_plan_for_every_node_of_the_batch_and_changes_nothing(api, small_pool):
    names, runbook = small_pool(10, faulty=2, replicas=4)
    run = runbook.run("recover", "--check", extra={"node_recovery_max_parallel": 8})
    assert run.returncode == 0, run.stdout[-4000:]
    assert all(not m["annotations"] and not m["taints"] and not m["unschedulable"]
               for m in our_marks(api, names).values())
    lease = api.get_or_none(f"/apis/coordination.k8s.io/v1/namespaces/default/leases/"
                            f"{runbook.vars['node_recovery_lock_name']}")
    assert lease is None  # a dry run takes no lock
    report = json.loads((runbook.tmp / "reports" / "latest-recover.json").read_text())
    assert report["check_mode"] is True and sorted(n["name"] for n in report["nodes"]) == sorted(names[:2])
    for entry in report["nodes"]:
        steps = {s["step"]: s["note"] for s in entry["timeline"]}
        assert "would be isolated" in steps["isolated"], entry
        assert "check mode: draining node" in steps["drained"], entry
        assert entry["outcome"] == "handed off to repair" and not entry["failed"], entry


def test_limit_narrows_the_run(api, small_pool):
    """A --limit leaves localhost out of every play: the run still writes its report and gives its lock back."""
    names, runbook = small_pool(10, faulty=2)
    run = runbook.run("recover", "--limit", names[1])
    assert run.returncode == 0, run.stdout[-4000:]
    assert state_of(api, names[1]) == "repair-pending"
    assert state_of(api, names[0]) == "none"
    report = json.loads((runbook.tmp / "reports" / "latest-recover.json").read_text())
    assert [(n["name"], n["outcome"]) for n in report["nodes"]] == [(names[1], "handed off to repair")]
    lease = api.get(f"/apis/coordination.k8s.io/v1/namespaces/default/leases/{runbook.vars['node_recovery_lock_name']}")
    assert not lease["spec"].get("holderIdentity"), lease["spec"]  # given back, not left to lapse

    localnodes.set_condition(names[1], "NT_NPU_OTHER", "False", api=api)  # repaired: healthy again
    repaired = runbook.run("repaired", extra={"repaired_nodes": [names[1]], "repaired_by": "dc-ops"})
    assert repaired.returncode == 0, repaired.stdout[-3000:]
    returned = runbook.run("return_to_service", "--limit", names[1], extra={"return_to_service_healthy_delay": 0})
    assert returned.returncode == 0, returned.stdout[-4000:]
    report = json.loads((runbook.tmp / "reports" / "latest-return_to_service.json").read_text())
    assert [(n["name"], n["outcome"]) for n in report["nodes"]] == [(names[1], "returned to service")], report
    assert state_of(api, names[1]) == "returned"
    lease = api.get(f"/apis/coordination.k8s.io/v1/namespaces/default/leases/{runbook.vars['node_recovery_lock_name']}")
    assert not lease["spec"].get("holderIdentity"), lease["spec"]


def test_two_runs_at_once_handle_every_node_exactly_once(api, small_pool):
    names, runbook = small_pool(20, faulty=3)
    procs = [subprocess.Popen(runbook.command("recover"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=runbook.env(), cwd=runbook.tmp) for _ in range(2)]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    # The second waits for the first's lock, then finds the nodes handed off and leaves them.
    assert [p.returncode for p in procs] == [0, 0], outputs
    for name in names[:3]:
        assert len(node_events(api, name, v.EVENT_ISOLATED)) == 1
        assert len(node_events(api, name, v.EVENT_REPAIR_REQUESTED)) == 1
        assert state_of(api, name) == "repair-pending"
    reports = sorted((runbook.tmp / "reports").glob("recover-*.json"))
    outcomes = sorted(n["outcome"] for r in reports for n in json.loads(r.read_text())["nodes"])
    assert outcomes.count("handed off to repair") == 3, outcomes


def test_recover_and_return_to_service_started_together_never_act_at_once(api, small_pool):
    """A node waits for return (ours, fault cleared) while another one faults: both playbooks start at
    once; the lock lets one act at a time, which the lease's holder changes and the nodes' Events show."""
    names, runbook = small_pool(10, faulty=2)
    assert runbook.run("recover").returncode == 0
    localnodes.clear(names[0], api=api)
    repaired = runbook.run("repaired", extra={"repaired_nodes": [names[0]], "repaired_by": "dc-ops"})
    assert repaired.returncode == 0, repaired.stdout[-3000:]
    localnodes.set_condition(names[2], "NT_NPU_OTHER", "True", ago=localnodes.parse_duration("10m"), api=api)
    lease_path = f"/apis/coordination.k8s.io/v1/namespaces/default/leases/{runbook.vars['node_recovery_lock_name']}"
    holders: list[str] = []
    stop = threading.Event()

    def watch_holders():
        while not stop.is_set():
            lease = api.get_or_none(lease_path) or {}
            holder = (lease.get("spec") or {}).get("holderIdentity") or ""
            if not holders or holders[-1] != holder:
                holders.append(holder)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_holders, daemon=True)
    watcher.start()
    procs = [subprocess.Popen(runbook.command(playbook, extra={"return_to_service_healthy_delay": 0}),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=runbook.env(),
                              cwd=runbook.tmp) for playbook in ("recover", "return_to_service")]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    stop.set()
    watcher.join()
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert state_of(api, names[0]) == "returned" and state_of(api, names[2]) == "repair-pending"
    took = [h for h in holders if h]
    assert any(h.startswith("recover-") for h in took) and any(h.startswith("return-") for h in took), holders
    # Never two holders at once: each hold is followed by a release (or a takeover) before the other's.
    assert all(a != b for a, b in zip(took, took[1:])), holders
    returned_at = node_events(api, names[0], v.EVENT_RETURNED)[0]["lastTimestamp"]
    isolated_at = node_events(api, names[2], v.EVENT_ISOLATED)[0]["lastTimestamp"]
    handed_at = node_events(api, names[2], v.EVENT_REPAIR_REQUESTED)[0]["lastTimestamp"]
    assert returned_at < isolated_at or returned_at > handed_at, (returned_at, isolated_at, handed_at)


def test_a_return_to_service_run_killed_under_its_lock_is_finished_by_the_next_within_a_minute(api, small_pool):
    """return_to_service takes the lock in its plan: killed by SIGKILL right after (an OOM kill of the controller),
    its lock is no longer renewed, and a run started at once takes it over and returns the nodes."""
    names, runbook = small_pool(10, faulty=2)
    assert runbook.run("recover").returncode == 0
    for name in names[:2]:
        localnodes.clear(name, api=api)
    repaired = runbook.run("repaired", extra={"repaired_nodes": names[:2], "repaired_by": "dc-ops"})
    assert repaired.returncode == 0, repaired.stdout[-3000:]
    lease_path = f"/apis/coordination.k8s.io/v1/namespaces/default/leases/{runbook.vars['node_recovery_lock_name']}"

    def holder() -> str:
        return ((api.get_or_none(lease_path) or {}).get("spec") or {}).get("holderIdentity") or ""

    extra = {"return_to_service_healthy_delay": 0}
    killed = subprocess.Popen(runbook.command("return_to_service", extra=extra), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=runbook.env(), cwd=runbook.tmp)
    try:
        wait_for(lambda: holder().startswith("return-"), 120, "the return run to take the lock", interval=0.02)
        killed.send_signal(signal.SIGKILL)  # the controller only, as an OOM kill would
        killed.wait(timeout=30)
    finally:
        killed.kill()
    dead_holder = holder()
    assert dead_holder.startswith("return-"), "the run was to die holding the lock, not after giving it back"

    started = time.monotonic()
    finished = runbook.run("return_to_service", extra=extra)
    took = time.monotonic() - started
    assert finished.returncode == 0, finished.stdout[-4000:]
    assert [state_of(api, name) for name in names[:2]] == ["returned", "returned"]
    assert took < 75, f"the next run finished {took:.1f} s after the kill"
    print(f"return_to_service killed under its lock; the next run finished in {took:.1f} s")
    assert holder() != dead_holder  # taken over, then given back


def test_a_run_that_waited_for_the_lock_plans_again_under_it(api, small_pool):
    """A plan made before a wait for the lock is made again under it: a fault that clears while the run waits for
    another holder is not acted on."""
    names, runbook = small_pool(10, faulty=1)
    lock = runbook.vars["node_recovery_lock_name"]
    acquire(api, "default", lock, "someone-else", 60)
    proc = subprocess.Popen(runbook.command("recover"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=runbook.env(), cwd=runbook.tmp)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        # The plan's task reads the nodes (a moment) and then waits for the lock; that it planned before the fault
        # cleared is checked below: only then did it take the lock.
        wait_for(lambda: any(PLAN_TASK in line for line in lines), 120, "the run to plan and wait for the lock")
        time.sleep(3)
        localnodes.clear(names[0], api=api)  # the fault clears while the run waits
        time.sleep(1)
        release(api, "default", lock, "someone-else")
        proc.wait(timeout=300)
        reader.join(timeout=10)
    finally:
        proc.kill()
    output = "".join(lines)
    assert proc.returncode == 0, output[-4000:]
    assert plan_took_the_lock(output), output[-4000:]  # it planned to act on the node, then waited
    marks = our_marks(api, names[:1])[names[0]]
    assert not marks["annotations"] and not marks["taints"] and not marks["unschedulable"], marks
    assert not node_events(api, names[0], v.EVENT_ISOLATED)
    report = json.loads((runbook.tmp / "reports" / "latest-recover.json").read_text())
    assert not any(entry["name"] == names[0] and entry["outcome"] != "nothing to do" for entry in report["nodes"]), \
        report["nodes"]


def test_a_node_that_cannot_be_drained_is_named_while_the_rest_of_the_batch_finishes(api, small_pool, namespace):
    names, runbook = small_pool(6, faulty=0, replicas=2, min_available=2)
    held = running_pods(api, namespace, "app=svc")[0]["spec"]["nodeName"]
    free = [n for n in names if n != held and not any(p["spec"]["nodeName"] == n
                                                       for p in running_pods(api, namespace, "app=svc"))][:2]
    for name in [held, *free]:
        localnodes.set_condition(name, "NT_NPU_OTHER", "True", ago=localnodes.parse_duration("10m"), api=api)
    run = runbook.run("recover", extra={"drain_timeout": 5, "node_recovery_max_parallel": 8,
                                        "node_recovery_max_unhealthy": 3})
    assert run.returncode != 0
    assert f"{held} (not drained:" in run.stdout and "PodDisruptionBudget" in run.stdout, run.stdout[-4000:]
    for name in free:
        assert state_of(api, name) == "repair-pending", name
    assert state_of(api, held) == "draining"
    report = json.loads((runbook.tmp / "reports" / "latest-recover.json").read_text())
    failed = {n["name"]: n["outcome"] for n in report["nodes"] if n["failed"]}
    assert list(failed) == [held] and "the next run continues" in failed[held]
    # The run fails in its last task, after its report: the lock is given back all the same, not left to lapse.
    lease = api.get(f"/apis/coordination.k8s.io/v1/namespaces/default/leases/{runbook.vars['node_recovery_lock_name']}")
    assert not lease["spec"].get("holderIdentity"), lease["spec"]


def test_a_run_killed_during_a_drain_is_finished_by_a_run_started_right_after(api, small_pool, namespace):
    # A budget that allows no disruption keeps the drain waiting; the run is killed meanwhile, with its
    # lock held (and kept alive) for it; a new run starts at once and must wait out the dead lock.
    names, runbook = small_pool(4, faulty=0, replicas=2, min_available=2)
    victim = running_pods(api, namespace, "app=svc")[0]["spec"]["nodeName"]
    localnodes.set_condition(victim, "NT_NPU_OTHER", "True", ago=localnodes.parse_duration("10m"), api=api)
    runbook.vars.update(drain_timeout=300)
    proc = subprocess.Popen(runbook.command("recover"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=runbook.env(), cwd=runbook.tmp, start_new_session=True)
    wait_for(lambda: state_of(api, victim) == "draining", 180, "the drain to start")
    kill_with_descendants(proc.pid)  # the whole tree, as a lost execution node: Ansible's worker is a session of its own
    proc.communicate()
    killed_at = time.monotonic()
    assert state_of(api, victim) == "draining"
    lease_path = f"/apis/coordination.k8s.io/v1/namespaces/default/leases/{runbook.vars['node_recovery_lock_name']}"
    dead = api.get(lease_path)["spec"]
    assert dead["holderIdentity"].startswith("recover-")  # the killed run's hold stands until it is seen to lapse
    api.patch(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/svc", {"spec": {"minAvailable": 1}})
    run = runbook.run("recover")
    took = time.monotonic() - killed_at
    assert run.returncode == 0, run.stdout[-4000:]
    assert state_of(api, victim) == "repair-pending"
    after = api.get(lease_path)["spec"]
    assert after["leaseTransitions"] == dead.get("leaseTransitions", 0) + 1  # taken over from the dead run
    assert took < 90, f"the next run needed {took:.0f}s to finish the job"
    wait_for(lambda: len(running_pods(api, namespace, "app=svc")) == 2, 60, "the service back at 2 replicas")


def _rbac_documents(prefix: str, drop: tuple[str, str] | None = None) -> tuple[list[dict], list[dict]]:
    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    cluster_rules = next(d for d in docs if d["kind"] == "ClusterRole")["rules"]
    lease_rules = next(d for d in docs if d["kind"] == "Role")["rules"]
    if drop:
        resource, verb = drop
        for rule in cluster_rules:
            if resource in rule["resources"]:
                rule["verbs"] = [x for x in rule["verbs"] if x != verb]
        cluster_rules = [rule for rule in cluster_rules if rule["verbs"]]
    return cluster_rules, lease_rules


def _as_service_account(api, namespace, directory, name, drop=None) -> dict:
    cluster_rules, lease_rules = _rbac_documents(name, drop)
    kubeconfig = service_account_kubeconfig(api, namespace, name, cluster_rules, directory)
    role = f"{namespace}-{name}-lock"
    api.request("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
                body={"metadata": {"name": role}, "rules": lease_rules})
    api.request("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", body={
        "metadata": {"name": role}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]})
    token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]
    # What AWX's Kubernetes bearer token credential injects.
    return {"K8S_AUTH_HOST": localcluster.status()["server"], "K8S_AUTH_API_KEY": token,
            "K8S_AUTH_SSL_CA_CERT": str(localcluster.STATE_DIR / "pki" / "ca.crt"), "K8S_AUTH_VERIFY_SSL": "yes",
            "_token": token}


def test_runs_as_a_service_account_bound_only_to_the_shipped_role(api, small_pool, namespace, tmp_path_factory):
    names, runbook = small_pool(10, faulty=1, replicas=2, min_available=1)
    # The credentials live apart from the run's directory, which must not contain the token afterwards.
    creds = _as_service_account(api, namespace, tmp_path_factory.mktemp("credentials"), "recoverer")
    token = creds.pop("_token")
    env = dict(runbook.env(**creds))
    env.pop("K8S_AUTH_KUBECONFIG")
    runbook.inventory.write_text(yaml.safe_dump({"plugin": "ai_infra.node_recovery.k8s_nodes",
                                                 "label_selector": runbook.selector}))
    run = runbook.run("recover", env=env)
    assert run.returncode == 0, run.stdout[-5000:]
    assert state_of(api, names[0]) == "repair-pending"
    assert token not in run.stdout + run.stderr
    for path in runbook.tmp.rglob("*"):
        if path.is_file():
            assert token not in path.read_text(errors="replace"), path


def test_a_role_missing_a_verb_fails_naming_it(api, small_pool, namespace, tmp_path_factory):
    names, runbook = small_pool(10, faulty=0, replicas=2, min_available=1)
    # The faulty node must carry a replica: the eviction right is checked for the pods to evict.
    carrier = running_pods(api, namespace, "app=svc")[0]["spec"]["nodeName"]
    localnodes.set_condition(carrier, "NT_NPU_OTHER", "True", ago=localnodes.parse_duration("10m"), api=api)
    creds = _as_service_account(api, namespace, tmp_path_factory.mktemp("credentials"), "no-evict",
                                drop=("pods/eviction", "create"))
    creds.pop("_token")
    env = dict(runbook.env(**creds))
    env.pop("K8S_AUTH_KUBECONFIG")
    # The inventory reads through the same credentials (an inventory's kubeconfig would be handed to the run).
    runbook.inventory.write_text(yaml.safe_dump({"plugin": "ai_infra.node_recovery.k8s_nodes",
                                                 "label_selector": runbook.selector}))
    run = runbook.run("recover", env=env)
    assert run.returncode != 0
    assert "may not create pods/eviction" in run.stdout, run.stdout[-4000:]
    assert "Traceback" not in run.stdout + run.stderr


def test_hot_spare_replaces_the_isolated_node_and_the_run_is_announced(api, small_pool):
    names, runbook = small_pool(6, faulty=1)
    spare = names[-1]
    standby = run_module("node_spare", {"state": "standby", "name": spare, "kubeconfig": runbook.kubeconfig})
    assert standby["changed"] is True, standby.get("msg")
    secret = "Bearer hook-secret-123"
    with receiving() as url:
        run = runbook.run("recover", extra={
            "isolate_hot_spare": True,
            "report_notify_url": f"{url}/hooks/T0/secret-path",
            "report_notify_headers": {"Authorization": secret}})
    assert run.returncode == 0, run.stdout[-4000:]
    spare_node = node(api, spare)
    assert not [t for t in spare_node["spec"].get("taints") or [] if t["key"] == v.SPARE_TAINT_KEY]
    assert spare_node["metadata"]["annotations"][v.SPARE_FOR] == names[0]
    assert len(node_events(api, spare, v.EVENT_SPARE)) == 2  # put in reserve, then into service
    (posted,) = Receiver.received
    assert posted["headers"]["Authorization"] == secret
    assert posted["body"]["text"].startswith("node recovery recover ")
    assert [n["name"] for n in posted["body"]["nodes"]] == [names[0]]
    assert "secret-path" not in run.stdout and "hook-secret-123" not in run.stdout
    report = json.loads((runbook.tmp / "reports" / "latest-recover.json").read_text())
    assert f"hot spare {spare} brought into service in place of {names[0]}" in report["nodes"][0]["details"]
