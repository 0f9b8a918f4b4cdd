"""Start, stop and inspect the local control plane: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok, all on loopback."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from . import build

REPO_ROOT = Path(__file__).resolve().parents[2]
# One cluster per state directory: its processes, data, certificates and kubeconfig live there, and its ports are
# free ports picked when it starts, so a second, independent cluster only needs a directory of its own (--dir, or
# LOCALCLUSTER_DIR); it starts from the same cached binaries.
STATE_DIR = Path(os.environ.get("LOCALCLUSTER_DIR", REPO_ROOT / ".localcluster"))
KUBECONFIG = STATE_DIR / "kubeconfig"
STATE_FILE = STATE_DIR / "state.json"


def use_state_dir(path: str | os.PathLike) -> None:
    """Act on the cluster of another state directory (the CLI's --dir) from now on."""
    global STATE_DIR, KUBECONFIG, STATE_FILE
    STATE_DIR = Path(path).resolve()
    KUBECONFIG = STATE_DIR / "kubeconfig"
    STATE_FILE = STATE_DIR / "state.json"

# kwok manages only nodes carrying this label; removing it simulates a dead kubelet.
KWOK_MANAGED_LABEL = "kwok.x-k8s.io/managed"
# kwok's node-initialize skips nodes with this label, so an injected Ready=False holds.
HOLD_READY_LABEL = "localcluster.ai-infra.io/hold-ready"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# Dynamic resource allocation with device taints, as Kubernetes 1.36 has them (docs/dra.md): DRA and device taints in
# ResourceSlices (gate DRADeviceTaints) are on by default, but DeviceTaintRule is a beta API served only from
# resource.k8s.io/v1beta2, which is off by default, and its gate DRADeviceTaintRules too. The scheduler (which
# devices it allocates) and the controller-manager's device-taint-eviction-controller read DeviceTaintRules only
# with the gate on, so all three get it.
DRA_FEATURE_GATES = "DRADeviceTaintRules=true"
DRA_RUNTIME_CONFIG = "resource.k8s.io/v1beta2/devicetaintrules=true"


class ClusterError(Exception):
    """An expected failure of the local cluster CLI, worded for the operator."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _openssl(*args: str) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ClusterError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def _make_pki(pki: Path) -> None:
    """A CA, an apiserver serving certificate signed by it, and the service-account key."""
    pki.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=node-recovery-local-ca",
             "-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt"))
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
             "-keyout", str(pki / "apiserver.key"), "-out", str(pki / "apiserver.csr"))
    (pki / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc\n"
    )
    _openssl("x509", "-req", "-in", str(pki / "apiserver.csr"), "-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"),
             "-CAcreateserial", "-days", "3650", "-extfile", str(pki / "san.ext"), "-out", str(pki / "apiserver.crt"))
    _openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
    _openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))


def write_kubeconfig(path: Path, server: str, ca_file: Path, token: str, user: str = "admin") -> None:
    import base64

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "localcluster", "cluster": {
            "server": server,
            "certificate-authority-data": base64.b64encode(ca_file.read_bytes()).decode()}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "localcluster", "context": {"cluster": "localcluster", "user": user}}],
        "current-context": "localcluster",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


# What the kubelet does to a pod being deleted: stop its containers and put it in a
# terminal phase, so controllers that track pods with finalizers (the Job controller)
# see it finish before kwok removes it.
_POD_TERMINATE_TEMPLATE = """
{{ $now := Now }}
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: false
  restartCount: 0
  started: false
  state:
    terminated:
      exitCode: 143
      finishedAt: {{ $now | Quote }}
      reason: Error
      startedAt: {{ $now | Quote }}
{{ end }}
phase: Failed
"""


_READY_HEARTBEAT = """conditions:
- lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ $lastTransitionTime | Quote }}
  message: kubelet is posting ready status
  reason: KubeletReady
  status: "True"
  type: Ready"""


def _shutdown_delay() -> dict:
    """A pod may ask to take time to shut down, with kwok's own annotation (none: it stops at once)."""
    return {"durationMilliseconds": 0, "durationFrom": {
        "expressionFrom": '.metadata.annotations["pod-delete.stage.kwok.x-k8s.io/delay"]'}}


