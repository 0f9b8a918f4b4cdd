"""Shared by the event source and watcher tests: the stand-in recover playbook's record,
the environment ansible-rulebook and ansible-runner need, and node heartbeats."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client

from .helpers import REPO, VENV_BIN, node

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
