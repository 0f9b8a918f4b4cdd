"""Mean time to recovery with the recover playbook on a 1,000-node cluster whose services are
spread over the faulty nodes (1, 8, 32 and 64 faulty nodes), side by side with the kubectl
floor (a shell that taints and drains the same number of nodes in parallel), split by step;
and how a run grows with the size of the cluster (1,000 -> 3,000 nodes) for the three ways a
run finds its nodes."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client

from . import REPO, bench_cluster, log, median_item, table, write_section
from ._scenario import (
    CLASSIFICATION,
    POOLS,
    PodWatch,
    affected,
    fronts,
    grow,
    inject,
    populate,
    restore,
    run_floor,
    victims,
    whole_again,
)

STEPS = ("isolated", "drained", "workloads_recovered", "handed_off")
STEP_TEXT = {"isolated": "isolate", "drained": "drain", "workloads_recovered": "workloads running again",
             "handed_off": "hand-off"}
QUIET_SECONDS = 30
GOAL_RATIO = 2.0  # ours within 2x the kubectl floor at every size
GOAL_PER_NODE = 0.5  # seconds each faulty node beyond the first may add
RUN_TIMEOUT = 1800

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
    """The environment of the benchmark's Ansible runs: nothing of the caller's but ANSIBLE_COLLECTIONS_PATH
    (to benchmark another copy of the collection than the working tree the virtualenv links)."""
    env = {"K8S_AUTH_KUBECONFIG": str(kubeconfig), "ANSIBLE_LOCALHOST_WARNING": "false",
           "PATH": str(REPO / ".venv" / "bin") + ":/usr/bin:/bin", "HOME": str(Path.home())}
    if os.environ.get("ANSIBLE_COLLECTIONS_PATH"):
        env["ANSIBLE_COLLECTIONS_PATH"] = os.environ["ANSIBLE_COLLECTIONS_PATH"]
    return env


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(command: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run a command; its wall time and the CPU time of its whole process tree (Ansible's forks and
    module processes are waited for, so their time adds up here). Wall time on two cores shared with
    the simulated cluster moves with the cluster's own work; the CPU time is the run's alone."""
    before = _children_cpu()
    started = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT, **kwargs)
    return proc, time.monotonic() - started, _children_cpu() - before


def _recover(kubeconfig: Path, workdir: Path, label: str, parallel: int, faulty: list[str],
             how: str = "inventory", extra_env: dict[str, str] | None = None) -> tuple[float, float, dict]:
    """One recover run for the faulty nodes, found as HOW says: wall time, CPU time, report."""
    workdir.mkdir(parents=True, exist_ok=True)
    named = how == "named"
    extra = {**({"recover_nodes": faulty} if named else {}),
             "node_recovery_report_dir": str(workdir / "reports"), "node_recovery_max_parallel": parallel,
             "repair_handoff_ticket_dir": str(workdir / "tickets"), "recover_workloads_wait_timeout": 300,
             "node_recovery_lock_name": f"bench-{label}",
             # No flap protection here: the run's own reaction time is measured, not the policy's wait.
             "node_recovery_classification": CLASSIFICATION}
    source = [] if named else ["-i", str(_inventory(kubeconfig, workdir, how))]
    proc, wall, cpu = _timed([str(REPO / ".venv/bin/ansible-playbook"), *source, "ai_infra.node_recovery.recover",
                              "-e", json.dumps(extra)], env={**_ansible_env(kubeconfig), **(extra_env or {})},
                              cwd=workdir)
    if proc.returncode != 0:
        raise RuntimeError(f"recover failed ({label}): {proc.stdout[-3000:]}")
    return wall, cpu, json.loads((workdir / "reports" / "latest-recover.json").read_text())


