"""Helpers for integration tests against the real local control plane."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client, KubernetesError
from tools.localcluster import nodes as localnodes
from tools.localcluster import workloads  # noqa: F401  (re-exported for tests)

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def exists(api: Client, path: str) -> bool:
    return api.get_or_none(path) is not None


class NodeFactory:
    """Creates accelerator nodes private to one test (own name prefix and pool label)."""

    def __init__(self, api: Client):
        self.api = api
        self.created: list[str] = []

    def __call__(self, count: int = 4, kind: str = "npu", pool: str | None = None, ready: bool = True) -> list[str]:
        pool_name = pool or unique(kind)
        spec = localnodes.Pool(pool_name, kind, count)
        manifests = [localnodes.node_manifest(spec, i) for i in range(count)]
        localnodes.create_nodes(manifests, self.api)
        names = [m["metadata"]["name"] for m in manifests]
        self.created += names
        if ready:
            # Settled too: the node lifecycle controller must not change a node while a test compares it.
            localnodes.wait_ready(names, api=self.api, label_selector=f"{localnodes.POOL_LABEL}={pool_name}",
                                  settle=True)
        return names

    def cleanup(self) -> None:
        for name in self.created:
            try:
                self.api.request("DELETE", f"/api/v1/nodes/{name}")
            except KubernetesError as err:
                if err.status != 404:
                    raise


def pool_of(nodes: list[str]) -> dict:
    """nodeSelector keeping pods on the pool of these test nodes."""
    return {localnodes.POOL_LABEL: nodes[0].rsplit("-", 1)[0]}


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def pods(api: Client, namespace: str, selector: str | None = None) -> list[dict]:
    return api.list(f"/api/v1/namespaces/{namespace}/pods", label_selector=selector)


def running_pods(api: Client, namespace: str, selector: str | None = None) -> list[dict]:
    return [p for p in pods(api, namespace, selector)
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


def node(api: Client, name: str) -> dict:
    return api.get(f"/api/v1/nodes/{name}")


def condition_of(node_obj: dict, ctype: str) -> dict | None:
    return next((c for c in node_obj["status"].get("conditions") or [] if c["type"] == ctype), None)


def localcluster_cli(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(VENV_BIN / "python"), "-m", "tools.localcluster", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"localcluster {' '.join(args)} failed: {proc.stderr}")
    return proc


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def run_module(module: str, args: dict, check: bool = False, diff: bool = False, env: dict | None = None,
               timeout: float = 600) -> dict:
    """Run one collection module through ansible-playbook (the real module path: AnsiballZ,
    argument spec, check/diff mode) and return its result dict (with 'failed'/'msg' on failure)."""
    import json
    import os
    import tempfile

    import yaml

    with tempfile.TemporaryDirectory(prefix="run-module-") as tmp:
        out = Path(tmp) / "result.json"
        play = [{
            "hosts": "localhost", "gather_facts": False,
            "tasks": [
                {"name": "module under test", f"ai_infra.node_recovery.{module}": args, "register": "result",
                 "ignore_errors": True},
                {"name": "save result", "ansible.builtin.copy": {"content": "{{ result | to_json }}", "dest": str(out)},
                 "check_mode": False, "diff": False},
            ],
        }]
        playbook = Path(tmp) / "play.yml"
        playbook.write_text(yaml.safe_dump(play))
        cmd = [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook)]
        if check:
            cmd.append("--check")
        if diff:
            cmd.append("--diff")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, ANSIBLE_PYTHON_INTERPRETER=str(VENV_BIN / "python"),
                                       ANSIBLE_LOCALHOST_WARNING="false", **(env or {})))
        if not out.exists():
            raise AssertionError(f"ansible-playbook failed before saving the result:\n{proc.stdout}\n{proc.stderr}")
        result = json.loads(out.read_text())
        result["_stdout"] = proc.stdout
        return result


def service_account_kubeconfig(api: Client, namespace: str, name: str, cluster_rules: list[dict],
                               directory: Path) -> Path:
    """A kubeconfig for a real ServiceAccount bound (cluster-wide) only to `cluster_rules`,
    with a token from the TokenRequest API: RBAC is judged by the real apiserver."""
    from tools.localcluster import cluster as localcluster

    api.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", body={"metadata": {"name": name}})
    role = f"{namespace}-{name}"
    api.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                body={"metadata": {"name": role}, "rules": cluster_rules})
    api.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", body={
        "metadata": {"name": role},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]})
    token = api.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
                        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                              "spec": {"expirationSeconds": 3600}})["status"]["token"]
    path = directory / f"{name}.kubeconfig"
    state = localcluster.status()
    localcluster.write_kubeconfig(path, state["server"], localcluster.STATE_DIR / "pki" / "ca.crt", token, user=name)
    return path


def kill_with_descendants(pid: int) -> None:
    """SIGKILL a process and every process under it, at once. Ansible's workers call setsid(), so killing the
    playbook's process group would leave the worker that delivers (and then writes the node) running."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    family, grown = {pid}, True
    while grown:
        children = {child for child, parent in parents.items() if parent in family} - family
        family |= children
        grown = bool(children)
    for member in family:
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


PLAN_TASK = "TASK [Plan the run and take the remediation lock]"


def plan_took_the_lock(output: str) -> bool:
    """Whether a recover run's plan took the remediation lock, from ansible-playbook's output: the plan's task
    reports changed exactly when it did (a plan that acts on nothing takes none)."""
    after = output.split(PLAN_TASK, 1)[1] if PLAN_TASK in output else ""
    result = next((line for line in after.splitlines()[1:] if line.strip()), "")
    return result.startswith("changed:")
