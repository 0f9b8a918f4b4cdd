"""The local cluster plays a DRA driver (Kubernetes dynamic resource allocation, docs/dra.md): a DeviceClass per
accelerator kind, one ResourceSlice per accelerator node with one device per card (npu-0 ... npu-7), and a card
marked faulty the way a DRA driver signals it in Kubernetes 1.36: a taint on the device in its ResourceSlice.

    python -m tools.localcluster dra publish [NODE ...]          every accelerator node when none is named
    python -m tools.localcluster dra fault NODE DEVICE [--effect NoExecute|NoSchedule|None] [--reason R]
    python -m tools.localcluster dra heal NODE [DEVICE]          removes the driver's taints (every device: none named)
    python -m tools.localcluster dra unpublish [NODE ...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client, KubernetesError

from .cluster import ClusterError
from .nodes import GPU_RESOURCE, NODES, NPU_RESOURCE, client

RESOURCE_API = "/apis/resource.k8s.io/v1"
SLICES = f"{RESOURCE_API}/resourceslices"
CLASSES = f"{RESOURCE_API}/deviceclasses"

# The driver each kind of node publishes its cards with; a DeviceClass of the same name selects them.
DRIVERS = {"npu": "npu.dra.ai-infra.io", "gpu": "gpu.dra.ai-infra.io"}
KIND_OF_RESOURCE = {NPU_RESOURCE: "npu", GPU_RESOURCE: "gpu"}
MODELS = {"npu": ("Ascend910B", "64Gi"), "gpu": ("H100", "80Gi")}
# The taint the driver puts on a device it finds unhealthy (its own key: not the collection's).
FAULT_TAINT_SUFFIX = "unhealthy"
EFFECTS = ("NoExecute", "NoSchedule", "None")


def fault_taint_key(driver: str) -> str:
    return f"{driver}/{FAULT_TAINT_SUFFIX}"


def device_class(kind: str) -> dict:
    driver = DRIVERS[kind]
    return {"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": driver},
            "spec": {"selectors": [{"cel": {"expression": f'device.driver == "{driver}"'}}]}}


def slice_name(node: str, driver: str) -> str:
    return f"{node}-{driver}"


def node_kind(node: dict) -> tuple[str, int] | None:
    """(kind, card count) of an accelerator node from its capacity; None for any other node."""
    capacity = (node.get("status") or {}).get("capacity") or {}
    for resource, kind in KIND_OF_RESOURCE.items():
        if resource in capacity:
            return kind, int(capacity[resource])
    return None


def slice_manifest(node: dict) -> dict | None:
    """The ResourceSlice a node-local DRA driver publishes for the node: its pool is named after the node, one
    device per card with the attributes a driver gives (index, model, uuid) and its memory; owned by the Node, so
    the garbage collector removes it with the node (as the kubelet's DRA plugin registration does)."""
    found = node_kind(node)
    if not found:
        return None
    kind, count = found
    meta = node["metadata"]
    name, driver = meta["name"], DRIVERS[kind]
    model, memory = MODELS[kind]
    devices = []
    for index in range(count):
        uuid = hashlib.sha256(f"{name}/{index}".encode()).hexdigest()[:32]
        devices.append({"name": f"{kind}-{index}",
                        "attributes": {"index": {"int": index}, "model": {"string": model},
                                       "uuid": {"string": f"{kind.upper()}-{uuid}"}},
                        "capacity": {"memory": {"value": memory}}})
    return {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
        "metadata": {"name": slice_name(name, driver),
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": meta["uid"],
                                          "controller": True}]},
        "spec": {"driver": driver, "nodeName": name,
                 "pool": {"name": name, "generation": 1, "resourceSliceCount": 1},
                 "devices": devices},
    }


def ensure_device_classes(api: Client) -> list[str]:
    for kind in DRIVERS:
        try:
            api.request("POST", CLASSES, body=device_class(kind), what=f"creating DeviceClass {DRIVERS[kind]}")
        except KubernetesError as err:
            if err.status != 409:
                raise
    return list(DRIVERS.values())


def _nodes(api: Client, names: list[str] | None) -> list[dict]:
    if not names:
        return [n for n in api.list(NODES) if node_kind(n)]
    found = []
    for name in names:
        node = api.get_or_none(f"{NODES}/{name}", what=f"reading node {name}")
        if node is None:
            raise ClusterError(f"node '{name}' does not exist")
        if not node_kind(node):
            raise ClusterError(f"node '{name}' has no accelerator resource ({', '.join(KIND_OF_RESOURCE)})")
        found.append(node)
    return found


def publish(names: list[str] | None = None, api: Client | None = None) -> list[str]:
    """The DeviceClasses and each node's ResourceSlice (an existing slice is left as it is). Returns slice names."""
    api = api or client()
    ensure_device_classes(api)
    published = []
    for node in _nodes(api, names):
        manifest = slice_manifest(node)
        try:
            api.request("POST", SLICES, body=manifest, what=f"publishing ResourceSlice of node {node['metadata']['name']}")
        except KubernetesError as err:
            if err.status != 409:
                raise
        published.append(manifest["metadata"]["name"])
    return published


def unpublish(names: list[str] | None = None, api: Client | None = None) -> list[str]:
    api = api or client()
    removed = []
    for node in _nodes(api, names):
        manifest = slice_manifest(node)
        try:
            api.request("DELETE", f"{SLICES}/{manifest['metadata']['name']}")
            removed.append(manifest["metadata"]["name"])
        except KubernetesError as err:
            if err.status != 404:
                raise
    return removed


def node_slice(node: str, api: Client) -> dict:
    """The ResourceSlice we published for the node."""
    for driver in DRIVERS.values():
        found = api.get_or_none(f"{SLICES}/{slice_name(node, driver)}", what=f"reading the ResourceSlice of {node}")
        if found is not None:
            return found
    raise ClusterError(f"node '{node}' has no ResourceSlice: run 'dra publish {node}' first")


