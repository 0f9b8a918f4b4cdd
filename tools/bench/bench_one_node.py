"""One faulty node: the recover playbook against the kubectl floor and against Ansible's own floor (an
ansible-playbook run of one task that loads the collection's Kubernetes client and does nothing), with
the run split into Ansible's start, the tasks that acted, the tasks that were skipped and its end, on
the same 1,000-node cluster the MTTR benchmark uses."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import yaml

from . import REPO, log, median_item, table, write_section
from .bench_runbook import GOAL_RATIO, _ansible_env, _timed, spread_cluster

CALLBACKS = Path(__file__).with_name("callback_plugins")
# The least any run of ours costs: ansible-playbook starts, loads the collection and its Kubernetes client (as
# the plan's first filter does in every run) and runs one task.
ANSIBLE_FLOOR_PLAY = [{"name": "Nothing but Ansible and the collection", "hosts": "localhost", "gather_facts": False,
                       "tasks": [{"name": "Load the collection's client",
                                  "ansible.builtin.debug": {
                                      "msg": "{{ lookup('ai_infra.node_recovery.run_id') }}"}}]}]


def ansible_floor(kubeconfig: Path, workdir: Path) -> float:
    workdir.mkdir(parents=True, exist_ok=True)
    playbook = workdir / "ansible_floor.yml"
    playbook.write_text(yaml.safe_dump(ANSIBLE_FLOOR_PLAY, sort_keys=False))
    proc, wall, _cpu = _timed([str(REPO / ".venv/bin/ansible-playbook"), str(playbook)],
                              env=_ansible_env(kubeconfig), cwd=workdir)
    if proc.returncode != 0:
        raise RuntimeError(f"Ansible's floor failed: {proc.stdout[-2000:]}")
    return wall


def task_split(measured: dict, times_file: Path) -> dict[str, float]:
    """Ansible's start (fault injected to the first task), the tasks that acted and those skipped (each task
    until the next began), and the end (the last task's end to the process's end), with their counts."""
    rows = [json.loads(line) for line in times_file.read_text().splitlines()]
    tasks, stats = rows[:-1], rows[-1]
    spans = [(task, following["started"] - task["started"]) for task, following in zip(tasks, rows[1:])]
    return {"start": tasks[0]["started"] - measured["started"],
            "ran": sum(s for t, s in spans if t["ran"]), "ran count": sum(1 for t, _ in spans if t["ran"]),
            "skipped": sum(s for t, s in spans if not t["ran"]),
            "skipped count": sum(1 for t, _ in spans if not t["ran"]),
            "end": measured["ended"] - stats["started"],
            "tasks": [(task["name"], seconds, task["ran"]) for task, seconds in spans]}


def run(quick: bool = False) -> None:
    size = 200 if quick else 1000
    rounds = 2 if quick else 5
    work = REPO / ".localcluster-bench-one-node" / "runs"
    floors, ours, ours_ended, splits, ansible = [], [], [], [], []
    with spread_cluster("one-node", size, work) as bench:
        for attempt in range(rounds):
            # Rotated each round, so a drift of the machine's load favours none of the three.
            methods = ("floor", "ours", "ansible")
            for method in methods[attempt % 3:] + methods[:attempt % 3]:
                log(f"round {attempt + 1}: {method}")
                if method == "floor":
                    floors.append(bench.floor(1)["mttr"])
                elif method == "ansible":
                    ansible.append(ansible_floor(bench.kubeconfig, work / f"ansible-{attempt}"))
                else:
                    times_file = work / f"tasks-{attempt}.jsonl"
                    times_file.parent.mkdir(parents=True, exist_ok=True)
                    measured = bench.ours(1, f"one-{attempt}", 1, extra_env={
                        "ANSIBLE_CALLBACK_PLUGINS": str(CALLBACKS), "ANSIBLE_CALLBACKS_ENABLED": "task_times",
                        "NODE_RECOVERY_BENCH_TASK_TIMES": str(times_file)})
                    ours.append(measured["mttr"])
                    ours_ended.append(measured["mttr_ended"])
                    splits.append(task_split(measured, times_file))
    write_section("one_node", "One faulty node: against the kubectl floor and Ansible's own floor",
                  section(size, floors, ours, ours_ended, ansible, splits))


def section(size: int, floors: list[float], ours: list[float], ours_ended: list[float], ansible: list[float],
            splits: list[dict]) -> str:
    def runs(values: list[float]) -> str:
        return ", ".join(f"{v:.1f}" for v in values)

    floor, typical, ansible_typical = (statistics.median(v) for v in (floors, ours, ansible))
    rows = [["kubectl floor: taint, `kubectl drain`, `kubectl wait` for the service", runs(floors),
             f"{min(floors):.1f} s", f"{floor:.1f} s", "1.0x", "1.0x"],
            ["ours: the recover playbook (tickets and report written)", runs(ours), f"{min(ours):.1f} s",
             f"{typical:.1f} s", f"**{typical / floor:.1f}x**", f"{min(ours) / min(floors):.1f}x"],
            ["ours, to the process's end (it prints the report, sets its exit status and exits)", runs(ours_ended),
             f"{min(ours_ended):.1f} s", f"{statistics.median(ours_ended):.1f} s",
             f"{statistics.median(ours_ended) / floor:.1f}x", f"{min(ours_ended) / min(floors):.1f}x"],
            ["Ansible's own floor: `ansible-playbook`, one task that loads the collection's client", runs(ansible),
             f"{min(ansible):.1f} s", f"{ansible_typical:.1f} s", f"{ansible_typical / floor:.1f}x",
             f"{min(ansible) / min(floors):.1f}x"]]
    median_run, split = median_item(list(zip(ours, splits)), key=lambda pair: pair[0])
    budget = GOAL_RATIO * floor
    return (f"{size:,} kwok nodes and the spread services of the MTTR benchmark; one faulty node carrying a replica, "
            f"fresh each time; the three alternate in rotated order, {len(ours)} runs each (seconds). MTTR as in the "
            "MTTR benchmark; Ansible's floor is the wall time of its process.\n\n"
            + table(["", "runs (s)", "least", "median", "median / kubectl floor's median",
                     "least / kubectl floor's least"], rows)
            + "\n\nThe goal is judged on the medians, as in the MTTR benchmark; the least runs are beside them. The "
              "floor's own runs split in two: `kubectl drain` looks for its evicted pods once a second, so a drain "
              "whose pod is gone by its first look ends a second sooner, and the least of the floor's runs is "
              "whether that happened at least once."
            + "\n\nOur run of the median MTTR, split by the benchmark's task-times callback:\n\n"
            + table(["fault injected to the first task (Ansible's start)", "tasks that acted", "tasks skipped",
                     "last task's end to the process's end", "MTTR"],
                    [[f"{split['start']:.2f} s", f"{split['ran']:.2f} s ({split['ran count']} tasks)",
                      f"{split['skipped']:.2f} s ({split['skipped count']} tasks)", f"{split['end']:.2f} s",
                      f"{median_run:.2f} s"]])
            + "\n\nIts tasks, each until the next began:\n\n"
            + table(["task", "seconds", "acted"],
                    [[name, f"{seconds:.2f}", "yes" if ran else "skipped"] for name, seconds, ran in split["tasks"]])
            + f"\n\nThe goal of {GOAL_RATIO:g}x the kubectl floor's median allows {budget:.1f} s at one faulty node; "
              f"Ansible's own floor takes {ansible_typical:.1f} s of it (its median) before any work ("
            + (f"{ansible_typical / budget:.0%} of the allowance)" if ansible_typical < budget
               else "more than the whole allowance)")
            + f", and ours spent {split['start']:.1f} s before its first task and {split['end']:.1f} s after its "
              "last.\n")
