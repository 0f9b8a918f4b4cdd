"""Shared by the event source and watcher tests: the stand-in recover playbooks and their
record, the environment ansible-rulebook and ansible-runner need, and node heartbeats."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client

from .helpers import REPO, VENV_BIN, localnodes, node

RECORD_PLAYBOOK = REPO / "tests" / "integration" / "playbooks" / "record_recover.yml"


def tool_env(kubeconfig: str, record: Path, work_seconds: float = 0) -> dict:
    """Our venv first on PATH (ansible-rulebook looks collections up with ansible-galaxy), Java for
    ansible-rulebook, the connection as K8S_AUTH_*, and where the stand-in playbook records runs."""
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", K8S_AUTH_KUBECONFIG=kubeconfig,
               RECOVER_RECORD=str(record), RECOVER_SLEEP=str(work_seconds), PYTHONUNBUFFERED="1")
    if not env.get("JAVA_HOME") and shutil.which("java"):
        env["JAVA_HOME"] = str(Path(shutil.which("java")).resolve().parents[1])
    return env


def records(path: Path) -> list[dict]:
    """One dict per line the stand-in playbook wrote: phase (start|end), time, run (nodes, transition)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def started_nodes(path: Path) -> list[list[str]]:
    return [r["run"]["nodes"] for r in records(path) if r["phase"] == "start"]


def beat(api: Client, name: str) -> str:
    """What node-agent does between checks: every condition re-written with a new heartbeat time only."""
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    conditions = [{"type": c["type"], "lastHeartbeatTime": when} for c in node(api, name)["status"]["conditions"]]
    patched = api.patch(f"/api/v1/nodes/{name}/status", {"status": {"conditions": conditions}}, patch_type="strategic")
    return patched["metadata"]["resourceVersion"]


def heartbeat_times(api: Client, name: str) -> dict[str, str]:
    return {c["type"]: c.get("lastHeartbeatTime") for c in node(api, name)["status"]["conditions"]}


# Run by the stand-in with the controller's Python: what recover's isolation writes on a node (a cordon and
# our annotations), so the event source sees the node taken by a run.
_TAKE_NODES = """
import json, os, sys
from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client
api = Client({"kubeconfig": os.environ["K8S_AUTH_KUBECONFIG"]})
for name in json.loads(sys.argv[1]):
    api.patch("/api/v1/nodes/" + name, {"spec": {"unschedulable": True}, "metadata": {"annotations": {
        v.STATE: v.STATE_ISOLATED, v.ISOLATED_BY: v.COLLECTION, v.CORDONED_BY_US: "true"}}}, patch_type="strategic")
"""


# A stand-in's first tasks: the watcher starts a run while its coalescing window is open and writes its nodes when
# the window closes (node_recovery_targets_file), where recover's plan reads them.
READ_TARGETS = [
    {"name": "Wait for the nodes of the run",
     "ansible.builtin.wait_for": {"path": "{{ node_recovery_targets_file }}", "timeout": 60},
     "when": "node_recovery_targets_file is defined"},
    {"name": "Read the nodes of the run",
     "ansible.builtin.set_fact": {
         "recover_nodes": "{{ lookup('ansible.builtin.file', node_recovery_targets_file) | from_json }}"},
     "when": "node_recovery_targets_file is defined"},
    # Written with them: the events of all its nodes (ansible_eda has only those of the nodes it started with).
    {"name": "Read the events of the run",
     "ansible.builtin.include_vars": {"file": "{{ node_recovery_events_file }}"},
     "when": "node_recovery_events_file is defined"},
]


