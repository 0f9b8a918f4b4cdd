# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: planning_hosts
short_description: The hosts of a runbook's planning play - the nodes asked for and localhost
version_added: 0.2.0
description:
  - The first play of the C(recover) and C(return_to_service) playbooks runs on the nodes asked for plus
    C(localhost), so it also runs with no node inventory, and never on every node of a large inventory (planning
    then costs in proportion to the nodes asked for, not to the size of the cluster).
  - The nodes asked for are the input (C(recover_nodes), C(return_nodes)) when given, else the C(--limit) pattern
    (a C(--limit @file) falls back to every host, narrowed by the limit), else none.
author:
  - ai_infra node_recovery maintainers (!UNKNOWN)
positional: limit, inventory
options:
  _input:
    description: Node names asked for, or null.
    type: list
    elements: str
  limit:
    description: The C(ansible_limit) magic variable, or null.
    type: str
  inventory:
    description:
      - The inventory's hosts (C(groups['all'])). When given, only the nodes asked for that are inventory hosts go
        into the play (the others are planned all the same, from the cluster), so a run with no node inventory logs
        no warning per node.
    type: list
    elements: str
"""

EXAMPLES = r"""
- name: Plan the run
  hosts: >-
    {{ recover_nodes | default(none) | ai_infra.node_recovery.planning_hosts(ansible_limit | default(none),
       groups['all']) }}
  gather_facts: false
  tasks: []
"""

RETURN = r"""
_value:
  description: Host patterns, C(localhost) last.
  type: list
  elements: str
"""

from ansible.errors import AnsibleFilterError


def planning_hosts(nodes, limit=None, inventory=None):
    if nodes is not None:
        if not isinstance(nodes, (list, tuple)) or not all(isinstance(n, str) and n for n in nodes):
            raise AnsibleFilterError("the nodes asked for must be a list of node names")
        known = set(inventory) if inventory is not None else None
        return [n for n in nodes if known is None or n in known] + ["localhost"]
    if limit:
        return ["all" if str(limit).startswith("@") else str(limit), "localhost"]
    return ["localhost"]


class FilterModule:
    def filters(self):
        return {"planning_hosts": planning_hosts}
