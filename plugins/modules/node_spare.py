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
  - ai_infra.node_recovery.step
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  diff_mode:
    support: full
notes:
  - "RBAC: C(get), C(list) and C(patch) on C(nodes), C(create) on C(events) in namespace C(default)."
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
replacing:
  description: The node the spare replaces (O(replacing)).
  returned: with O(state=active)
  type: str
message:
  description: One sentence on what was done.
  returned: always
  type: str
diff:
  description: Taints and annotation of the spare before and after.
  returned: when diff mode or changed
  type: dict
"""

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import ModuleSpec, run_module
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._spares import spare_step

SPEC = ModuleSpec(
    argument_spec=dict(
        state={"type": "str", "required": True, "choices": ["standby", "active"]},
        name={"type": "str"},
        pool={"type": "str"},
        replacing={"type": "str"},
        pool_label={"type": "str", "default": "ai-infra.io/pool"},
    ),
    run=spare_step,
    required_if=(("state", "standby", ["name"]), ("state", "active", ["pool", "replacing"])),
)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