def _written(workdir: Path, report: dict) -> float:
    """When a run's paperwork was done: the last change to its tickets and to its report's files."""
    stem = f"{report['playbook']}-{report['run_id']}."
    files = [path for path in (workdir / "tickets").rglob("*") if path.is_file()]
    files += [path for path in (workdir / "reports").iterdir() if path.name.startswith(stem)]
    return max(path.stat().st_mtime for path in files)


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


class Bench:
    """The 1,000-node cluster, its spread services and the pod watch, and the runs made on it."""

    def __init__(self, api: Client, kubeconfig: Path, watch: PodWatch, wanted: dict[str, int], work: Path) -> None:
        self.api, self.kubeconfig, self.watch, self.wanted, self.work = api, kubeconfig, watch, wanted, work
        self.used: set[str] = set()

    def pick(self, count: int) -> list[str]:
        picked = victims(self.api, count, self.used)
        self.used.update(picked)
        return picked

    def ours(self, count: int, label: str, parallel: int, how: str = "named",
             extra_env: dict[str, str] | None = None) -> dict:
        """The fault injected on fresh nodes and the recover run for them: MTTR from the injection to the
        tickets and the report written or to the services whole again, whichever is later (and, beside it, to
        the process's end instead of the paperwork's)."""
        faulty = self.pick(count)
        services = affected(self.api, faulty)
        goal = self.watch.expect(whole_again(self.wanted, services, faulty))
        injected = inject(self.api, faulty)
        wall, cpu, report = _recover(self.kubeconfig, self.work / label, label, parallel, faulty, how, extra_env)
        ended = time.time()
        whole = goal.wait(300, f"the services of {label} to be whole again")
        tickets = len(list((self.work / label / "tickets").glob("*.json")))
        written = _written(self.work / label, report)
        restore(self.api, faulty)  # repaired and returned: the next runs start from a healthy cluster
        return {"started": injected, "ended": ended, "written": written, "whole": whole,
                "mttr": max(written, whole) - injected, "mttr_ended": max(ended, whole) - injected,
                "run": wall, "cpu": cpu, "report": report, "tickets": tickets, "faulty": count,
                "services": len(services)}

    def floor(self, count: int) -> dict:
        """The kubectl floor on fresh nodes; put back afterwards."""
        faulty = self.pick(count)
        services = affected(self.api, faulty)
        before = _children_cpu()
        measured = run_floor(self.kubeconfig, faulty, services, self.watch, self.wanted)
        measured["cpu"] = _children_cpu() - before
        measured["services"] = len(services)
        restore(self.api, faulty)
        return measured


@contextlib.contextmanager
def spread_cluster(name: str, size: int, work: Path) -> Iterator[Bench]:
    """A private cluster of `size` nodes with the spread services running and a pod watch on them, settled."""
    # Slow heartbeats: the figures are the run's, not the CPU kwok and the apiserver spend keeping
    # thousands of simulated nodes alive on the same two cores.
    with bench_cluster(name, heartbeat_seconds=600, lease_seconds=600) as (kubeconfig, _env):
        api = Client({"kubeconfig": str(kubeconfig)}, pool_size=64)
        wanted = populate(api, size)
        watch = PodWatch(kubeconfig)
        watch.start()
        watch.listed.wait(60)
        watch.check()
        time.sleep(QUIET_SECONDS)
        try:
            yield Bench(api, kubeconfig, watch, wanted, work)
        finally:
            watch.stop()


def _split(measured: dict) -> dict[str, float | None]:
    """Where one of our runs spent its time, from the report's timeline: for each step, from the moment
    the step before it was finished on every node (the injection for the first) until this step was
    finished on every node; the paperwork (the lock released, the report written) after the last, then the
    process's exit; the module's own mean time per node beside."""
    front = fronts(measured["report"], STEPS)
    split: dict[str, float | None] = {}
    previous = measured["started"]
    first_start = front["isolated"]["first_start"]
    split["start"] = first_start - previous if first_start is not None else None
    if first_start is not None:
        previous = first_start
    for step in STEPS:
        end = front[step]["last_end"]
        split[step] = end - previous if end is not None else None
        split[f"{step} own"] = front[step]["own"]
        previous = end if end is not None else previous
    split["written"] = measured["written"] - previous
    split["exit"] = measured["ended"] - measured["written"]
    split["whole"] = measured["whole"] - measured["started"]
    return split


