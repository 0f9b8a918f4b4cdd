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
  - "RBAC: C(get) and C(list) on C(nodes); C(get) on the C(kube-system) namespace (to tell clusters apart)."
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
"""

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import CLASSIFY_ARG_SPEC, faults_info
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import ModuleSpec, run_module

SPEC = ModuleSpec(
    argument_spec=dict(
        names={"type": "list", "elements": "str"},
        label_selector={"type": "str"},
        include_healthy={"type": "bool", "default": True},
        ignore_missing={"type": "bool", "default": False},
        **CLASSIFY_ARG_SPEC,
    ),
    run=faults_info,
)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
