"""Mean time to recovery with the recover playbook on a 1,000-node cluster (1, 10 and 50
faulty nodes), split by step, and how a run grows with the faulty nodes against how
it grows with the size of the cluster."""

from __future__ import annotations

import datetime as dt
import json
import resource
import statistics
import subprocess
import time
from pathlib import Path

import yaml

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client
from tools.localcluster import nodes, workloads

from . import REPO, bench_cluster, log, table, write_section

POOLS = 10
STEPS = ("isolated", "drained", "workloads_recovered", "handed_off")
MODULE_TIMED = ("drained", "workloads_recovered")  # steps whose module reports its own duration
NAMESPACE = "bench"
QUIET_SECONDS = 30


def _grow(api: Client, total: int, existing: int) -> None:
    per_pool = (total - existing) // POOLS
    manifests = []
    for p in range(POOLS):
        spec = nodes.Pool(f"pool{p}", "npu", per_pool)
        manifests += [nodes.node_manifest(spec, existing // POOLS + i) for i in range(per_pool)]
    nodes.create_nodes(manifests, api, workers=32)
    nodes.wait_ready([m["metadata"]["name"] for m in manifests], timeout=900, api=api, settle=True)
    time.sleep(QUIET_SECONDS)  # the controllers' and kwok's last work on the new nodes is not the run's


def _running(api: Client) -> list[dict]:
    return [p for p in api.list(f"/api/v1/namespaces/{NAMESPACE}/pods")
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


def _victims(api: Client, count: int, used: set[str]) -> list[str]:
    """Nodes carrying work, spread over the pools (so no pool reaches the storm brake)."""
    by_pool: dict[str, list[str]] = {}
    for pod in _running(api):
        node = pod["spec"]["nodeName"]
        if node not in used:
            by_pool.setdefault(node.rsplit("-", 1)[0], []).append(node)
    picked: list[str] = []
    faulty_in = {pool: sum(1 for n in used if n.rsplit("-", 1)[0] == pool) for pool in by_pool}
    while len(picked) < count:
        before = len(picked)
        for pool in sorted(by_pool, key=lambda p: (faulty_in[p], p)):  # the pools with the fewest faulty nodes first
            candidates = [n for n in sorted(set(by_pool[pool])) if n not in picked]
            if candidates and len(picked) < count:
                picked.append(candidates[0])
        if len(picked) == before:
            raise RuntimeError(f"only {len(picked)} unused nodes carry work, {count} faulty ones were asked for")
    return picked


# How a recover run finds its nodes: a k8s_nodes inventory of every node, one of only the nodes that
# need attention (as AWX recover jobs use it), or the faulty nodes named with no node inventory
# (as the event source and the watcher run it).
HOW = ("inventory", "attention", "named")
HOW_TEXT = {"inventory": "k8s_nodes inventory of every node",
            "attention": "k8s_nodes inventory of the nodes that need attention (`include_healthy: false`)",
            "named": "named nodes (`recover_nodes`), no node inventory"}


def _inventory(kubeconfig: Path, workdir: Path, how: str = "inventory") -> Path:
    """A k8s_nodes inventory source of the whole cluster (how='attention': its nodes that need attention)."""
    inventory = workdir / "bench.k8s_nodes.yml"
    inventory.write_text(yaml.safe_dump({"plugin": "ai_infra.node_recovery.k8s_nodes", "kubeconfig": str(kubeconfig),
                                         "include_healthy": how != "attention"}))
    return inventory


def _ansible_env(kubeconfig: Path) -> dict[str, str]:
    return {"K8S_AUTH_KUBECONFIG": str(kubeconfig), "ANSIBLE_LOCALHOST_WARNING": "false",
            "PATH": str(REPO / ".venv" / "bin") + ":/usr/bin:/bin", "HOME": str(Path.home())}


def _timed(command: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run a command; its wall time and the CPU time of its whole process tree (Ansible's forks and
    module processes are waited for, so their time adds up here). Wall time on two cores shared with
    the simulated cluster moves with the cluster's own work; the CPU time is the run's alone."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, **kwargs)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return proc, wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _recover(kubeconfig: Path, workdir: Path, label: str, parallel: int, victims: list[str],
             how: str = "inventory") -> tuple[float, float, dict]:
    """One recover run for the victims, found as HOW says: wall time, CPU time, report."""
    workdir.mkdir(parents=True, exist_ok=True)
    named = how == "named"
    extra = {**({"recover_nodes": victims} if named else {}),
             "node_recovery_report_dir": str(workdir / "reports"), "node_recovery_max_parallel": parallel,
             "repair_handoff_ticket_dir": str(workdir / "tickets"), "recover_workloads_wait_timeout": 300,
             "node_recovery_lock_name": f"bench-{label}",
             # No flap protection here: the run's own reaction time is measured, not the policy's wait.
             "node_recovery_classification": {"catalog": [{"type": "NT_NPU_ECC_COUNT", "min_duration": 0}]}}
    source = [] if named else ["-i", str(_inventory(kubeconfig, workdir, how))]
    proc, wall, cpu = _timed([str(REPO / ".venv/bin/ansible-playbook"), *source, "ai_infra.node_recovery.recover",
                              "-e", json.dumps(extra)], env=_ansible_env(kubeconfig), cwd=workdir)
    if proc.returncode != 0:
        raise RuntimeError(f"recover failed ({label}): {proc.stdout[-3000:]}")
    return wall, cpu, json.loads((workdir / "reports" / "latest-recover.json").read_text())


def _load_inventory(kubeconfig: Path, workdir: Path, how: str) -> float:
    """What reading the k8s_nodes inventory costs a run: the CPU time of ansible-playbook with it and
    a play of no tasks (median of 3)."""
    workdir.mkdir(parents=True, exist_ok=True)
    inventory = _inventory(kubeconfig, workdir, how)
    playbook = workdir / "nothing.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Nothing", "hosts": "localhost", "gather_facts": False, "tasks": []}]))
    times = []
    for _ in range(3):
        proc, _wall, cpu = _timed([str(REPO / ".venv/bin/ansible-playbook"), "-i", str(inventory), str(playbook)],
                                  env=_ansible_env(kubeconfig), cwd=workdir)
        if proc.returncode != 0:
            raise RuntimeError(f"reading the inventory failed: {proc.stdout[-3000:]}")
        times.append(cpu)
    return statistics.median(times)


