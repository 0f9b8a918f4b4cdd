# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: node_names
short_description: The Kubernetes node names of inventory hosts
version_added: 0.2.0
description:
  - For each inventory host given, the name of its Kubernetes node. The host variable C(node_recovery_node_name)
    (set by the runbook's plays), else the C(name) in the C(node_recovery) host variable of the
    P(ai_infra.node_recovery.k8s_nodes#inventory) inventory, else the inventory host name.
  - The roles of the collection act on the nodes of the play's current batch with it
    (C(ansible_play_batch | ai_infra.node_recovery.node_names(hostvars))).
author:
  - ai_infra node_recovery maintainers (!UNKNOWN)
positional: hostvars
options:
  _input:
    description: Inventory host names.
    type: list
    elements: str
    required: true
  hostvars:
    description: The C(hostvars) magic variable.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Isolate the nodes of this batch at once
  ai_infra.node_recovery.node_isolate:
    name: "{{ ansible_play_batch | ai_infra.node_recovery.node_names(hostvars) }}"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
_value:
  description: Node names, in the order of the hosts given.
  type: list
  elements: str
"""

from ansible.errors import AnsibleFilterError


def node_names(hosts, hostvars):
    if not isinstance(hosts, (list, tuple)):
        raise AnsibleFilterError("node_names expects a list of inventory host names")
    names = []
    for host in hosts:
        variables = hostvars.get(host) or {}
        named = variables.get("node_recovery_node_name") or (variables.get("node_recovery") or {}).get("name")
        names.append(str(named or host))
    return names


class FilterModule:
    def filters(self):
        return {"node_names": node_names}
