#!/usr/bin/python
# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: node_isolate
short_description: Isolate a faulty Kubernetes node (cordon, taint, ownership annotations) or release it
version_added: 0.1.0
description:
  - O(state=isolated) cordons the node, adds the taint C(node-recovery.ai-infra.io/faulty=<first fault>:<effect>)
    and records in annotations who isolated it (this collection), why (the fault types), when and the run id;
    the recovery state moves to C(isolated) unless the node is already further along (draining, drained, in repair).
    A Kubernetes Event is recorded on the Node.
  - A node that is already cordoned by a person stays theirs - the annotation C(node-recovery.ai-infra.io/cordoned)
    records V(false) and releasing the node never lifts that cordon.
  - O(state=released) removes only what this collection did - its taint, its annotations, and the cordon
    if (and only if) this collection set it. A node cordoned by a person, with no annotation of ours, is left as it is.
  - Writes are merge patches guarded by the node's resourceVersion and retried on a 409 conflict, so
    concurrent changes by others (the node lifecycle controller, a person) are never overwritten.
  - Permissions are checked before the first write, so missing RBAC changes nothing.
author:
  - ai_infra node_recovery maintainers (!UNKNOWN)
options:
  name:
    description:
      - Name of the node.
    type: str
    required: true
  state:
    description:
      - V(isolated) to isolate the node, V(released) to undo our isolation.
    type: str
    choices: [isolated, released]
    default: isolated
  reasons:
    description:
      - Fault types that justify the isolation (for example the node's C(faults) in the C(faulty_nodes) returned by
        M(ai_infra.node_recovery.node_faults_info)). The first one becomes the taint value.
      - When empty and the node is already isolated by this collection, the recorded reasons are kept.
    type: list
    elements: str
    default: []
  effect:
    description:
      - Effect of our taint. V(NoExecute) also makes the node lifecycle controller evict the pods that do not
        tolerate the taint, without regard for PodDisruptionBudgets; prefer V(NoSchedule) and
        M(ai_infra.node_recovery.node_drain).
    type: str
    choices: [NoSchedule, NoExecute]
    default: NoSchedule
  force:
    description:
      - Isolate even a node labelled C(node-recovery.ai-infra.io/exclude=true).
    type: bool
    default: false
  run_id:
    description:
      - Identifier of this remediation run, written to the C(node-recovery.ai-infra.io/run-id) annotation.
      - Defaults to a new identifier (UTC time and a random suffix).
    type: str
extends_documentation_fragment:
  - ai_infra.node_recovery.k8s_auth
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: all
notes:
  - Requires the C(kubernetes) Python library on the host that runs the module (usually the controller).
  - "RBAC: C(get) and C(patch) on C(nodes), C(create) on C(events) in namespace C(default)."
seealso:
  - module: ai_infra.node_recovery.node_drain
  - module: ai_infra.node_recovery.node_faults_info
"""

EXAMPLES = r"""
- name: Isolate a node with a lost NPU card
  ai_infra.node_recovery.node_isolate:
    name: npu-a-0003
    reasons: [NT_NPU_CARD_LOSE]

- name: Isolate every faulty node found, one run id for the whole run
  ai_infra.node_recovery.node_isolate:
    name: "{{ item.name }}"
    reasons: "{{ item.faults }}"
    run_id: "{{ run_id }}"
  loop: "{{ faults.faulty_nodes }}"

- name: Give a node back (only what we did is undone)
  ai_infra.node_recovery.node_isolate:
    name: npu-a-0003
    state: released
"""

RETURN = r"""
node_name:
  description: Name of the node.
  returned: always
  type: str
  sample: npu-a-0003
message:
  description: One sentence saying what was done (or would be, in check mode), or why nothing was.
  returned: always
  type: str
  sample: "node 'npu-a-0003' was isolated: cordoned, taint node-recovery.ai-infra.io/faulty=NT_NPU_CARD_LOSE:NoSchedule,
    faults NT_NPU_CARD_LOSE, run 20261129T120000Z-3fa2c1"
isolation:
  description: The node's cordon, our taints, our annotations and state label after the change (as they would be in
    check mode).
  returned: always
  type: dict
  sample:
    unschedulable: true
    taints: [{key: node-recovery.ai-infra.io/faulty, value: NT_NPU_CARD_LOSE, effect: NoSchedule}]
    annotations: {node-recovery.ai-infra.io/isolated-by: ai_infra.node_recovery, node-recovery.ai-infra.io/cordoned: "true"}
    labels: {node-recovery.ai-infra.io/state: isolated}
run_id:
  description: The run id written to the node.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import new_run_id
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import (
    AUTH_ARG_SPEC,
    HAS_KUBERNETES,
    KUBERNETES_IMPORT_ERROR,
    Client,
    KubernetesError,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._isolate import EFFECTS, NodeRefused, isolate, release


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            name={"type": "str", "required": True},
            state={"type": "str", "choices": ["isolated", "released"], "default": "isolated"},
            reasons={"type": "list", "elements": "str", "default": []},
            effect={"type": "str", "choices": list(EFFECTS), "default": "NoSchedule"},
            force={"type": "bool", "default": False},
            run_id={"type": "str"},
            **AUTH_ARG_SPEC,
        ),
        supports_check_mode=True,
    )
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=str(KUBERNETES_IMPORT_ERROR))
    params = module.params
    run_id = params["run_id"] or new_run_id()
    try:
        client = Client(params)
        if params["state"] == "isolated":
            outcome = isolate(client, params["name"], params["reasons"], run_id, effect=params["effect"],
                              force=params["force"], check_mode=module.check_mode)
        else:
            outcome = release(client, params["name"], run_id=run_id, check_mode=module.check_mode)
    except (KubernetesError, NodeRefused) as err:
        module.fail_json(msg=str(err), node_name=params["name"])
    result = {"changed": outcome["changed"], "node_name": params["name"], "message": outcome["message"],
              "isolation": outcome["diff"]["after"], "run_id": run_id}
    if module._diff:
        result["diff"] = outcome["diff"]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
