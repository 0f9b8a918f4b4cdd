# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: remediation_plan
short_description: Decide which faulty nodes to remediate now, and stop on a fault storm
version_added: 0.1.0
description:
  - Takes classified nodes (the C(node_recovery) host variable of the P(ai_infra.node_recovery.k8s_nodes#inventory)
    inventory, or RV(ai_infra.node_recovery.node_faults_info#module:nodes)) and returns the nodes to act on, most
    severe first, the nodes left alone with the reason, and the storm verdict.
  - The storm brake holds when the faulty nodes whose action calls for remediation exceed O(max_unhealthy) in any pool
    or in the whole set of nodes given; then nothing is to be acted on (a broken node-agent can mark every node faulty).
  - Suspect nodes, report-only actions, excluded nodes and nodes already handed to repair are left alone.
author:
  - ai_infra node_recovery maintainers (!UNKNOWN)
positional: max_unhealthy
options:
  _input:
    description: Classified nodes.
    type: list
    elements: dict
    required: true
  max_unhealthy:
    description: Faulty nodes tolerated per pool and for all nodes, as a count (V(3)) or a percentage (V(20%)).
    type: raw
    default: 20%
  min_unhealthy_allowed:
    description: A percentage never tolerates fewer faulty nodes than this.
    type: int
    default: 1
  actions:
    description: Actions that are remediated; faults with other actions are only reported.
    type: list
    elements: str
    default: [isolate, reboot_then_repair, repair]
  targets:
    description: Only these node names are acted on (the storm is still judged on every node given).
    type: list
    elements: str
  pools:
    description:
      - Per-pool counts of all nodes, as RV(ai_infra.node_recovery.node_faults_info#module:pools) returns them. When
        set, the storm brake judges these counts and the input needs only the unhealthy nodes
        (O(ai_infra.node_recovery.node_faults_info#module:include_healthy=false)), so a plan costs in proportion to the
        faulty nodes, not to the size of the cluster.
    type: dict
"""

EXAMPLES = r"""
- name: Plan from the inventory's classification
  ansible.builtin.set_fact:
    plan: "{{ groups['all'] | map('extract', hostvars, 'node_recovery') | ai_infra.node_recovery.remediation_plan('10%') }}"

- name: Classify only the unhealthy nodes, and judge the storm on the counts of all of them
  ai_infra.node_recovery.node_faults_info:
    include_healthy: false
  register: classified

- name: Plan from them
  ansible.builtin.set_fact:
    plan: "{{ classified.nodes | ai_infra.node_recovery.remediation_plan('20%', pools=classified.pools) }}"
"""

RETURN = r"""
_value:
  description: The plan.
  type: dict
  contains:
    storm: {description: Whether the storm brake holds., type: bool}
    storm_scopes: {description: "Pools (or V(_cluster)) over budget, with faulty, total and allowed counts.",
                   type: list, elements: dict}
    act: {description: "Nodes to remediate, most severe first: name, pool, action, faults, state.", type: list,
          elements: dict}
    skip: {description: Nodes left alone and why., type: list, elements: dict}
    pools: {description: Per-pool counts., type: dict}
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._plan import (
    REMEDIABLE_ACTIONS,
    Policy,
    PolicyError,
    plan,
)


def remediation_plan(nodes, max_unhealthy="20%", min_unhealthy_allowed=1, actions=None, targets=None, pools=None):
    if not isinstance(nodes, (list, tuple)):
        raise AnsibleFilterError("remediation_plan expects a list of classified nodes")
    missing = [i for i, n in enumerate(nodes) if not isinstance(n, dict) or "health" not in n]
    if missing:
        raise AnsibleFilterError(f"remediation_plan: item {missing[0] + 1} is not a classified node "
                                 "(use the node_recovery host variable or node_faults_info's nodes)")
    policy = Policy(max_unhealthy=max_unhealthy, min_unhealthy_allowed=int(min_unhealthy_allowed),
                    actions=tuple(actions or REMEDIABLE_ACTIONS))
    try:
        return plan(nodes, policy, targets, pools)
    except PolicyError as err:
        raise AnsibleFilterError(f"remediation_plan: {err}") from None


class FilterModule:
    def filters(self):
        return {"remediation_plan": remediation_plan}