def _kwok_stages(heartbeat_seconds: int) -> list[dict]:
    """kwok's own stage files, with a faster node heartbeat, Job pods that only complete
    when they ask to (an annotation) so training jobs keep running, and deletion that
    goes through a terminal phase like the kubelet's."""
    stage_dir = build.kwok_stage_dir()

    def load(rel: str) -> dict:
        return yaml.safe_load((stage_dir / rel).read_text())

    initialize = load("node/fast/node-initialize.yaml")
    initialize["spec"]["selector"]["matchExpressions"].append(
        {"key": f'.metadata.labels["{HOLD_READY_LABEL}"]', "operator": "DoesNotExist"})
    heartbeat = load("node/heartbeat-with-lease/node-heartbeat-with-lease.yaml")
    heartbeat["spec"]["selector"]["matchExpressions"].append(
        {"key": f'.metadata.labels["{HOLD_READY_LABEL}"]', "operator": "DoesNotExist"})
    heartbeat["spec"]["delay"] = {"durationMilliseconds": heartbeat_seconds * 1000,
                                  "jitterDurationMilliseconds": heartbeat_seconds * 1500}
    # kwok's heartbeat re-writes every standard condition; a kubelet owns Ready, but not
    # NetworkUnavailable (the network plugin's) nor conditions a test injected, so refresh Ready only.
    template = heartbeat["spec"]["next"]["statusTemplate"]
    start = template.index("conditions:")
    end = template.index("{{ end }}", start) + len("{{ end }}")
    heartbeat["spec"]["next"]["statusTemplate"] = template[:start] + _READY_HEARTBEAT + template[end:]
    complete = load("pod/general/pod-complete.yaml")
    complete["spec"]["selector"]["matchExpressions"].append(
        {"key": '.metadata.annotations["pod-complete.stage.kwok.x-k8s.io/delay"]', "operator": "Exists"})
    terminate = {
        "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": "pod-terminate"},
        "spec": {"resourceRef": {"apiGroup": "v1", "kind": "Pod"},
                 "selector": {"matchExpressions": [
                     {"key": ".metadata.deletionTimestamp", "operator": "Exists"},
                     {"key": ".status.phase", "operator": "NotIn", "values": ["Succeeded", "Failed"]}]},
                 "delay": _shutdown_delay(),
                 "next": {"statusTemplate": _POD_TERMINATE_TEMPLATE}},
    }
    # kwok keeps a scheduled heartbeat even when a node stops matching it; a stage that matches held
    # nodes (and never fires) replaces that job, so an injected Ready=False is not flipped back.
    hold = {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": "node-hold-ready"},
            "spec": {"resourceRef": {"apiGroup": "v1", "kind": "Node"},
                     "selector": {"matchExpressions": [
                         {"key": f'.metadata.labels["{HOLD_READY_LABEL}"]', "operator": "Exists"}]},
                     "delay": {"durationMilliseconds": 30 * 24 * 3600 * 1000},
                     "next": {"statusTemplate": "{}"}}}
    delete = load("pod/general/pod-delete.yaml")  # only once no finalizer holds the pod
    delete["spec"]["delay"] = _shutdown_delay()
    return [initialize, heartbeat, hold, load("pod/fast/pod-ready.yaml"), complete, terminate, delete]


def _load_state() -> dict | None:
    if not STATE_FILE.exists():
        return None
    return json.loads(STATE_FILE.read_text())


