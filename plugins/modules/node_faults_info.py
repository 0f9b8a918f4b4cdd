#!/usr/bin/python
# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: node_faults_info
short_description: Classify the faults of Kubernetes accelerator nodes
version_added: 0.1.0
description:
  - Reads nodes (all, by name, or by label selector) and classifies each one with the fault catalog.
  - Fault signals are NodeConditions written by node-agent or Node Problem Detector (for example
    C(NT_NPU_CARD_LOSE) with status C(True)) and an accelerator C(allocatable) count below the expected count
    (the device-plugin lowers it when a card dies).
  - A fault counts once it has lasted its catalog entry's C(min_duration) since C(lastTransitionTime)
    (flap protection); until then it is listed in RV(nodes[].pending_faults) and the node is a suspect.
  - Read-only; the same judgement as the P(ai_infra.node_recovery.k8s_nodes#inventory) inventory plugin.
  - Also reports what the budgets of the C(recover) playbook judge - the counts per pool and per failure domain
    (O(domain_labels)), the recent new isolations over every node read (RV(isolations)), and the pause switch
    (RV(paused)), a ConfigMap that pauses every face of the collection while it exists.
author:
  - ai_infra node_recovery maintainers (!UNKNOWN)
options:
  names:
    description:
      - Only these nodes, read at once. A name that does not exist fails the module (see O(ignore_missing)).
    type: list
    elements: str
  ignore_missing:
    description:
      - With O(names), a name that does not exist is listed in RV(missing_nodes) instead of failing the module.
    type: bool
    default: false
  label_selector:
    description:
      - Only nodes matching this label selector (ignored when O(names) is given).
    type: str
  include_healthy:
    description:
      - Whether RV(nodes) lists healthy nodes too. When false, a healthy node is listed only if this collection
        isolated it (its faults cleared, so it waits for return to service).
      - The pool summary always counts every node.
    type: bool
    default: true
  isolation_window:
    description:
      - Seconds back from now in which new isolations count for RV(isolations) (the rolling cap's window; at most 90
        days, which is as long as a node keeps its isolation times).
    type: int
    default: 3600
  pause_namespace:
    description: Namespace of the pause switch ConfigMap.
    type: str
    default: default
  pause_name:
    description:
      - Name of the pause switch ConfigMap. While it exists, RV(paused) says so and the collection's playbooks act on
        nothing. An empty name does not check it.
      - Create it with C(kubectl create configmap node-recovery-pause -n default --from-literal=reason="...")
        (optionally C(--from-literal=by=...)); delete it to resume.
    type: str
    default: node-recovery-pause
extends_documentation_fragment:
  - ai_infra.node_recovery.k8s_auth
  - ai_infra.node_recovery.classification
  - ai_infra.node_recovery.step
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  diff_mode:
    support: none
notes:
  - "RBAC: C(get) and C(list) on C(nodes); C(get) on the C(kube-system) namespace (to tell clusters apart); C(get) on
    the pause switch ConfigMap (a missing one is not paused, a forbidden one fails the module with one sentence)."
"""

EXAMPLES = r"""
- name: Classify every node of the cluster
  ai_infra.node_recovery.node_faults_info:
  register: faults

- name: Show the nodes that need remediation
  ansible.builtin.debug:
    msg: "{{ item.name }}: {{ item.faults | join(', ') }} -> {{ item.action }}"
  loop: "{{ faults.faulty_nodes }}"

- name: One NPU pool, with a site catalog and a stricter view of Unknown checks
  ai_infra.node_recovery.node_faults_info:
    label_selector: ai-infra.io/pool=npu-a
    catalog_file: /etc/node-recovery/catalog.yml
    nt_unknown: fault
    include_healthy: false
"""

RETURN = r"""
nodes:
  description: Every node read (or only those that need attention, see O(include_healthy)), classified.
  returned: always
  type: list
  elements: dict
  contains:
    name: {description: Node name., type: str, returned: always}
    pool: {description: "Value of the O(pool_label) label, or C(unpooled).", type: str, returned: always}
    health: {description: "V(healthy), V(suspect) or V(faulty).", type: str, returned: always}
    action:
      description: Strongest action among the node's faults (V(observe), V(isolate), V(reboot_then_repair), V(repair)).
      type: str
      returned: always
    faults:
      description: Faults that count, each with type, status, reason, message, since, category, severity, action and
        whether it is uncatalogued; an C(AllocatableCardLoss) fault adds resource, expected, allocatable and lost.
      type: list
      elements: dict
      returned: always
    pending_faults: {description: Faults still under their minimum duration., type: list, elements: dict, returned: always}
    suspect_signals: {description: "C(Unknown) NT_* conditions.", type: list, elements: dict, returned: always}
    accelerators: {description: "Capacity, allocatable, expected and lost count per accelerator resource.", type: list,
                   elements: dict, returned: always}
    state: {description: "Recovery state from the collection's annotations (V(none), V(isolated), V(draining), ...).",
            type: str, returned: always}
    isolated_by_us: {description: "Whether this collection isolated the node (its annotation or taint is there).",
                     type: bool, returned: always}
    cordon_owner: {description: "Who holds the cordon: V(none), V(node_recovery) or V(person).", type: str,
                   returned: always}
    isolated_at: {description: "When this collection isolated the node (this fault episode), or null.", type: str,
                  returned: always}
    domains: {description: "The node's value of each label of O(domain_labels) it carries.", type: dict,
              returned: always}
    isolations: {description: "When this collection newly isolated the node (its isolations annotation).",
                 type: list, elements: str, returned: always}
    attempts: {description: "How many runs acted on the node in its current fault episode (0 when not isolated).",
               type: int, returned: always}
    repeat_offender:
      description: "Why the node was handed to repair as a repeat offender (its annotation), or null; it does not
        return to service automatically until the repair team marks it repaired."
      type: str
      returned: always
  sample:
    - name: npu-a-0003
      pool: npu-a
      health: faulty
      action: reboot_then_repair
      faults:
        - {type: NT_NPU_CARD_LOSE, status: "True", reason: "os_task_name:npu-card-lose", message: card 3 lost,
           since: "2026-11-29T10:00:00Z", category: npu, severity: critical, action: reboot_then_repair,
           uncatalogued: false}
      state: none
      cordon_owner: none
faulty_nodes:
  description: The faulty nodes with their fault types and the action to take.
  returned: always
  type: list
  elements: dict
  sample: [{name: npu-a-0003, pool: npu-a, action: reboot_then_repair, faults: [NT_NPU_CARD_LOSE], state: none,
            excluded: false, cordon_owner: none}]
cluster:
  description: The cluster read - its API server URL (C(server)) and the uid of its C(kube-system) namespace (C(id),
    null when it cannot be read), which tells clusters apart however they are reached.
  returned: always
  type: dict
  sample: {server: "https://10.0.0.1:6443", id: 4f0e3c8e-6d5a-4b6e-9a43-1c2f3e4d5a6b}
missing_nodes:
  description: The names in O(names) that do not exist (only with O(ignore_missing)).
  returned: always
  type: list
  elements: str
suspect_nodes:
  description: Names of the suspect nodes (Unknown checks or faults under their minimum duration).
  returned: always
  type: list
  elements: str
pools:
  description: Per pool (and C(_cluster) for all nodes) the total, healthy, suspect, faulty and actionable counts and
    the faulty fraction, which the storm brake judges.
  returned: always
  type: dict
  sample: {npu-a: {total: 16, healthy: 15, suspect: 0, faulty: 1, actionable: 1, faulty_fraction: 0.0625}}
domains:
  description: Per label of O(domain_labels), per value of it, the same counts as RV(pools) (a node without the label
    is in no domain of it), which the failure-domain budgets judge.
  returned: always
  type: dict
  sample: {example.com/rack: {r07: {total: 4, healthy: 2, suspect: 0, faulty: 2, actionable: 2, faulty_fraction: 0.5}}}
isolations:
  description: The new isolations of the last O(isolation_window) seconds over every node read (also healthy and
    returned ones), which the rolling cap judges - C(window_seconds), C(count) and C(nodes) (name and time, oldest
    first).
  returned: always
  type: dict
  sample: {window_seconds: 3600, count: 1, nodes: [{name: npu-a-0003, at: "2026-11-29T11:40:00Z"}]}
paused:
  description: The pause switch - C(configmap) (namespace/name), C(reason), C(by) and C(since) (as the ConfigMap's
    data says, else when it was created) - or null when it does not exist.
  returned: always
  type: dict
  sample: {configmap: default/node-recovery-pause, reason: switch maintenance, by: alice, since: "2026-11-29T11:00:00Z"}
"""

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import MAX_WINDOW
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import CLASSIFY_ARG_SPEC, faults_info
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import ModuleSpec, run_module

SPEC = ModuleSpec(
    argument_spec=dict(
        names={"type": "list", "elements": "str"},
        label_selector={"type": "str"},
        include_healthy={"type": "bool", "default": True},
        ignore_missing={"type": "bool", "default": False},
        isolation_window={"type": "int", "default": 3600},
        pause_namespace={"type": "str", "default": "default"},
        pause_name={"type": "str", "default": "node-recovery-pause"},
        **CLASSIFY_ARG_SPEC,
    ),
    run=faults_info,
    ranges={"isolation_window": (1, MAX_WINDOW)},
)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
