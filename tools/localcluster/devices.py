"""The local cluster's device-plugin, as far as Kubernetes sees one: KWOK runs no kubelet, so nothing
allocates cards. This plays what Ascend's device plugin publishes: the cards allocated to each pod (a pod
annotation named after the resource, "Ascend910-0,Ascend910-1") and the node's unhealthy cards (the node
annotation "<resource>-Unhealthy"), with allocatable lowered to the healthy count. NVIDIA's device plugin
publishes no such mapping: GPU nodes get only the allocatable change."""

from __future__ import annotations

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client
from tools.localcluster.nodes import GPU_RESOURCE, NODES, NPU_RESOURCE, ClusterError, _get_node, client

CARD_PREFIX = {NPU_RESOURCE: "Ascend910-"}  # what the Ascend device plugin calls its cards


def card_name(resource: str, index: int) -> str:
    return f"{CARD_PREFIX.get(resource, 'card-')}{index}"


def unhealthy_key(resource: str) -> str:
    return f"{resource}-Unhealthy"


def _resource_of(node: dict) -> str:
    capacity = node["status"].get("capacity") or {}
    return NPU_RESOURCE if NPU_RESOURCE in capacity else GPU_RESOURCE


def _requested(pod: dict, resource: str) -> int:
    return sum(int((c.get("resources") or {}).get("limits", {}).get(resource, 0)) for c in pod["spec"]["containers"])


def allocate(names: list[str], api: Client | None = None) -> dict[str, dict[str, str]]:
    """Give every active pod on the nodes that holds NPU cards its cards, as the device plugin's Allocate does:
    a pod keeps cards it has; a new one gets the lowest healthy free ones. Returns {node: {pod: cards}}."""
    api = api or client()
    placed: dict[str, dict[str, str]] = {}
    for name in names:
        node = _get_node(api, name)
        resource = _resource_of(node)
        if resource not in CARD_PREFIX:
            continue  # NVIDIA's plugin publishes no per-pod assignment
        total = int(node["status"]["capacity"][resource])
        unhealthy = set(((node["metadata"].get("annotations") or {}).get(unhealthy_key(resource)) or "").split(","))
        pods = [p for p in api.list("/api/v1/pods", field_selector=f"spec.nodeName={name}")
                if p["status"].get("phase") in ("Pending", "Running") and not p["metadata"].get("deletionTimestamp")
                and _requested(p, resource)]
        used = {card for p in pods for card in ((p["metadata"].get("annotations") or {}).get(resource) or "").split(",")
                if card}
        free = [card_name(resource, i) for i in range(total) if card_name(resource, i) not in used | unhealthy]
        placed[name] = {}
        for pod in sorted(pods, key=lambda p: p["metadata"]["creationTimestamp"]):
            meta = pod["metadata"]
            cards = (meta.get("annotations") or {}).get(resource)
            if not cards:
                wanted = _requested(pod, resource)
                if len(free) < wanted:
                    raise ClusterError(f"node {name} has {len(free)} healthy free cards, pod {meta['name']} wants {wanted}")
                cards, free = ",".join(free[:wanted]), free[wanted:]
                api.patch(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                          {"metadata": {"annotations": {resource: cards}}},
                          what=f"allocating cards {cards} to pod {meta['name']}")
            placed[name][meta["name"]] = cards
    return placed


def fail_cards(name: str, indices: list[int], api: Client | None = None) -> list[str]:
    """Cards go bad: named in the node's Unhealthy annotation (NPU) and taken out of allocatable."""
    api = api or client()
    node = _get_node(api, name)
    resource = _resource_of(node)
    total = int(node["status"]["capacity"][resource])
    if any(i < 0 or i >= total for i in indices):
        raise ClusterError(f"card indices {indices} are outside 0..{total - 1} on node {name}")
    cards = sorted({card_name(resource, i) for i in indices})
    if resource in CARD_PREFIX:
        api.patch(f"{NODES}/{name}", {"metadata": {"annotations": {unhealthy_key(resource): ",".join(cards)}}},
                  what=f"marking cards {cards} unhealthy on {name}")
    api.patch(f"{NODES}/{name}/status", {"status": {"allocatable": {resource: str(total - len(cards))}}},
              what=f"lowering allocatable on {name}")
    return cards


def heal_cards(name: str, api: Client | None = None) -> None:
    """Every card healthy again: the annotation gone, allocatable back to capacity."""
    api = api or client()
    node = _get_node(api, name)
    resource = _resource_of(node)
    if resource in CARD_PREFIX:
        api.patch(f"{NODES}/{name}", {"metadata": {"annotations": {unhealthy_key(resource): None}}},
                  what=f"clearing unhealthy cards on {name}")
    api.patch(f"{NODES}/{name}/status", {"status": {"allocatable": {resource: node["status"]["capacity"][resource]}}},
              what=f"restoring allocatable on {name}")
