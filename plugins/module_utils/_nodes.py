# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

Reading and classifying nodes, shared by the info module, the inventory plugin,
the event source and the runbook: the classification options (documented once in
the `classification` doc fragment) and one function from options to results.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import Catalog, load_catalog
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import (
    Options,
    classify_node,
    needs_attention,
    summarize,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client, KubernetesError

if TYPE_CHECKING:
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import Call

NODES = "/api/v1/nodes"

_DEFAULTS = Options()
CLASSIFY_ARG_SPEC: dict[str, dict[str, Any]] = {
    "catalog_file": {"type": "path"},
    "catalog": {"type": "raw"},
    "pool_label": {"type": "str", "default": _DEFAULTS.pool_label},
    "accelerator_label": {"type": "str", "default": _DEFAULTS.accelerator_label},
    "flavor_count_labels": {"type": "list", "elements": "str", "default": list(_DEFAULTS.flavor_count_labels)},
    "accelerator_resources": {"type": "list", "elements": "str", "default": list(_DEFAULTS.accelerator_resources)},
    "nt_unknown": {"type": "str", "choices": ["suspect", "fault", "ignore"]},
}


def options_from(params: dict[str, Any]) -> Options:
    return Options(
        pool_label=params.get("pool_label") or _DEFAULTS.pool_label,
        accelerator_label=params.get("accelerator_label") or _DEFAULTS.accelerator_label,
        flavor_count_labels=tuple(params.get("flavor_count_labels") or _DEFAULTS.flavor_count_labels),
        accelerator_resources=tuple(params.get("accelerator_resources") or _DEFAULTS.accelerator_resources),
        nt_unknown=params.get("nt_unknown"),
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


def read_nodes(client: Client, names: Iterable[str] | None = None, label_selector: str | None = None) -> list[dict]:
    """Raw Node JSON: the named nodes (a missing one is an error), or a paged list."""
    if names:
        return [read_node(client, name) for name in names]
    return client.list(NODES, label_selector=label_selector, what="listing nodes", resource="nodes")


def classify_all(nodes: Iterable[dict], catalog: Catalog, options: Options,
                 now: dt.datetime | None = None) -> list[dict]:
    now = now or utcnow()
    return [classify_node(node, catalog, options, now) for node in nodes]


def report(classified: list[dict]) -> dict[str, Any]:
    """What node_faults_info returns beside the per-node facts."""
    faulty = [{"name": n["name"], "pool": n["pool"], "action": n["action"],
               "faults": sorted({f["type"] for f in n["faults"]}), "state": n["state"],
               "excluded": n["excluded"], "cordon_owner": n["cordon_owner"]}
              for n in classified if n["health"] == "faulty"]
    return {
        "faulty_nodes": faulty,
        "suspect_nodes": [n["name"] for n in classified if n["health"] == "suspect"],
        "pools": summarize(classified),
    }


def faults_info(call: Call) -> dict[str, Any]:
    """node_faults_info: read and classify; the pool counts always cover every node read."""
    params = call.params
    catalog = catalog_from(params)
    classified = classify_all(read_nodes(call.client, params["names"], params["label_selector"]), catalog,
                              options_from(params))
    result = report(classified)
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
        "status": {k: status[k] for k in ("conditions", "capacity", "allocatable", "addresses") if k in status},
    }