def _s(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f} s"


def _per_node(by_count: dict[int, float]) -> dict[int, float]:
    """What each faulty node beyond the first added, from one faulty node to each larger count."""
    first = min(by_count)
    return {n: (by_count[n] - by_count[first]) / (n - first) for n in by_count if n != first}


def _typical(runs: list[dict], key: str = "mttr") -> dict:
    return median_item(runs, key=lambda m: m[key])


def mttr_section(counts: tuple[int, ...], parallel: int, size: int, floors: dict[int, list[dict]],
                 ours: dict[int, list[dict]]) -> str:
    """The MTTR part of the section: figures, goals and whether they are met, all from the measurements.

    Judged on the medians: the floor has two modes at one node (kubectl drain's first look finds the pod gone, or
    it waits a second for the next look), and the least of a few runs compares whichever lucky runs happened."""
    floor = {n: _typical(floors[n])["mttr"] for n in counts}
    typical = {n: _typical(ours[n])["mttr"] for n in counts}
    ratio = {n: typical[n] / floor[n] for n in counts}
    ratio_ended = {n: _typical(ours[n], "mttr_ended")["mttr_ended"] / floor[n] for n in counts}
    ratio_least = {n: min(m["mttr"] for m in ours[n]) / min(m["mttr"] for m in floors[n]) for n in counts}
    per_ours, per_floor = _per_node(typical), _per_node(floor)
    runs = min(len(v) for v in ours.values())
    exits = [m["ended"] - m["written"] for v in ours.values() for m in v]
    rows = [[f"{n}", ", ".join(_s(m["mttr"]) for m in floors[n]), ", ".join(_s(m["mttr"]) for m in ours[n]),
             f"{_s(floor[n])} / {_s(typical[n])}", f"**{ratio[n]:.1f}x**", f"{ratio_least[n]:.1f}x",
             ", ".join(_s(m["mttr_ended"]) for m in ours[n]), f"{ratio_ended[n]:.1f}x",
             _s(per_floor.get(n), 2) if n in per_floor else "",
             _s(per_ours.get(n), 2) if n in per_ours else ""] for n in counts]
    text = (f"{size:,} kwok nodes in {POOLS} pools, an inference Deployment per pool with a replica on half its "
            "nodes at most one per node (required anti-affinity on the hostname) and a PodDisruptionBudget of "
            "`maxUnavailable: 20%`; every faulty node carries a replica, and the faulty nodes of a run are spread "
            "over the pools. For each count the **kubectl floor** and **ours** take turns, which of them goes first "
            f"alternating from round to round ({runs} runs each, at one node {len(ours[min(counts)])}, on fresh nodes "
            "each time; the nodes are put back afterwards):\n\n"
            "- kubectl floor: `tools/bench/kubectl_floor.sh`, a shell that taints every node and runs `kubectl "
            "drain --ignore-daemonsets --delete-emptydir-data --timeout=300s` for all of them in parallel, then "
            "`kubectl wait`s until the Deployments they carried are available again;\n"
            f"- ours: `{CLASSIFICATION['catalog'][0]['type']}=True` written on every faulty node at once (action "
            "repair; its `min_duration` set to 0 through `node_recovery_classification`, so the figure is the run's "
            "own reaction, not the flap-protection wait), then `ansible-playbook ai_infra.node_recovery.recover "
            "-e '{\"recover_nodes\": [...], ...}'` with no node inventory, as the event source and the watcher "
            f"run it, `node_recovery_max_parallel` {parallel} (every faulty node in one batch).\n\n"
            "MTTR, as the issue defines it: from the fault injected (the floor: from the shell's start) until "
            "every replica of the affected Deployments runs Ready on a schedulable node as a watch on the pods "
            "shows it, and the work is done, whichever is later: the floor's shell has ended; ours has written the "
            "tickets and the run report (the last change to those files). After that our process still prints "
            f"the report, sets its exit status and exits (Python's teardown), {min(exits):.1f}-{max(exits):.1f} s in "
            "these runs: the MTTR to the process's end is beside it. The figures compared are the medians of each "
            "method's runs (the lower middle one of an even count: of two runs, the lesser); the ratio of the least runs "
            "is beside them. "
            "At one node the floor has two modes: about 0.5 s when `kubectl drain`'s first look finds the evicted "
            "pod already gone (kwok deletes it at once), 1.4-1.5 s when it waits a second for its next look. "
            "The least of a few runs compares whichever lucky runs happened; the median, the typical run.\n\n"
            + table(["faulty nodes", "kubectl floor", "ours", "medians (floor / ours)", "ours / floor (medians)",
                     "ours / floor (least runs)", "ours, to the process's end",
                     "to the process's end / floor (medians)", "floor: added per faulty node beyond the first",
                     "ours: added per faulty node beyond the first"], rows))
    largest, first = max(counts), min(counts)
    ratio_met = all(r <= GOAL_RATIO for r in ratio.values())
    worst = max(counts, key=lambda n: ratio[n])
    text += (f"\n\nGoal: ours within {GOAL_RATIO:g}x the floor at every size (medians): "
             + ("**met**" if ratio_met else "**not met**")
             + f" (at most {ratio[worst]:.1f}x, at {worst} faulty node(s)"
             + ("" if ratio_met else "; over at " + ", ".join(f"{n} ({ratio[n]:.1f}x)" for n in counts
                                                                  if ratio[n] > GOAL_RATIO)) + "; to the "
             + f"process's end at most {max(ratio_ended.values()):.1f}x; by the least runs at most "
             + f"{max(ratio_least.values()):.1f}x). ")
    if per_ours:
        slope = per_ours[largest]
        text += (f"Goal: each faulty node beyond the first adds under {GOAL_PER_NODE:g} s (medians): "
                 + ("**met**" if slope < GOAL_PER_NODE else "**not met**")
                 + f" (from {first} to {largest} faulty nodes ours added {slope:.2f} s per node, "
                   f"{typical[largest] - typical[first]:+.1f} s in all; the floor {per_floor[largest]:.2f} s).")
    return text