def _alive(pid: int, binary: str) -> bool:
    """True when pid is running and is still the binary we started (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False
    return cmdline == binary


def _api_ready(server: str, token: str, ca_file: Path, path: str = "/readyz") -> bool:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    req = urllib.request.Request(server + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=3) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _wait(what: str, check, timeout: float, procs: dict | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        for name, proc in (procs or {}).items():
            if proc.poll() is not None:
                log = STATE_DIR / "logs" / f"{name}.log"
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-10:]) if log.exists() else ""
                raise ClusterError(f"{name} exited with code {proc.returncode} while waiting for {what}:\n{tail}")
        time.sleep(0.3)
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}; logs are in {STATE_DIR / 'logs'}")


def is_up() -> bool:
    state = _load_state()
    if not state:
        return False
    if not all(_alive(p["pid"], p["binary"]) for p in state["processes"].values()):
        return False
    return _api_ready(state["server"], state["token"], STATE_DIR / "pki" / "ca.crt")


def status() -> dict:
    state = _load_state()
    if not state:
        return {"up": False, "processes": {}}
    procs = {name: {"pid": p["pid"], "running": _alive(p["pid"], p["binary"])} for name, p in state["processes"].items()}
    return {"up": is_up(), "server": state["server"], "kubeconfig": str(KUBECONFIG), "processes": procs,
            "heartbeat_seconds": state.get("heartbeat_seconds")}


@contextlib.contextmanager
def _exclusive():
    """One up/down at a time per state directory (tests, helpers and make may race)."""
    STATE_DIR.parent.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR.parent / f".{STATE_DIR.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def up(heartbeat_seconds: int = 20, verbose: bool = True, lease_seconds: int = 40) -> dict:
    """Start everything (idempotent) and wait until the API answers.

    lease_seconds is the kwok node lease duration and the controller-manager's grace
    period before a node whose lease is not renewed turns Unknown (40 s like a kubelet);
    large benchmark clusters raise it so 10,000 lease renewals do not saturate 2 cores."""
    with _exclusive():
        return _up(heartbeat_seconds, verbose, lease_seconds)


def _up(heartbeat_seconds: int, verbose: bool, lease_seconds: int) -> dict:
    if is_up():
        if verbose:
            print(f"local cluster already up at {_load_state()['server']}")
        return _load_state()
    if _load_state():
        _down(verbose=False)  # half-dead leftovers of an earlier run
    bins = build.binary_paths()
    build.ensure_binaries()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    (STATE_DIR / "logs").mkdir(exist_ok=True)
    pki = STATE_DIR / "pki"
    _make_pki(pki)

    token = secrets.token_hex(24)
    (STATE_DIR / "tokens.csv").write_text(f"{token},admin,admin,system:masters\n")
    ports = {name: _free_port() for name in ("etcd", "etcd_peer", "apiserver", "controller_manager", "scheduler",
                                             "kwok")}
    server = f"https://127.0.0.1:{ports['apiserver']}"
    write_kubeconfig(KUBECONFIG, server, pki / "ca.crt", token)

    (STATE_DIR / "kwok-stages.yaml").write_text(yaml.safe_dump_all(_kwok_stages(heartbeat_seconds)))
    (STATE_DIR / "scheduler.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": str(KUBECONFIG), "qps": 500, "burst": 1000},
        "leaderElection": {"leaderElect": False},
    }))
    etcd_url = f"http://127.0.0.1:{ports['etcd']}"
    commands = {
        "etcd": [
            str(bins["etcd"]), "--data-dir", str(STATE_DIR / "etcd"), "--listen-client-urls", etcd_url,
            "--advertise-client-urls", etcd_url, "--listen-peer-urls", f"http://127.0.0.1:{ports['etcd_peer']}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{ports['etcd_peer']}",
            "--initial-cluster", f"default=http://127.0.0.1:{ports['etcd_peer']}",
            "--unsafe-no-fsync", "--quota-backend-bytes", str(8 * 1024**3), "--log-level", "warn",
        ],
        "kube-apiserver": [
            str(bins["kube-apiserver"]), "--etcd-servers", etcd_url, "--cert-dir", str(pki),
            "--tls-cert-file", str(pki / "apiserver.crt"), "--tls-private-key-file", str(pki / "apiserver.key"),
            "--client-ca-file", str(pki / "ca.crt"),
            "--secure-port", str(ports["apiserver"]), "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--service-cluster-ip-range", "10.96.0.0/12", "--authorization-mode", "Node,RBAC",
            "--token-auth-file", str(STATE_DIR / "tokens.csv"),
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--max-requests-inflight", "0", "--max-mutating-requests-inflight", "0",
            "--enable-priority-and-fairness=false", "--allow-privileged=true", "--event-ttl", "2h",
            "--feature-gates", DRA_FEATURE_GATES, "--runtime-config", DRA_RUNTIME_CONFIG,
        ],
        "kube-controller-manager": [
            str(bins["kube-controller-manager"]), "--kubeconfig", str(KUBECONFIG), "--leader-elect=false",
            "--service-account-private-key-file", str(pki / "sa.key"), "--root-ca-file", str(pki / "ca.crt"),
            "--bind-address", "127.0.0.1", "--secure-port", str(ports["controller_manager"]),
            "--kube-api-qps", "1000", "--kube-api-burst", "2000", "--node-monitor-grace-period", f"{lease_seconds}s",
            "--concurrent-deployment-syncs", "10", "--concurrent-replicaset-syncs", "10",
            "--concurrent-job-syncs", "10", "--feature-gates", DRA_FEATURE_GATES,
        ],
        "kube-scheduler": [
            str(bins["kube-scheduler"]), "--config", str(STATE_DIR / "scheduler.yaml"),
            "--bind-address", "127.0.0.1", "--secure-port", str(ports["scheduler"]),
            "--feature-gates", DRA_FEATURE_GATES,
        ],
        "kwok": [
            str(bins["kwok"]), "--kubeconfig", str(KUBECONFIG), "--manage-all-nodes=false",
            "--manage-nodes-with-label-selector", f"{KWOK_MANAGED_LABEL}=true",
            "--cidr", "10.128.0.0/10", "--node-ip", "10.255.255.254", "--node-lease-duration-seconds", str(lease_seconds),
            "--config", str(STATE_DIR / "kwok-stages.yaml"), "--server-address", f"127.0.0.1:{ports['kwok']}",
        ],
    }
    state = {"server": server, "token": token, "ports": ports, "heartbeat_seconds": heartbeat_seconds,
             "processes": {}}
    procs: dict[str, subprocess.Popen] = {}
    ca = pki / "ca.crt"
    waits = {
        "etcd": ("etcd to answer", lambda: _http_ok(f"{etcd_url}/health"), 60),
        "kube-apiserver": ("the API to become ready", lambda: _api_ready(server, token, ca), 120),
        "kube-controller-manager": ("the controller-manager to create the default ServiceAccount",
                                    lambda: _api_ready(server, token, ca, "/api/v1/namespaces/default/serviceaccounts/default"),
                                    90),
    }
    try:
        for name in COMPONENTS:
            if verbose:
                print(f"starting {name}", flush=True)
            log = open(STATE_DIR / "logs" / f"{name}.log", "ab")
            procs[name] = subprocess.Popen(commands[name], stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True)
            state["processes"][name] = {"pid": procs[name].pid, "binary": commands[name][0], "command": commands[name]}
            STATE_FILE.write_text(json.dumps(state, indent=2))
            if name in waits:
                what, check, timeout = waits[name]
                _wait(what, check, timeout, procs)
        install_crds()
    except ClusterError:
        _down(verbose=False)
        raise
    if verbose:
        print(f"local cluster up at {server}; kubeconfig {KUBECONFIG}")
    return state


def install_crds() -> None:
    """The training-job CRDs (definitions only), so restart requests meet real API validation."""
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client, KubernetesError

    from .crds import all_crds

    api = Client({"kubeconfig": str(KUBECONFIG)})
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    for crd in all_crds():
        try:
            api.request("POST", path, body=crd, what=f"creating CRD {crd['metadata']['name']}")
        except KubernetesError as err:
            if err.status != 409:
                raise ClusterError(str(err)) from None

    def established() -> bool:
        names = {c["metadata"]["name"] for c in api.list(path)
                 if any(x["type"] == "Established" and x["status"] == "True"
                        for x in (c.get("status") or {}).get("conditions") or [])}
        return all(c["metadata"]["name"] in names for c in all_crds())

    _wait("the training-job CRDs to be established", established, 60)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def down(verbose: bool = True) -> None:
    """Stop exactly the processes we started (by recorded pid) and remove their data."""
    with _exclusive():
        _down(verbose)


def _down(verbose: bool) -> None:
    state = _load_state()
    if state:
        for name in reversed(COMPONENTS):
            proc = state["processes"].get(name)
            if proc and _alive(proc["pid"], proc["binary"]):
                _stop(proc["pid"], proc["binary"])
                if verbose:
                    print(f"stopped {name} (pid {proc['pid']})")
    if STATE_DIR.exists():
        shutil.rmtree(STATE_DIR)
    if verbose:
        print("local cluster down" if state else "local cluster was not up")


def _stop(pid: int, binary: str) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while _alive(pid, binary) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid, binary):
        os.kill(pid, signal.SIGKILL)


def stop(component: str, verbose: bool = True) -> None:
    """Stop one component (by its recorded pid), keeping its data and flags: `restart` starts it again. Stopping
    kube-apiserver plays a cluster whose API server is unreachable."""
    with _exclusive():
        state = _started_state()
        if component not in state["processes"]:
            raise ClusterError(f"'{component}' is not a component of the local cluster ({', '.join(COMPONENTS)})")
        proc = state["processes"][component]
        if _alive(proc["pid"], proc["binary"]):
            _stop(proc["pid"], proc["binary"])
        if verbose:
            print(f"stopped {component} (pid {proc['pid']}); 'restart {component}' starts it again")


def _started_state() -> dict:
    state = _load_state()
    if not state:
        raise ClusterError(f"the local cluster was never started in {STATE_DIR}; run 'make cluster-up' first")
    return state


def restart(component: str, verbose: bool = True) -> None:
    """Stop one component (by its recorded pid) and start it again with the same flags and ports (also one that
    `stop` stopped, while the API is down)."""
    with _exclusive():
        state = _started_state()
        if component not in state["processes"]:
            raise ClusterError(f"'{component}' is not a component of the local cluster ({', '.join(COMPONENTS)})")
        proc = state["processes"][component]
        if _alive(proc["pid"], proc["binary"]):
            _stop(proc["pid"], proc["binary"])
        if component == "kwok":  # stage files are generated: pick up the current ones
            (STATE_DIR / "kwok-stages.yaml").write_text(yaml.safe_dump_all(_kwok_stages(state["heartbeat_seconds"])))
        log = open(STATE_DIR / "logs" / f"{component}.log", "ab")
        started = subprocess.Popen(proc["command"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        proc["pid"] = started.pid
        STATE_FILE.write_text(json.dumps(state, indent=2))
        if component == "kube-apiserver":
            _wait("the API to become ready", lambda: _api_ready(state["server"], state["token"],
                                                                STATE_DIR / "pki" / "ca.crt"), 120,
                  {component: started})
        if verbose:
            print(f"restarted {component} (pid {started.pid})")


def require_up() -> dict:
    if not is_up():
        raise ClusterError(f"the local cluster is not up (no answering API recorded in {STATE_DIR}); "
                           "run 'make cluster-up' first")
    return _load_state()
