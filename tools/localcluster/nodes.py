"""Accelerator nodes that look like a real AI pool, and the fault injector that
plays node-agent (NodeConditions) and device-plugin (allocatable)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client, KubernetesError

from . import cluster as _cluster
from .cluster import HOLD_READY_LABEL, KWOK_MANAGED_LABEL, ClusterError, require_up

NODES = "/api/v1/nodes"

# Labels the real cluster's provisioning puts on nodes (keys are configurable in the collection).
POOL_LABEL = "ai-infra.io/pool"
ACCELERATOR_LABEL = "accelerator"
FLAVOR_COUNT_LABEL = "ai-infra.io/accelerator-count"

NPU_RESOURCE = "huawei.com/ascend-1980"
GPU_RESOURCE = "nvidia.com/gpu"

# What node-agent writes on an NPU node (ModelArts NodeCondition types).
NPU_AGENT_CONDITIONS = ("NT_NPU_DEVICE", "NT_NPU_NET", "NT_NPU_CARD_LOSE", "NT_NPU_OTHER", "NT_NPU_ECC_COUNT",
                        "NT_NET_NTP_CHECK", "NT_KUBE_DISK_READONLY_CHECK")
GPU_AGENT_CONDITIONS = ("NT_NET_NTP_CHECK", "NT_KUBE_DISK_READONLY_CHECK", "GPUDeviceLost", "GPUDoubleBitEccError",
                        "GPUXIDFatalError", "GPUNvlinkError", "GPUPCIeError")
# Node Problem Detector conditions and the reason it writes while healthy.
NPD_CONDITIONS = {"KernelDeadlock": "KernelHasNoDeadlock", "ReadonlyFilesystem": "FilesystemIsNotReadOnly",
                  "FrequentKubeletRestart": "NoFrequentKubeletRestart",
                  "FrequentContainerdRestart": "NoFrequentContainerdRestart"}
KUBELET_HEALTHY_REASONS = {"MemoryPressure": "KubeletHasSufficientMemory", "DiskPressure": "KubeletHasNoDiskPressure",
                           "PIDPressure": "KubeletHasSufficientPID", "NetworkUnavailable": "RouteCreated"}
STATUSES = ("True", "False", "Unknown")


@dataclass(frozen=True)
class Pool:
    name: str
    kind: str  # npu or gpu
    size: int

    @property
    def resource(self) -> str:
        return NPU_RESOURCE if self.kind == "npu" else GPU_RESOURCE


DEFAULT_POOLS = (Pool("npu-a", "npu", 16), Pool("npu-b", "npu", 8), Pool("gpu-a", "gpu", 16))


def client() -> Client:
    require_up()
    return Client({"kubeconfig": str(_cluster.KUBECONFIG)}, pool_size=64)  # the state directory in use


def rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def healthy_condition(ctype: str, since: str) -> dict:
    if ctype in NPD_CONDITIONS:
        reason, message = NPD_CONDITIONS[ctype], "ok"
    elif ctype in KUBELET_HEALTHY_REASONS:
        reason, message = KUBELET_HEALTHY_REASONS[ctype], "ok"
    elif ctype.startswith("NT_"):
        reason, message = "os_task_name:" + ctype[3:].lower().replace("_", "-"), "ok"
    else:
        reason, message = f"{ctype}Healthy", "ok"
    return {"type": ctype, "status": "False", "lastHeartbeatTime": None, "lastTransitionTime": since,
            "reason": reason, "message": message}


def agent_conditions(kind: str) -> tuple[str, ...]:
    return (NPU_AGENT_CONDITIONS if kind == "npu" else GPU_AGENT_CONDITIONS) + tuple(NPD_CONDITIONS)


def node_manifest(pool: Pool, index: int, name_prefix: str = "") -> dict:
    name = f"{name_prefix}{pool.name}-{index:04d}"
    since = rfc3339(dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=7))
    # A stable, unique 10.x address per node, like a VPC subnet per pool.
    address = str(ipaddress.IPv4Address("10.16.0.0") + (zlib.crc32(pool.name.encode()) % 200) * 65536 + index + 10)
    resources = {"cpu": "192", "memory": "1536Gi", "pods": "250", "ephemeral-storage": "3Ti", pool.resource: "8"}
    flavor = "ascend-snt9b.8xlarge" if pool.kind == "npu" else "gpu-h100.8xlarge"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64" if pool.kind == "gpu" else "arm64",
                "node.kubernetes.io/instance-type": flavor,
                POOL_LABEL: pool.name,
                ACCELERATOR_LABEL: "huawei-Ascend910" if pool.kind == "npu" else "nvidia-H100",
                FLAVOR_COUNT_LABEL: "8",
                KWOK_MANAGED_LABEL: "true",
            },
            "annotations": {"kwok.x-k8s.io/node": "fake"},
        },
        "spec": {"providerID": f"kwok://{name}"},
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}],
            "conditions": [healthy_condition(c, since) for c in agent_conditions(pool.kind)],
        },
    }


def create_nodes(manifests: list[dict], api: Client | None = None, workers: int = 32) -> int:
    """Create nodes concurrently; existing ones are left as they are. Returns how many were created."""
    api = api or client()

    def create(manifest: dict) -> int:
        try:
            api.request("POST", NODES, body=manifest, what=f"creating node {manifest['metadata']['name']}")
            return 1
        except KubernetesError as err:
            if err.status == 409:
                return 0
            raise

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(create, manifests))


def populate(pools: tuple[Pool, ...] = DEFAULT_POOLS, name_prefix: str = "") -> list[str]:
    manifests = [node_manifest(p, i, name_prefix) for p in pools for i in range(p.size)]
    create_nodes(manifests)
    return [m["metadata"]["name"] for m in manifests]


def _get_node(api: Client, name: str) -> dict:
    try:
        return api.get(f"{NODES}/{name}", what=f"reading node {name}")
    except KubernetesError as err:
        if err.status == 404:
            raise ClusterError(f"node '{name}' does not exist in the local cluster") from None
        raise


def parse_duration(text: str) -> dt.timedelta:
    match = re.fullmatch(r"(\d+)([smhd]?)", text.strip())
    if not match:
        raise ClusterError(f"'{text}' is not a duration; use a number with s, m, h or d, like 90s or 10m")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return dt.timedelta(seconds=int(match.group(1)) * unit)


def set_condition(names: str | list[str], ctype: str, status: str, reason: str | None = None,
                  message: str | None = None, ago: dt.timedelta = dt.timedelta(0), api: Client | None = None) -> dict:
    """Write one NodeCondition on each node like node-agent does (status subresource, merged by type)."""
    if status not in STATUSES:
        raise ClusterError(f"condition status must be one of {', '.join(STATUSES)}, not '{status}'")
    names = [names] if isinstance(names, str) else list(names)
    api = api or client()
    nodes = [_get_node(api, name) for name in names]
    if ctype == "Ready":
        _hold_ready(api, nodes, status)
    since = rfc3339(dt.datetime.now(dt.timezone.utc) - ago)
    condition = {"type": ctype, "status": status, "lastTransitionTime": since, "lastHeartbeatTime": since,
                 "reason": reason or ("os_task_name:" + ctype[3:].lower().replace("_", "-") if ctype.startswith("NT_")
                                      else f"Injected{status}"),
                 "message": message or ("ok" if status == ("True" if ctype == "Ready" else "False")
                                        else f"{ctype} injected {status}")}
    for name in names:
        api.patch(f"{NODES}/{name}/status", {"status": {"conditions": [condition]}}, patch_type="strategic",
                  what=f"injecting {ctype}={status} on node {name}")
    return condition


def _hold_ready(api: Client, nodes: list[dict], status: str) -> None:
    """Stop kwok from writing Ready on these nodes: False keeps kwok's lease (the kubelet is alive
    but NotReady), Unknown stops kwok entirely (the kubelet is gone).

    kwok does not cancel a heartbeat it already scheduled when a node stops matching it, so
    wait until any such heartbeat has fired before writing Ready."""
    labels = {HOLD_READY_LABEL: "true", KWOK_MANAGED_LABEL: "true"}
    if status == "Unknown":
        labels.update({HOLD_READY_LABEL: None, KWOK_MANAGED_LABEL: None})
    elif status == "True":
        labels[HOLD_READY_LABEL] = None
    newly_held = False
    for node in nodes:
        current = node["metadata"].get("labels") or {}
        if all(current.get(k) == val for k, val in labels.items()):
            continue
        newly_held = True
        api.patch(f"{NODES}/{node['metadata']['name']}", {"metadata": {"labels": labels}},
                  what=f"changing kwok management of node {node['metadata']['name']}")
    if newly_held and status != "True":
        time.sleep(require_up()["heartbeat_seconds"] * 1.5 + 1)


def set_allocatable(name: str, count: int | None, resource: str | None = None, api: Client | None = None) -> dict:
    """Lower (or, with None, restore to capacity) the usable accelerators, like the device-plugin."""
    api = api or client()
    node = _get_node(api, name)
    capacity = node["status"].get("capacity") or {}
    resource = resource or next((r for r in capacity if r in (NPU_RESOURCE, GPU_RESOURCE)), None)
    if resource is None or resource not in capacity:
        raise ClusterError(f"node '{name}' has no accelerator resource {resource or ''} in its capacity".replace("  ", " "))
    value = capacity[resource] if count is None else str(count)
    if count is not None and not 0 <= count <= int(capacity[resource]):
        raise ClusterError(f"allocatable {count} is outside 0..{capacity[resource]} for {resource} on node '{name}'")
    api.patch(f"{NODES}/{name}/status", {"status": {"allocatable": {resource: value}}},
              what=f"setting allocatable {resource}={value} on node {name}")
    return {"resource": resource, "allocatable": value, "capacity": capacity[resource]}


def clear(name: str, api: Client | None = None) -> list[str]:
    """Undo every injection: agent conditions back to healthy, allocatable back to capacity, Ready managed by kwok."""
    api = api or client()
    node = _get_node(api, name)
    labels = node["metadata"].get("labels") or {}
    since = rfc3339(dt.datetime.now(dt.timezone.utc))
    changed = []
    conditions = []
    for cond in node["status"].get("conditions") or []:
        if cond["type"] == "Ready" or cond.get("status") == "False":
            continue
        conditions.append(healthy_condition(cond["type"], since))
        changed.append(cond["type"])
    patch: dict = {"status": {}}
    if conditions:
        patch["status"]["conditions"] = conditions
    capacity = node["status"].get("capacity") or {}
    allocatable = node["status"].get("allocatable") or {}
    restore = {r: capacity[r] for r in (NPU_RESOURCE, GPU_RESOURCE) if r in capacity and allocatable.get(r) != capacity[r]}
    if restore:
        patch["status"]["allocatable"] = restore
        changed += [f"allocatable {r}" for r in restore]
    if patch["status"]:
        api.patch(f"{NODES}/{name}/status", patch, patch_type="strategic", what=f"clearing faults on node {name}")
    if labels.get(HOLD_READY_LABEL) or labels.get(KWOK_MANAGED_LABEL) != "true":
        _hold_ready(api, [node], "True")
        changed.append("Ready")
    return changed


def settled(node: dict) -> bool:
    """Whether the node lifecycle controller has done its first pass over a Ready node: beta labels
    added, its not-ready taint gone (it changes new nodes on its own time)."""
    labels = node["metadata"].get("labels") or {}
    taints = node["spec"].get("taints") or []
    return "beta.kubernetes.io/arch" in labels and not any(t["key"].startswith("node.kubernetes.io/") for t in taints)


def wait_ready(names: list[str], timeout: float = 120, api: Client | None = None,
               label_selector: str | None = None, settle: bool = False) -> None:
    """Until every named node is Ready (and, with settle, settled by the node lifecycle controller)."""
    api = api or client()
    wanted = set(names)
    deadline = time.monotonic() + timeout
    while True:
        ready = {n["metadata"]["name"] for n in api.list(NODES, resource="nodes", label_selector=label_selector)
                 if n["metadata"]["name"] in wanted and any(
                     c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions") or [])
                 and (not settle or settled(n))}
        if ready >= wanted:
            return
        if time.monotonic() > deadline:
            missing = sorted(wanted - ready)
            raise ClusterError(f"{len(missing)} nodes not Ready{' and settled' if settle else ''} after "
                               f"{timeout:.0f}s, e.g. {', '.join(missing[:5])}")
        time.sleep(0.5)