def _rewrite_taints(node: str, device: str | None, change, api: Client) -> dict:
    """Rewrite the taints of one device (every device when None) with change(device's taints, driver) -> taints,
    guarded by the slice's resourceVersion and tried again on a conflict."""
    for _attempt in range(5):
        current = node_slice(node, api)
        devices = current["spec"]["devices"]
        names = [d["name"] for d in devices]
        if device is not None and device not in names:
            raise ClusterError(f"node '{node}' has no device '{device}' (it has {', '.join(names)})")
        for entry in devices:
            if device is None or entry["name"] == device:
                taints = change(list(entry.get("taints") or []), current["spec"]["driver"])
                if taints:
                    entry["taints"] = taints
                else:
                    entry.pop("taints", None)
        try:
            return api.request("PUT", f"{SLICES}/{current['metadata']['name']}", body=current,
                               what=f"updating the ResourceSlice of node {node}")
        except KubernetesError as err:
            if err.status != 409:
                raise
    raise ClusterError(f"the ResourceSlice of node '{node}' kept changing under us")


def set_fault(node: str, device: str, effect: str = "NoExecute", reason: str = "DeviceFault",
              api: Client | None = None, since: dt.datetime | None = None) -> dict:
    """Play the driver finding a device unhealthy: its taint on the device (replacing an earlier one of ours).
    Returns the taint."""
    if effect not in EFFECTS:
        raise ClusterError(f"effect must be one of {', '.join(EFFECTS)}, not '{effect}'")
    api = api or client()
    taint: dict = {}

    def change(taints: list[dict], driver: str) -> list[dict]:
        taint.update({"key": fault_taint_key(driver), "value": reason, "effect": effect})
        if since is not None:
            taint["timeAdded"] = since.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return [t for t in taints if t.get("key") != taint["key"]] + [taint]

    written = _rewrite_taints(node, device, change, api)
    for entry in written["spec"]["devices"]:
        if entry["name"] == device:
            return next(t for t in entry.get("taints") or [] if t.get("key") == taint["key"])
    return taint


def heal(node: str, device: str | None = None, api: Client | None = None) -> dict:
    """Play the driver finding the device (every device: None) healthy again: its own taints removed."""
    api = api or client()
    return _rewrite_taints(node, device, lambda taints, driver: [t for t in taints
                                                                 if t.get("key") != fault_taint_key(driver)], api)


def add_parser(sub) -> None:
    dra = sub.add_parser("dra", help="play a DRA driver: DeviceClasses, ResourceSlices, device taints")
    steps = dra.add_subparsers(dest="dra_command", required=True)
    pub = steps.add_parser("publish", help="DeviceClasses and a ResourceSlice per accelerator node")
    pub.add_argument("nodes", nargs="*", metavar="NODE")
    unp = steps.add_parser("unpublish", help="remove the nodes' ResourceSlices")
    unp.add_argument("nodes", nargs="*", metavar="NODE")
    flt = steps.add_parser("fault", help="the driver taints one device of a node")
    flt.add_argument("node")
    flt.add_argument("device", help="e.g. npu-3")
    flt.add_argument("--effect", choices=EFFECTS, default="NoExecute")
    flt.add_argument("--reason", default="DeviceFault", help="the taint's value (a label value)")
    hl = steps.add_parser("heal", help="the driver's taints removed from a device (every device when none named)")
    hl.add_argument("node")
    hl.add_argument("device", nargs="?")


def run(args: argparse.Namespace) -> int:
    if args.dra_command == "publish":
        names = publish(args.nodes or None)
        print(f"{len(names)} ResourceSlices published (DeviceClasses {', '.join(DRIVERS.values())})")
    elif args.dra_command == "unpublish":
        names = unpublish(args.nodes or None)
        print(f"{len(names)} ResourceSlices removed")
    elif args.dra_command == "fault":
        taint = set_fault(args.node, args.device, args.effect, args.reason)
        print(f"{args.node}/{args.device}: taint {taint['key']}={taint.get('value', '')}:{taint['effect']} "
              f"since {taint.get('timeAdded')}")
    elif args.dra_command == "heal":
        heal(args.node, args.device)
        print(f"{args.node}/{args.device or '*'}: healthy")
    return 0


def claim_template(name: str, namespace: str, kind: str = "npu", count: int = 1) -> dict:
    """A ResourceClaimTemplate asking for `count` cards of the kind's DeviceClass (each pod gets its own claim)."""
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"spec": {"devices": {"requests": [
                {"name": kind, "exactly": {"deviceClassName": DRIVERS[kind], "allocationMode": "ExactCount",
                                           "count": count}}]}}}}


def service_with_claims(name: str, namespace: str, replicas: int, node_selector: dict | None = None,
                        kind: str = "npu", cards: int = 1) -> list[dict]:
    """A Deployment whose pods each claim `cards` cards through DRA (a ResourceClaimTemplate), not through the
    device-plugin's extended resource."""
    labels = {"app": name}
    pod = {"containers": [{"name": "main", "image": "registry.invalid/ai/workload:1.0",
                           "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "claims": [{"name": kind}]}}],
           "resourceClaims": [{"name": kind, "resourceClaimTemplateName": name}],
           "terminationGracePeriodSeconds": 30, "nodeSelector": dict(node_selector or {})}
    return [claim_template(name, namespace, kind, cards),
            {"apiVersion": "apps/v1", "kind": "Deployment",
             "metadata": {"name": name, "namespace": namespace, "labels": labels},
             "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                      "template": {"metadata": {"labels": labels}, "spec": pod}}}]