def split_section(counts: tuple[int, ...], floors: dict[int, list[dict]], ours: dict[int, list[dict]]) -> str:
    """Where the time goes, in the run of each method whose MTTR is the median the MTTR table compares."""
    rows, has_start = [], False
    for n in counts:
        run = _typical(ours[n])
        split = _split(run)
        has_start = has_start or split["start"] is not None
        rows.append([f"{n}", _s(split["start"]), *(
            _s(split[s]) + (f" ({split[f'{s} own']:.1f} s)" if split[f"{s} own"] is not None else "")
            for s in STEPS), _s(split["written"]), _s(split["exit"]), _s(split["whole"]), _s(run["mttr"]),
            f"{run['cpu']:.0f} s"])
    floor_rows = []
    for n in counts:
        run = _typical(floors[n])
        drained = run["drained"] - run["started"] if run["drained"] else None
        floor_rows.append([f"{n}", _s(drained), _s(run["whole"] - run["started"]), _s(run["ended"] - run["started"]),
                           _s(run["mttr"]), f"{run['cpu']:.1f} s"])
    tickets_ok = all(m["tickets"] >= m["faulty"] for runs in ours.values() for m in runs)
    return ("### Where the time goes\n\n"
            "Ours, from the report's per-node timeline (a step ends at its `finished`, else its `at`; it starts "
            "at its `started`, else its end less its `seconds`; the module's own time is the difference): "
            "each column "
            "runs from the moment the step before it was done on every faulty node (the injection for the "
            "first) until this step was done on every faulty node"
            + (" (isolate from the earliest start of isolation; before it, starting ansible-playbook, the lock "
               "and the plan)" if has_start else
               "; steps carry no start time, so isolate includes starting ansible-playbook, the lock and the plan")
            + "; in brackets the mean time the step's module reported for its own work on a node. "
            "The last columns say when the services were whole again as the pod watch saw it, the MTTR, and the "
            "CPU time of the run's processes.\n\n"
            + table(["faulty nodes", "start-up, lock, plan", *(STEP_TEXT[s] for s in STEPS),
                     "lock released, report written", "then to the process's end",
                     "services whole (from the injection)", "MTTR", "CPU"], rows)
            + "\n\nThe kubectl floor, from the shell's start:\n\n"
            + table(["faulty nodes", "every drain returned", "services whole", "shell ended", "MTTR", "CPU"],
                    floor_rows)
            + "\n\n" + ("Every run of ours wrote a repair ticket for each faulty node."
                        if tickets_ok else "Some runs of ours wrote fewer repair tickets than faulty nodes: "
                        + ", ".join(f"{m['tickets']} of {m['faulty']}" for runs in ours.values() for m in runs
                                    if m["tickets"] < m["faulty"]) + ".") + "\n\n")


