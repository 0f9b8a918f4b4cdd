# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: remediation_plan
short_description: Decide which faulty nodes to remediate now, within every budget, and stop on a fault storm
version_added: 0.1.0
description:
  - Takes classified nodes (the C(node_recovery) host variable of the P(ai_infra.node_recovery.k8s_nodes#inventory)
    inventory, or RV(ai_infra.node_recovery.node_faults_info#module:nodes)) and returns the nodes to act on, most
    severe first, the nodes left alone with the reason and the rule or budget that held them, and the storm verdict.
  - The storm brake holds when the faulty nodes whose action calls for remediation exceed O(max_unhealthy) in any pool
    or in the whole set of nodes given; then nothing is to be acted on (a broken node-agent can mark every node faulty).
  - Suspect nodes, report-only actions, excluded nodes, nodes already handed to repair and nodes isolated and drained
    for an isolate-only fault (waiting for it to clear) are left alone.
  - "The budgets, in the order they are judged: the pause switch (O(paused): nothing is acted on); O(max_attempts)
    runs per fault episode; failure domains (O(domain_budgets): a domain value over its budget is one incident, its
    nodes are left alone and the others go on); the storm brake; the rolling cap (O(max_isolations) new isolations
    within O(isolation_window)); the per-run cap (O(max_nodes))."
  - A node isolated more than O(repeat_after) times within O(repeat_window) (counting the isolation about to start)
    is a repeat offender - its plan entry's action becomes V(repair) (isolated, drained, handed to repair) whatever
    its fault says, with C(repeat_offender) saying why.
  - A malformed value fails with one sentence naming it.
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
    description: A percentage (of a pool, the cluster or a domain value) never tolerates fewer faulty nodes than this.
    type: int
    default: 1
  actions:
    description: Actions that are remediated; faults with other actions are only reported.
    type: list
    elements: str
    default: [isolate, reboot_then_repair, repair]
  targets:
    description: Only these node names are acted on (the storm, the domains and the caps are still judged on every
      node given).
    type: list
    elements: str
  pools:
    description:
      - Per-pool counts of all nodes, as RV(ai_infra.node_recovery.node_faults_info#module:pools) returns them. When
        set, the storm brake judges these counts and the input needs only the unhealthy nodes
        (O(ai_infra.node_recovery.node_faults_info#module:include_healthy=false)), so a plan costs in proportion to the
        faulty nodes, not to the size of the cluster.
    type: dict
  domain_budgets:
    description:
      - "Failure domains - node label to the faulty nodes tolerated per value of that label, as a count or a percentage
        of the value's nodes (for example V({topology.kubernetes.io/zone: 20%, example.com/rack: 2}))."
      - A value whose actionable faulty nodes exceed its budget is one incident (a leaf switch, a power feed); its
        nodes are left alone with the counts and the budget, and every other node goes on.
    type: dict
  domains:
    description:
      - Per-domain counts of all nodes, as RV(ai_infra.node_recovery.node_faults_info#module:domains) returns them
        (the node_faults_info task needs O(ai_infra.node_recovery.node_faults_info#module:domain_labels) naming every
        label of O(domain_budgets)). Without it the domains are counted over the nodes given.
    type: dict
  max_nodes:
    description: At most this many nodes acted on in this plan, most urgent first; the rest are left for the next run.
    type: int
  max_isolations:
    description:
      - At most this many new isolations (nodes not isolated by this collection yet) within O(isolation_window)
        seconds, counted across runs and faces from the isolation times kept on the nodes. A node already isolated by
        this collection (a run continuing it) uses none.
    type: int
  isolation_window:
    description: Seconds of the rolling cap's window.
    type: int
    default: 3600
  isolations:
    description:
      - The recent isolations of all nodes, as RV(ai_infra.node_recovery.node_faults_info#module:isolations) returns
        them (counted over the same O(isolation_window)). Without it they are counted over the nodes given.
    type: dict
  repeat_after:
    description: A node isolated more than this many times within O(repeat_window) is a repeat offender (V(0) never).
    type: int
    default: 3
  repeat_window:
    description: Seconds of the window in which isolations count towards a repeat offence.
    type: int
    default: 604800
  max_attempts:
    description:
      - Runs that may act on a node in one fault episode (its isolation) before the plan stops retrying it and says
        so (V(0) no limit). The isolate step of the C(recover) playbook counts them on the node.
    type: int
    default: 3
  paused:
    description: The pause switch, as RV(ai_infra.node_recovery.node_faults_info#module:paused) reports it; when set,
      nothing is acted on and every node that would have been says why.
    type: dict
  now:
    description: The time to judge windows at (RFC 3339); default now.
    type: str
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

- name: Racks as failure domains, at most 8 nodes per run and 16 new isolations an hour, the pause honoured
  ansible.builtin.set_fact:
    plan: >-
      {{ classified.nodes | ai_infra.node_recovery.remediation_plan('20%', pools=classified.pools,
           domain_budgets={'example.com/rack': 2}, domains=classified.domains, max_nodes=8,
           max_isolations=16, isolations=classified.isolations, paused=classified.paused) }}
"""

RETURN = r"""
_value:
  description: The plan.
  type: dict
  contains:
    storm: {description: Whether the storm brake holds., type: bool}
    storm_scopes: {description: "Pools (or V(_cluster)) over budget, with faulty, total and allowed counts.",
                   type: list, elements: dict}
    paused: {description: "The pause switch that held the plan, or null.", type: dict}
    domain_holds: {description: "Domain values over their budget: label, value, faulty, total, allowed, budget.",
                   type: list, elements: dict}
    isolations: {description: "The recent isolations the rolling cap judged (null without O(max_isolations)).",
                 type: dict}
    budgets:
      description:
        - Which budget held what, one entry per budget and scope - C(budget) (V(pause), V(storm), V(domain),
          V(max_nodes_per_run), V(max_isolations), V(max_attempts), V(repeat_offender)), C(scope) (a domain value),
          C(detail) and C(nodes).
      type: list
      elements: dict
    act:
      description: "Nodes to remediate, most urgent first: name, pool, action, faults, state and repeat_offender
        (null, or why the node goes to repair; then usual_action is the action its faults call for)."
      type: list
      elements: dict
    skip: {description: "Nodes left alone: name, reason and rule (the budget, or suspect, report-only, excluded,
                         handed-off, waiting).", type: list, elements: dict}
    pools: {description: Per-pool counts., type: dict}
    domains: {description: Per-domain counts., type: dict}
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import parse_time
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._plan import (
    REMEDIABLE_ACTIONS,
    Policy,
    PolicyError,
    plan,
)


def remediation_plan(nodes, max_unhealthy="20%", min_unhealthy_allowed=1, actions=None, targets=None, pools=None,
                     domain_budgets=None, domains=None, max_nodes=None, max_isolations=None, isolation_window=3600,
                     isolations=None, repeat_after=3, repeat_window=604800, max_attempts=3, paused=None, now=None):
    if not isinstance(nodes, (list, tuple)):
        raise AnsibleFilterError("remediation_plan expects a list of classified nodes")
    missing = [i for i, n in enumerate(nodes) if not isinstance(n, dict) or "health" not in n]
    if missing:
        raise AnsibleFilterError(f"remediation_plan: item {missing[0] + 1} is not a classified node "
                                 "(use the node_recovery host variable or node_faults_info's nodes)")
    when = parse_time(str(now)) if now else None
    if now and when is None:
        raise AnsibleFilterError(f"remediation_plan: now '{now}' is not an RFC 3339 time")
    policy = Policy(max_unhealthy=max_unhealthy, min_unhealthy_allowed=min_unhealthy_allowed,
                    actions=tuple(actions or REMEDIABLE_ACTIONS), domain_budgets=domain_budgets or {},
                    max_nodes=max_nodes, max_isolations=max_isolations, isolation_window=isolation_window,
                    repeat_after=repeat_after, repeat_window=repeat_window, max_attempts=max_attempts)
    if paused is not None and not isinstance(paused, dict):
        raise AnsibleFilterError("remediation_plan: paused must be what node_faults_info reports (a mapping or null)")
    try:
        return plan(nodes, policy, targets, pools, domains=domains, isolations=isolations, paused=paused, now=when)
    except PolicyError as err:
        raise AnsibleFilterError(f"remediation_plan: {err}") from None


class FilterModule:
    def filters(self):
        return {"remediation_plan": remediation_plan}
