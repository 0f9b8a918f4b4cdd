# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: reboot_target_problem
short_description: Why a reboot over SSH must not go ahead, or null
version_added: 0.2.0
description:
  - Before the reboot role reboots a node over SSH, the address it connects to must be an IP address (the
    P(ai_infra.node_recovery.k8s_nodes#inventory) inventory sets C(ansible_host) to the node's InternalIP), and the
    machine reached there must be the node - its boot id (C(/proc/sys/kernel/random/boot_id)) and machine id
    (C(/etc/machine-id)) must be the ones the node's kubelet reports. Otherwise one sentence says why.
author:
  - ai_infra node_recovery maintainers (!UNKNOWN)
positional: address, identity
options:
  _input:
    description: The node, classified (an item of RV(ai_infra.node_recovery.node_faults_info#module:nodes)).
    type: dict
    required: true
  address:
    description: The address the reboot connects to.
    type: str
    required: true
  identity:
    description: The machine's boot id and machine id, one per line, as read over SSH; omit it to judge the address
      alone (before connecting).
    type: list
    elements: str
"""

EXAMPLES = r"""
- name: Refuse to connect to something that is not an address
  ansible.builtin.assert:
    that: problem is none
    fail_msg: "{{ problem }}"
  vars:
    problem: "{{ node | ai_infra.node_recovery.reboot_target_problem(ansible_host) }}"
"""

RETURN = r"""
_value:
  description: One sentence, or null when the reboot may go ahead.
  type: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._repair import (
    reboot_target_problem as problem,
)


def reboot_target_problem(node, address, identity=None):
    if not isinstance(node, dict) or "name" not in node:
        raise AnsibleFilterError("reboot_target_problem expects a classified node (node_faults_info's nodes)")
    return problem(node, address, list(identity) if identity is not None else None)


class FilterModule:
    def filters(self):
        return {"reboot_target_problem": reboot_target_problem}