def growth_section(sizes: tuple[int, int], growth_faulty: int, growth: list[list[str]], small: dict[str, float],
                   large: dict[str, float], per_faulty_cpu: float | None) -> str:
    per_node_ms = {key: (large[key] - small[key]) / (sizes[1] - sizes[0]) * 1000 for key in small}
    against = (f", against {per_faulty_cpu:.1f} s for each further faulty node in the MTTR runs"
               if per_faulty_cpu is not None else "")
    return (f"### The same {growth_faulty} faulty nodes in a larger cluster\n\n"
            + table(["cluster nodes", "faulty nodes", "the run finds its nodes in", "recover run (wall)",
                     "CPU time of the run's processes", "of which reading the inventory (CPU)"], growth)
            + f"\n\n`node_recovery_max_parallel` {growth_faulty}. The plan reads every node (the storm brake judges "
              "whole pools) inside one module, which hands Ansible only the unhealthy nodes and the per-pool counts; "
              "the planning play runs on the nodes asked for, not on every host of the inventory; every later step "
              "touches only the faulty nodes. The CPU time is the run's own cost: wall time on two cores shared with "
              "the simulated cluster also moves with the work the control plane and kwok do for the cluster's nodes. "
              f"Each node of the larger cluster changed the CPU time of the run for named nodes (as the event "
              f"source and the watcher run it) by {per_node_ms['cpu named']:+.2f} ms, of the run over the inventory "
              f"of the nodes that need attention (as the AWX recover job runs it) by "
              f"{per_node_ms['cpu attention']:+.2f} ms, and of the run over an inventory of every node by "
              f"{per_node_ms['cpu inventory']:+.2f} ms, {per_node_ms['reading inventory']:+.2f} ms of which is "
              "Ansible reading that inventory (every host and its variables, before the first task). "
              f"So {sizes[1] - sizes[0]:,} more nodes changed these runs by "
              f"{large['cpu named'] - small['cpu named']:+.1f} s, "
              f"{large['cpu attention'] - small['cpu attention']:+.1f} s and "
              f"{large['cpu inventory'] - small['cpu inventory']:+.1f} s of CPU{against}; identical runs differ by "
              "seconds too, partly because the modules that wait (drain, workloads) poll for as long as the cluster "
              "takes. The cluster runs with slow kwok heartbeats (600 s), each figure is the least of two runs, "
              f"and the larger cluster is measured once its new nodes are settled and {QUIET_SECONDS} s have passed, "
              "so that these figures are the run's own and not the CPU the simulated nodes take on the same two "
              "cores.\n")


