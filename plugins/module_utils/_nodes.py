# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

Reading and classifying nodes, shared by the info module, the inventory plugin,
the event source and the runbook: the classification options (documented once in
the `classification` doc fragment) and one function from options to results.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Optional

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import Catalog, load_catalog
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import (
    Options,
    classify_node,
    needs_attention,
    recent_isolations,
    summarize,
    summarize_domains,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import (
    Client,
    KubernetesError,
    cluster_identity,
    object_path,
)

if TYPE_CHECKING:
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import Call

NODES = "/api/v1/nodes"
READ_PARALLEL = 16

CONFLICT_ATTEMPTS = 30  # ~25 s of jittered retries: enough for a node that changes every few ms
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"

PatchBuilder = Callable[[dict], Optional[dict]]


def annotations_of(node: dict) -> dict:
    return (node.get("metadata") or {}).get("annotations") or {}


def node_is_ready(node: dict) -> bool:
    """False when the kubelet cannot confirm anything: Ready not True, or the unreachable taint."""
    if any(t.get("key") == UNREACHABLE_TAINT for t in (node.get("spec") or {}).get("taints") or []):
        return False
    ready = next((c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None)
    return bool(ready) and ready.get("status") == "True"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch applied to a copy (what the API server does), for check mode."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def combine(*patches: dict | None) -> dict:
    """Deep-merge merge-patch bodies into one, keeping their nulls (which delete keys on the server)."""
    result: dict = {}
    for patch in patches:
        for key, value in (patch or {}).items():
            if isinstance(value, dict) and isinstance(result.get(key), dict):
                result[key] = combine(result[key], value)
            else:
                result[key] = copy.deepcopy(value)
    return result


def patch_node(client: Client, name: str, build: PatchBuilder, what: str,
               current: dict | None = None) -> tuple[dict, dict | None]:
    """Read (or start from `current`, just read by the caller), build a merge patch from what is there,
    write it guarded by resourceVersion; on a 409 conflict (someone changed the node meanwhile) read
    again and rebuild. Returns (node, patch)."""
    for attempt in range(CONFLICT_ATTEMPTS):
        if attempt:  # jittered backoff, so two writers retrying do not collide again
            time.sleep(min(0.01 * 2 ** attempt, 1.0) * random.uniform(0.5, 1.5))
        node = current if current is not None and not attempt else read_node(client, name)
        patch = build(node)
        if patch is None:
            return node, None
        guarded = combine(patch, {"metadata": {"resourceVersion": node["metadata"]["resourceVersion"]}})
        try:
            return client.patch(object_path(NODES, name), guarded, what=what, verb="patch", resource="nodes"), patch
        except KubernetesError as err:
            if err.status != 409:
                raise
            client.conflicts_retried += 1
    raise KubernetesError(f"{what} failed: the node kept changing under us (HTTP 409 conflict "
                          f"{CONFLICT_ATTEMPTS} times)", status=409)


_DEFAULTS = Options()
CLASSIFY_ARG_SPEC: dict[str, dict[str, Any]] = {
    "catalog_file": {"type": "path"},
    "catalog": {"type": "raw"},
    "pool_label": {"type": "str", "default": _DEFAULTS.pool_label},
    "accelerator_label": {"type": "str", "default": _DEFAULTS.accelerator_label},
    "flavor_count_labels": {"type": "list", "elements": "str", "default": list(_DEFAULTS.flavor_count_labels)},
    "accelerator_resources": {"type": "list", "elements": "str", "default": list(_DEFAULTS.accelerator_resources)},
    "nt_unknown": {"type": "str", "choices": ["suspect", "fault", "ignore"]},
    "domain_labels": {"type": "list", "elements": "str", "default": []},
    "unhealthy_cards_annotation": {"type": "str", "default": _DEFAULTS.unhealthy_cards_annotation},
    "card_assignment_annotation": {"type": "str", "default": _DEFAULTS.card_assignment_annotation},
}


def options_from(params: dict[str, Any]) -> Options:
    return Options(
        pool_label=params.get("pool_label") or _DEFAULTS.pool_label,
        accelerator_label=params.get("accelerator_label") or _DEFAULTS.accelerator_label,
        flavor_count_labels=tuple(params.get("flavor_count_labels") or _DEFAULTS.flavor_count_labels),
        accelerator_resources=tuple(params.get("accelerator_resources") or _DEFAULTS.accelerator_resources),
        nt_unknown=params.get("nt_unknown"),
        domain_labels=tuple(dict.fromkeys(label for label in params.get("domain_labels") or () if label)),
        unhealthy_cards_annotation=params.get("unhealthy_cards_annotation") or _DEFAULTS.unhealthy_cards_annotation,
        card_assignment_annotation=params.get("card_assignment_annotation") or _DEFAULTS.card_assignment_annotation,
    )


def catalog_from(params: dict[str, Any]) -> Catalog:
    return load_catalog(overrides=params.get("catalog"), path=params.get("catalog_file"))


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def read_node(client: Client, name: str) -> dict:
    """One node's raw JSON; a missing node is one sentence."""
    node = client.get_or_none(f"{NODES}/{name}", what=f"reading node {name}", verb="get", resource="nodes")
    if node is None:
        raise KubernetesError(f"node '{name}' does not exist", status=404)
    return node


def write_node(client: Client, name: str, build: PatchBuilder, check_mode: bool, what: str,
               current: dict | None = None) -> tuple[dict, dict, bool]:
    """One guarded node write (patch_node), or in check mode the node as the write would leave it:
    (before, after, changed)."""
    if check_mode:
        before = current if current is not None else read_node(client, name)
        patch = build(before)
        return before, (merge_patch(before, patch) if patch else before), patch is not None
    holder: dict = {}

    def remember(node: dict) -> dict | None:
        holder["before"] = node
        return build(node)

    after, patch = patch_node(client, name, remember, what, current=current)
    return holder["before"], after, patch is not None


def read_nodes(client: Client, names: Iterable[str] | None = None, label_selector: str | None = None,
               missing: list[str] | None = None) -> list[dict]:
    """Raw Node JSON: the named nodes, read at once, or a paged list. A missing named node is an error, or,
    when a `missing` list is given, added to it."""
    if names:
        names = list(names)

        def read(name: str) -> dict | None:
            if missing is None:
                return read_node(client, name)
            return client.get_or_none(f"{NODES}/{name}", what=f"reading node {name}", verb="get", resource="nodes")

        with ThreadPoolExecutor(max_workers=min(READ_PARALLEL, len(names))) as pool:
            found = list(pool.map(read, names))
        if missing is not None:
            missing += [name for name, node in zip(names, found) if node is None]
        return [node for node in found if node is not None]
    return client.list(NODES, label_selector=label_selector, what="listing nodes", resource="nodes")


def classify_all(nodes: Iterable[dict], catalog: Catalog, options: Options,
                 now: dt.datetime | None = None, devices: dict[str, dict] | None = None) -> list[dict]:
    now = now or utcnow()
    devices = devices or {}
    return [classify_node(node, catalog, options, now, devices.get((node.get("metadata") or {}).get("name")))
            for node in nodes]


def fault_summary(classified: list[dict], domain_labels: Iterable[str] = ()) -> dict[str, Any]:
    """What node_faults_info returns beside the per-node facts."""
    faulty = [{"name": n["name"], "pool": n["pool"], "action": n["action"],
               "faults": sorted({f["type"] for f in n["faults"]}), "state": n["state"],
               "excluded": n["excluded"], "cordon_owner": n["cordon_owner"]}
              for n in classified if n["health"] == "faulty"]
    return {
        "faulty_nodes": faulty,
        "suspect_nodes": [n["name"] for n in classified if n["health"] == "suspect"],
        "pools": summarize(classified),
        "domains": summarize_domains(classified, domain_labels),
    }


def paused_by(configmap: dict | None) -> dict | None:
    """The pause switch as node_faults_info reports it: None when the ConfigMap does not exist."""
    if configmap is None:
        return None
    meta = configmap.get("metadata") or {}
    data = configmap.get("data") or {}
    return {"configmap": f"{meta.get('namespace')}/{meta.get('name')}",
            "reason": str(data.get("reason") or "").strip() or "no reason given",
            "by": str(data.get("by") or "").strip() or None,
            "since": str(data.get("since") or "").strip() or meta.get("creationTimestamp")}


def read_pause(client: Client, namespace: str, name: str) -> dict | None:
    """Whether a person paused every face of the collection (the ConfigMap exists); an empty name: not checked."""
    if not name:
        return None
    found = client.get_or_none(f"/api/v1/namespaces/{namespace}/configmaps/{name}",
                               what=f"reading the pause switch (ConfigMap {namespace}/{name})", verb="get",
                               resource="configmaps")
    return paused_by(found)


def faults_info(call: Call) -> dict[str, Any]:
    """node_faults_info: read and classify; the pool counts always cover every node read."""
    params = call.params
    catalog = catalog_from(params)
    client = call.client
    # The engine imports this module: imported here, where the DRA devices are read.
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._device_taint import read_devices

    missing: list[str] = []
    device_warnings: list[str] = []
    # The small reads go while the nodes are read; their answers (and warnings) are taken after the nodes', so a
    # credential that may not list nodes is told that alone.
    with ThreadPoolExecutor(max_workers=3) as pool:
        devices_read = pool.submit(read_devices, client, device_warnings.append)
        identity_read = pool.submit(cluster_identity, client)
        pause_read = pool.submit(read_pause, client, params["pause_namespace"] or v.PAUSE_NAMESPACE,
                                 params["pause_name"])
        if params["names"] and params["ignore_missing"]:
            read = read_nodes(client, params["names"], missing=missing)
        else:
            read = read_nodes(client, params["names"], params["label_selector"])
        devices, cluster, paused = devices_read.result(), identity_read.result(), pause_read.result()
    for warning in device_warnings:
        call.warn(warning)
    options = options_from(params)
    now = utcnow()
    classified = classify_all(read, catalog, options, now, devices)
    result = fault_summary(classified, options.domain_labels)
    result["isolations"] = recent_isolations(classified, now, params["isolation_window"])
    result["missing_nodes"] = missing
    result["cluster"] = cluster
    result["paused"] = paused
    result["nodes"] = classified if params["include_healthy"] else [n for n in classified if needs_attention(n)]
    return result


def slim_node(node: dict) -> dict:
    """Only what classification and the inventory read: a tenth of the memory at scale, and cacheable."""
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    return {
        "metadata": {"name": meta.get("name"), "labels": meta.get("labels") or {},
                     "annotations": {k: val for k, val in (meta.get("annotations") or {}).items()
                                     if k != "kubectl.kubernetes.io/last-applied-configuration"}},
        "spec": {k: spec[k] for k in ("unschedulable", "providerID", "taints") if k in spec},
        "status": {**{k: status[k] for k in ("conditions", "capacity", "allocatable", "addresses") if k in status},
                   "nodeInfo": {k: val for k, val in (status.get("nodeInfo") or {}).items()
                                if k in ("bootID", "machineID")}},
    }