def _when(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _steps(report: dict) -> dict[str, tuple[float, float | None]]:
    """Per step, the mean wall time since the step before it (Ansible's own work included), and the
    mean time the step's module reported for itself where it reports one (drain, workloads)."""
    wall: dict[str, list[float]] = {s: [] for s in STEPS}
    own: dict[str, list[float]] = {s: [] for s in MODULE_TIMED}
    for node in report["nodes"]:
        previous = None
        for step in node["timeline"]:
            if step["step"] in wall and previous is not None:
                wall[step["step"]].append((_when(step["at"]) - previous).total_seconds())
            if step["step"] in own and step["seconds"] is not None:
                own[step["step"]].append(step["seconds"])
            previous = _when(step["at"])
    return {s: (statistics.mean(wall[s]) if wall[s] else 0.0, statistics.mean(own[s]) if own.get(s) else None)
            for s in STEPS}


def _cell(wall: float, own: float | None) -> str:
    return f"{wall:.1f} s" + (f" ({own:.1f} s)" if own is not None else "")


def run(quick: bool = False) -> None:
    sizes = (300, 600) if quick else (1000, 3000)
    counts = (1, 5) if quick else (1, 10, 50)
    rows, growth, run_seconds, run_cpu = [], [], {}, {}
    work = REPO / ".localcluster-bench-runbook" / "runs"
    # Slow heartbeats: the figures are the run's, not the CPU kwok and the apiserver spend keeping
    # thousands of simulated nodes alive on the same two cores.
    with bench_cluster("runbook", heartbeat_seconds=600, lease_seconds=600) as (kubeconfig, _env):
        api = Client({"kubeconfig": str(kubeconfig)}, pool_size=64)
        log(f"creating {sizes[0]} nodes in {POOLS} pools")
        _grow(api, sizes[0], 0)
        api.request("POST", "/api/v1/namespaces", body={"metadata": {"name": NAMESPACE}})
        time.sleep(3)
        for p in range(POOLS):
            workloads.apply(api, workloads.inference_service(f"svc{p}", NAMESPACE, replicas=sizes[0] // POOLS // 2,
                                                             node_selector={nodes.POOL_LABEL: f"pool{p}"}, accelerators=4,
                                                             min_available=0))
        deadline = time.monotonic() + 600
        while len(_running(api)) < sizes[0] // 2 and time.monotonic() < deadline:
            time.sleep(2)
        used: set[str] = set()

        def scenario(count: int, label: str, how: str = "inventory") -> tuple[float, float, dict, float]:
            victims = _victims(api, count, used)
            used.update(victims)
            injected = time.monotonic()
            nodes.set_condition(victims, "NT_NPU_ECC_COUNT", "True", api=api)
            wall, cpu, report = _recover(kubeconfig, work / label, label, parallel=10, victims=victims, how=how)
            return wall, cpu, report, time.monotonic() - injected

        def growth_rows(size: int) -> dict[str, float]:
            # The least of two runs each, alternating, so a burst of cluster work does not count against one.
            runs: dict[str, list[tuple[float, float]]] = {how: [] for how in HOW}
            for attempt in range(2):
                for how in HOW:
                    wall, cpu, _report, _mttr = scenario(counts[1], f"{size}-{counts[1]}-{how}-{attempt}", how)
                    runs[how].append((wall, cpu))
            figures = {}
            for how, measured in runs.items():
                figures[f"wall {how}"] = min(wall for wall, _cpu in measured)
                figures[f"cpu {how}"] = min(cpu for _wall, cpu in measured)
                if how != "named":
                    figures[f"reading {how}"] = _load_inventory(kubeconfig, work / f"load-{size}-{how}", how)
                growth.append([f"{size:,}", f"{counts[1]}", HOW_TEXT[how], f"{figures[f'wall {how}']:.1f} s",
                               f"{figures[f'cpu {how}']:.1f} s",
                               f"{figures[f'reading {how}']:.1f} s" if how != "named" else "none"])
            return figures

        for count in counts:
            log(f"{count} faulty of {sizes[0]}")
            seconds, cpu, report, mttr = scenario(count, f"{sizes[0]}-{count}")
            steps = _steps(report)
            run_seconds[count], run_cpu[count] = seconds, cpu
            rows.append([f"{count}", f"{mttr:.0f} s", f"{seconds:.0f} s", f"{cpu:.0f} s"]
                        + [_cell(*steps[s]) for s in STEPS])
        log(f"{counts[1]} faulty of {sizes[0]}, found in each of the ways {', '.join(HOW)}, twice each")
        small = growth_rows(sizes[0])
        log(f"growing the cluster to {sizes[1]}")
        _grow(api, sizes[1], sizes[0])
        large = growth_rows(sizes[1])
        per_faulty = {figures: (by_count[counts[-1]] - by_count[counts[-2]]) / (counts[-1] - counts[-2])
                      for figures, by_count in (("wall", run_seconds), ("cpu", run_cpu))}
    write_section("runbook", "Mean time to recovery (recover playbook)",
                  _section(sizes, counts, rows, growth, small, large, per_faulty, repeat_cpu=run_cpu[counts[1]]))


def _section(sizes: tuple[int, int], counts: tuple[int, ...], rows: list[list[str]], growth: list[list[str]],
             small: dict[str, float], large: dict[str, float], per_faulty: dict[str, float],
             repeat_cpu: float) -> str:
    """The section's text; repeat_cpu is the CPU time of the MTTR table's run that repeats the first growth
    row's configuration (same faulty count, same size, inventory of every node): how far identical runs differ."""
    per_node_ms = {key: (large[key] - small[key]) / (sizes[1] - sizes[0]) * 1000 for key in small}
    return (f"{sizes[0]:,} kwok nodes in {POOLS} pools, an inference Deployment per pool (half the nodes carry a "
            "replica); each faulty node gets `NT_NPU_ECC_COUNT=True` (action repair; its minimum duration set to 0 so "
            "the figures are the run's own reaction, not the flap-protection wait). "
            "The recover playbook runs with `max_parallel` 10. MTTR: from the "
            "injection to the end of the run, when every affected workload is running elsewhere and every node is "
            "handed to repair. Step times are means per node of the wall time since the step before it, Ansible's own "
            "work included (isolate: from the fault's lastTransitionTime, so it includes starting the playbook, the "
            "lock and the plan, and waiting for the node's batch); in brackets the time the drain and workload "
            "modules reported for their own work.\n\n"
            + table(["faulty nodes", "MTTR", "recover run", "its CPU time", "isolate", "drain", "workloads running again",
                     "hand-off"], rows)
            + f"\n\nEach faulty node beyond the first {counts[-2]} added {per_faulty['wall']:.1f} s to the run "
              f"({per_faulty['cpu']:.1f} s of CPU): "
              "Ansible runs each node through the roles' tasks, each module a process of its own on the same two "
              "cores, and nodes beyond `max_parallel` wait for a batch."
            + f"\n\n### The same {counts[1]} faulty nodes in a larger cluster\n\n"
            + table(["cluster nodes", "faulty nodes", "the run finds its nodes in", "recover run (wall)",
                     "CPU time of the run's processes", "of which reading the inventory (CPU)"], growth)
            + "\n\nThe plan reads every node (the storm brake judges whole pools) inside one module, which hands "
              "Ansible only the unhealthy nodes and the per-pool counts; the planning play runs on the nodes asked "
              "for, not on every host of the inventory; every later step touches only the faulty nodes. "
              "The CPU time is the run's own cost: wall time on two cores shared with the simulated cluster also "
              "moves with the work the control plane and kwok do for the cluster's nodes. "
              f"Each node of the larger cluster changed the CPU time of the run for named nodes (as the event "
              f"source and the watcher run it) by {per_node_ms['cpu named']:+.2f} ms, of the run over the inventory "
              f"of the nodes that need attention (as the AWX recover job runs it) by "
              f"{per_node_ms['cpu attention']:+.2f} ms, and of the run over an inventory of every node by "
              f"{per_node_ms['cpu inventory']:+.2f} ms, {per_node_ms['reading inventory']:+.2f} ms of which is "
              "Ansible reading that inventory (every host and its variables, before the first task). "
              f"So {sizes[1] - sizes[0]:,} more nodes changed these runs by "
              f"{large['cpu named'] - small['cpu named']:+.1f} s, "
              f"{large['cpu attention'] - small['cpu attention']:+.1f} s and "
              f"{large['cpu inventory'] - small['cpu inventory']:+.1f} s of CPU, against "
              f"{per_faulty['cpu']:.1f} s for each further faulty node; two identical runs differ by several seconds "
              f"too (the MTTR table's run of {counts[1]} faulty nodes repeats the first row: {repeat_cpu:.0f} s "
              f"against {small['cpu inventory']:.1f} s), partly because the modules that wait (drain, workloads) poll for as "
              "long as the cluster takes. Beyond reading it, an inventory of every node "
              "costs the run through Ansible's process model: every task forks the controller, which holds every host "
              "of the inventory, so each of the some 35 tasks per faulty node gets slower as the inventory grows; "
              "hence `include_healthy: false` for recover and return_to_service jobs. "
              "The cluster runs with slow kwok heartbeats "
              "(600 s), each figure is the least of two runs, and the larger cluster is measured once its new nodes "
              f"are settled and {QUIET_SECONDS} s have passed, so that these figures are the run's own and not the "
              "CPU the simulated nodes take on the same two cores.\n")