def stand_in_playbook(directory: Path) -> Path:
    """A stand-in recover playbook steered by a control file the test may rewrite between runs
    (write_control): it records each run's start (nodes, the batch's attempts, the fault messages it
    was handed, templated) and end to RECOVER_RECORD; fails runs whose number is at most fail_runs;
    works work_seconds; and, when take is true, marks its nodes the way recover's isolation does.
    Its own directory: ansible-rulebook copies a playbook's directory for each run."""
    directory.mkdir(parents=True, exist_ok=True)
    playbook = directory / "stand_in_recover.yml"
    control = directory / "control.json"
    write_control(directory)
    def record(phase: str) -> dict:
        return {"name": f"Record the {phase} of the run",
                "ansible.builtin.shell": {"cmd": "printf '{\"phase\": \"%s\", \"time\": %s, \"run\": %s}\\n' "
                                                 "\"$PHASE\" \"$(date +%s.%N)\" \"$RUN\" >> \"$RECORD_FILE\"; "
                                                 "grep -c '\"phase\": \"start\"' \"$RECORD_FILE\""},
                "environment": {"PHASE": phase, "RECORD_FILE": "{{ lookup('ansible.builtin.env', 'RECOVER_RECORD') }}",
                                "RUN": "{{ run_record | to_json }}"},
                "changed_when": True}

    play = [{
        "name": "Stand in for recover",
        "hosts": "localhost",
        "gather_facts": False,
        "vars": {
            "recover_nodes": [],
            "eda_event": "{{ ansible_eda.event | default({}) }}",
            "control": f"{{{{ lookup('ansible.builtin.file', '{control}') | from_json }}}}",
            "run_record": {
                "nodes": "{{ recover_nodes }}",
                "attempts": "{{ eda_event.attempts | default({}) }}",
                "attempt": "{{ eda_event.attempt | default(None) }}",
                # The node events the watcher hands over, templated here: a message must stay as written.
                "messages": "{{ ((node_recovery_run_events | default(ansible_eda) | default({})).events | default({}))"
                            ".values() | map(attribute='faults') | flatten"
                            " | map(attribute='message') | list }}",
                "kubeconfig_from_env": "{{ lookup('ansible.builtin.env', 'K8S_AUTH_KUBECONFIG') | length > 0 }}",
            },
        },
        "tasks": [
            *READ_TARGETS,
            {**record("start"), "register": "started"},
            {"name": "Fail as the test asks", "ansible.builtin.fail": {"msg": "run {{ started.stdout_lines[-1] }} fails"},
             "when": "started.stdout_lines[-1] | int <= control.fail_runs"},
            {"name": "Work for a while", "ansible.builtin.wait_for": {"timeout": "{{ control.work_seconds }}"},
             "when": "control.work_seconds > 0"},
            {"name": "Take the nodes as recover's isolation would",
             "ansible.builtin.command": {"argv": ["{{ ansible_playbook_python }}", "-c", _TAKE_NODES,
                                                  "{{ recover_nodes | to_json }}"]},
             "when": "control.take", "changed_when": True},
            record("end"),
        ],
    }]
    playbook.write_text(yaml.safe_dump(play, sort_keys=False, width=200))
    return playbook


def write_control(directory: Path, fail_runs: int = 0, work_seconds: float = 0, take: bool = True) -> None:
    path = directory / "control.json"
    temporary = path.with_name("control.json.tmp")
    temporary.write_text(json.dumps({"fail_runs": fail_runs, "work_seconds": work_seconds, "take": take}))
    os.replace(temporary, path)  # a run starting now reads the old file or the new one, never half of one


def runs_of(path: Path) -> list[dict]:
    """One entry per started run, in order: nodes, attempts, start and end times (end None: it failed)."""
    runs: list[dict] = []
    for entry in records(path):
        if entry["phase"] == "start":
            runs.append({**entry["run"], "started": entry["time"], "ended": None})
        else:
            opened = [r for r in runs if r["ended"] is None and r["nodes"] == entry["run"]["nodes"]]
            opened[-1]["ended"] = entry["time"]
    return runs


def fault_at_once(api: Client, names: list[str], ctype: str, message: str | None = None) -> float:
    """A burst: the fault written on every node concurrently, as a failed switch makes it happen;
    returns the seconds from the first write's start to the last write's end."""
    since = dt.timedelta(minutes=10)
    began = time.monotonic()
    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(lambda name: localnodes.set_condition(name, ctype, "True", message=message, ago=since, api=api),
                      names))
    return time.monotonic() - began
