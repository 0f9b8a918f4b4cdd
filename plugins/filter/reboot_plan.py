# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: reboot_plan
short_description: Decide which nodes are rebooted first and which go straight to repair
version_added: 0.2.0
description:
  - For nodes whose catalog action is C(reboot_then_repair) (the advice "reboot first; repair if not recovered").
    A node is not rebooted when its fault came back too often (the history recorded by
    P(ai_infra.node_recovery.node_repair#module) with C(state=recorded) says to escalate), when rebooting is disabled,
    when it has no fault now, or when its faults call for more than a reboot; each such node says why, and whether it
    goes to repair (all of them but a node with no fault now).
author:
  - ai_infra node_recovery maintainers (!UNKNOWN)
positional: recorded, enabled, escalate_after, window
options:
  _input:
    description: The classified nodes (RV(ai_infra.node_recovery.node_faults_info#module:nodes)).
    type: list
    elements: dict
    required: true
  recorded:
    description: The result of recording their faults (P(ai_infra.node_recovery.node_repair#module),
      C(state=recorded)), or null when the history is not kept.
    type: dict
  enabled:
    description: Whether nodes may be rebooted at all.
    type: bool
    default: false
  escalate_after:
    description: How many times within O(window) a fault may come back before it goes to repair.
    type: int
    default: 2
  window:
    description: The history window in seconds.
    type: int
    default: 86400
"""

EXAMPLES = r"""
- name: Decide for the nodes of this batch
  ansible.builtin.set_fact:
    decisions: "{{ triage_result.nodes | ai_infra.node_recovery.reboot_plan(reboot_history, true) }}"
"""

RETURN = r"""
_value:
  description:
    - Per node name, C(reboot) (bool), C(reason) (why not, or null), C(repair) (bool), C(isolated) (whether this
      collection isolated it; a node that is not is never rebooted) and C(faults).
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._repair import reboot_verdict


def reboot_plan(nodes, recorded=None, enabled=False, escalate_after=2, window=86400):
    if not isinstance(nodes, (list, tuple)) or not all(isinstance(n, dict) and "name" in n for n in nodes):
        raise AnsibleFilterError("reboot_plan expects classified nodes (node_faults_info's nodes)")
    histories = {n["name"]: n for n in (recorded or {}).get("nodes") or [] if isinstance(n, dict) and not n.get("failed")}
    return {node["name"]: reboot_verdict(histories.get(node["name"]) if recorded else None, node, bool(enabled),
                                         int(escalate_after), int(window))
            for node in nodes}


class FilterModule:
    def filters(self):
        return {"reboot_plan": reboot_plan}
