#!/usr/bin/python
# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: node_spare
short_description: Keep hot spare nodes of a pool, and bring one into service when a node is isolated
version_added: 0.1.0
description:
  - "A hot spare is a healthy node of a pool kept out of service by the taint C(node-recovery.ai-infra.io/spare)
    (effect C(NoSchedule)). Large Ascend pools keep a few (for example 1 per 10-49 nodes, 3 per 100-249)."
  - O(state=standby) puts the node O(name) in reserve (adds the spare taint).
  - O(state=active) brings one healthy, uncordoned spare of O(pool) into service in place of the node O(replacing)
    (removes its taint and records which node it replaces). Idempotent per replaced node, a second call for the
    same O(replacing) changes nothing. No spare left is not an error, the result says so.
  - Every change leaves an annotation and a Kubernetes Event on the spare.
author:
  - ai_infra node_recovery maintainers (!UNKNOWN)
options:
  state:
    description: Put O(name) in reserve, or bring a spare of O(pool) into service.
    type: str
    choices: [standby, active]
    required: true
  name:
    description: The node to put in reserve (O(state=standby)).
    type: str
  pool:
    description: Pool to take a spare from (O(state=active)).
    type: str
  replacing:
    description: The node the spare replaces (O(state=active)).
    type: str
  pool_label:
    description: Node label whose value names the pool.
    type: str
    default: ai-infra.io/pool
extends_documentation_fragment:
  - ai_infra.node_recovery.k8s_auth
  - ansible.builtin.action_common_attributes
attributes:
  platform:
    platforms: posix
  check_mode:
    support: full
  diff_mode:
    support: full
"""

EXAMPLES = r"""
- name: Keep npu-a-0015 as the spare of its pool
  ai_infra.node_recovery.node_spare:
    state: standby
    name: npu-a-0015

- name: Replace an isolated node with a spare of its pool
  ai_infra.node_recovery.node_spare:
    state: active
    pool: npu-a
    replacing: npu-a-0003
"""

RETURN = r"""
spare:
  description: The spare node acted on (or that would be), or null when none is left.
  returned: always
  type: str
  sample: npu-a-0015
message:
  description: One sentence on what was done.
  returned: always
  type: str
diff:
  description: Taints and annotation of the spare before and after.
  returned: when diff mode or changed
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import record_event, rfc3339
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import default_catalog
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import HEALTHY, Options, classify_node
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import (
    AUTH_ARG_SPEC,
    HAS_KUBERNETES,
    KUBERNETES_IMPORT_ERROR,
    Client,
    KubernetesError,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import NODES, read_nodes, utcnow

SPARE_TAINT = {"key": v.SPARE_TAINT_KEY, "value": "true", "effect": "NoSchedule"}


def _taints(node: dict) -> list[dict]:
    return list((node.get("spec") or {}).get("taints") or [])


def _patch_taints(client: Client, node: dict, taints: list[dict], annotations: dict) -> None:
    # The resourceVersion makes a concurrent change to the taints fail (409) instead of being overwritten.
    body = {"metadata": {"resourceVersion": node["metadata"]["resourceVersion"], "annotations": annotations},
            "spec": {"taints": taints}}
    client.patch(f"{NODES}/{node['metadata']['name']}", body, what=f"updating the spare taint of node "
                 f"{node['metadata']['name']}", verb="patch", resource="nodes")


def standby(client: Client, name: str, check_mode: bool) -> dict:
    (node,) = read_nodes(client, [name])
    before = _taints(node)
    if any(t.get("key") == v.SPARE_TAINT_KEY for t in before):
        return {"changed": False, "spare": name, "message": f"{name} is already a spare"}
    after = before + [SPARE_TAINT]
    if not check_mode:
        _patch_taints(client, node, after, {v.SPARE_FOR: None})
        record_event(client, node, v.EVENT_SPARE, f"{name} kept in reserve as a hot spare of its pool")
    return {"changed": True, "spare": name, "message": f"{name} put in reserve as a hot spare",
            "diff": {"before": {"taints": before}, "after": {"taints": after}}}


def activate(client: Client, pool: str, replacing: str, pool_label: str, check_mode: bool) -> dict:
    nodes = read_nodes(client, label_selector=f"{pool_label}={pool}")
    already = [n for n in nodes if (n["metadata"].get("annotations") or {}).get(v.SPARE_FOR) == replacing]
    if already:
        name = already[0]["metadata"]["name"]
        return {"changed": False, "spare": name, "message": f"{name} already replaces {replacing}"}
    options = Options(pool_label=pool_label)
    now = utcnow()
    candidates = sorted(
        (n for n in nodes if any(t.get("key") == v.SPARE_TAINT_KEY for t in _taints(n))
         and classify_node(n, default_catalog(), options, now)["health"] == HEALTHY
         and not (n.get("spec") or {}).get("unschedulable")),
        key=lambda n: n["metadata"]["name"])
    if not candidates:
        return {"changed": False, "spare": None, "message": f"no healthy spare left in pool {pool} to replace {replacing}"}
    node = candidates[0]
    name = node["metadata"]["name"]
    before = _taints(node)
    after = [t for t in before if t.get("key") != v.SPARE_TAINT_KEY]
    if not check_mode:
        _patch_taints(client, node, after, {v.SPARE_FOR: replacing, v.SPARE_SINCE: rfc3339()})
        record_event(client, node, v.EVENT_SPARE, f"hot spare {name} brought into service in place of {replacing}")
    return {"changed": True, "spare": name, "message": f"hot spare {name} brought into service in place of {replacing}",
            "diff": {"before": {"taints": before}, "after": {"taints": after}}}


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            state={"type": "str", "required": True, "choices": ["standby", "active"]},
            name={"type": "str"},
            pool={"type": "str"},
            replacing={"type": "str"},
            pool_label={"type": "str", "default": "ai-infra.io/pool"},
            **AUTH_ARG_SPEC,
        ),
        required_if=[("state", "standby", ["name"]), ("state", "active", ["pool", "replacing"])],
        supports_check_mode=True,
    )
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=str(KUBERNETES_IMPORT_ERROR))
    params = module.params
    try:
        client = Client(params)
        if params["state"] == "standby":
            result = standby(client, params["name"], module.check_mode)
        else:
            result = activate(client, params["pool"], params["replacing"], params["pool_label"], module.check_mode)
    except KubernetesError as err:
        module.fail_json(msg=str(err))
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