def run(quick: bool = False) -> None:
    sizes = (200, 400) if quick else (1000, 3000)
    counts = (1, 4) if quick else (1, 8, 32, 64)
    # Five rounds at one node, where the floor has two modes; two at the larger counts, whose floor waits for the
    # slowest of many drains. Every run takes fresh nodes that carry work, and the cluster has 500 such nodes.
    rounds = {n: (3 if quick else 5) if n == 1 else 2 for n in counts}
    parallel = max(counts)
    growth_faulty = 4 if quick else 10
    work = REPO / ".localcluster-bench-runbook" / "runs"
    floors: dict[int, list[dict]] = {n: [] for n in counts}
    ours: dict[int, list[dict]] = {n: [] for n in counts}
    growth: list[list[str]] = []
    load: list[float] = []
    with spread_cluster("runbook", sizes[0], work) as bench:
        api, kubeconfig = bench.api, bench.kubeconfig
        for attempt in range(max(rounds.values())):
            for n in (n for n in counts if attempt < rounds[n]):
                # ABBA: the floor first in even rounds, ours first in odd ones, so a drift of the machine's
                # load does not favour one method.
                order = ("floor", "ours") if attempt % 2 == 0 else ("ours", "floor")
                for method in order:
                    load.append(_loadavg())
                    log(f"round {attempt + 1}: {n} faulty of {sizes[0]}, {method}")
                    if method == "floor":
                        floors[n].append(bench.floor(n))
                    else:
                        ours[n].append(bench.ours(n, f"mttr-{n}-{attempt}", parallel))
                    log(f"  MTTR {(floors if method == 'floor' else ours)[n][-1]['mttr']:.1f} s")

        def growth_rows(size: int) -> dict[str, float]:
            # The least of two runs each, alternating, so a burst of cluster work does not count against one.
            runs: dict[str, list[tuple[float, float]]] = {how: [] for how in HOW}
            for attempt in range(2):
                for how in HOW:
                    load.append(_loadavg())
                    measured = bench.ours(growth_faulty, f"{size}-{growth_faulty}-{how}-{attempt}", growth_faulty,
                                          how)
                    runs[how].append((measured["run"], measured["cpu"]))
            figures = {}
            for how, measured in runs.items():
                figures[f"wall {how}"] = min(wall for wall, _cpu in measured)
                figures[f"cpu {how}"] = min(cpu for _wall, cpu in measured)
                if how != "named":
                    figures[f"reading {how}"] = _load_inventory(kubeconfig, work / f"load-{size}-{how}", how)
                growth.append([f"{size:,}", f"{growth_faulty}", HOW_TEXT[how], f"{figures[f'wall {how}']:.1f} s",
                               f"{figures[f'cpu {how}']:.1f} s",
                               f"{figures[f'reading {how}']:.1f} s" if how != "named" else "none"])
            return figures

        log(f"{growth_faulty} faulty of {sizes[0]}, found in each of the ways {', '.join(HOW)}, twice each")
        small = growth_rows(sizes[0])
        log(f"growing the cluster to {sizes[1]}")
        grow(api, sizes[1], sizes[0], QUIET_SECONDS)
        large = growth_rows(sizes[1])
    cpu_by_count = {n: _typical(ours[n])["cpu"] for n in counts}
    per_faulty_cpu = _per_node(cpu_by_count)[max(counts)] if len(counts) > 1 else None
    body = (mttr_section(counts, parallel, sizes[0], floors, ours) + "\n\n" + split_section(counts, floors, ours)
            + growth_section(sizes, growth_faulty, growth, small, large, per_faulty_cpu)
            + f"\nLoad average (1 min) at the start of the runs: {min(load):.1f}-{max(load):.1f} on "
              f"{os.cpu_count()} cores, the simulated cluster's work and whatever else ran on the machine included.\n")
    write_section("runbook", "Mean time to recovery (recover playbook)", body)


def _loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])
