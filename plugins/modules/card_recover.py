#!/usr/bin/python
# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: card_recover
short_description: Keep accelerator nodes that lost a card in service and recover only the work that used it
version_added: 0.2.0
description:
  - Card-level recovery, for nodes whose faults call for the catalog action C(restart_workloads) (by default
    C(AllocatableCardLoss) and C(NT_NPU_CARD_LOSE)). The device-plugin already stops handing out a dead card, so the
    node keeps serving on its other cards. It is not cordoned, tainted or drained.
  - Takes a batch of nodes and judges each with the same classification as
    P(ai_infra.node_recovery.node_faults_info#module). A node whose action is node-level is left to the node-level
    steps (RV(nodes[].verdict) C(not_card_level)). That is the case when it has another fault, is isolated by us, or
    lost more cards, or lost cards more often, than the catalog's C(defaults.card_level) allows; RV(nodes[].escalated)
    then says why.
  - First the node is marked degraded. The annotation C(node-recovery.ai-infra.io/degraded) names the lost cards and
    since when, the label C(node-recovery.ai-infra.io/degraded=true) is set, and the loss is added to
    C(node-recovery.ai-infra.io/card-losses). A run interrupted after this leaves a record that the next run reads
    and finishes.
  - Then the work that used the lost cards is recovered. Where the device-plugin names the node's unhealthy cards
    (O(unhealthy_cards_annotation)) and each pod's cards (O(card_assignment_annotation)), as Ascend's device plugin
    does, only the pods on a lost card count. Distributed training is restarted whole, once per card-loss episode,
    as P(ai_infra.node_recovery.workload_recover#module) does it. A service replica on a lost card is evicted
    (PodDisruptionBudgets are honoured) and its controller replaces it, on this node's good cards or elsewhere.
    Where the cards are not named (the NVIDIA device plugin publishes no such mapping), every training job with a
    rank on the node is restarted whole, services are left alone, and RV(nodes[].how) says so.
  - Once that work runs again, the mark records it (C(workloads_recovered)) and an Event (C(NodeRecoveryDegraded))
    on the node says which cards were lost and what was done. A later run finds the node C(degraded) and leaves it.
  - A node with our degraded mark whose cards are all usable again has the mark and label removed, with an Event
    (C(NodeRecoveryCardsReturned)). The card-loss history stays for the escalation by frequency.
author:
  - ai_infra node_recovery maintainers (!UNKNOWN)
options:
  name:
    description:
      - Names of the nodes to judge and recover, acted on together. A name that does not exist fails the module.
    type: list
    elements: str
    required: true
    aliases: [names]
  wait:
    description:
      - Wait until the services and batch Jobs recovered are running again. Operator-managed jobs (Volcano,
        Kubeflow, JobSet) are not waited for.
      - Without waiting, the mark is not recorded as recovered, so the next run looks at the work again.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait for the work to be running again.
    type: int
    default: 300
  recreate_unmanaged:
    description:
      - Re-create a bare pod on a lost card from its spec, without the node binding. By default it is left as it is
        and reported.
    type: bool
    default: false
  restart_ignores_budgets:
    description:
      - Restart a training job whole, and evict a service replica, even when PodDisruptionBudgets forbid it.
    type: bool
    default: false
  run_id:
    description:
      - Id of the remediation run, recorded in the mark and on every job it restarts. Defaults to a new id.
    type: str
  healthy_delay:
    description:
      - Seconds every card of a degraded node must have been usable again before the mark (and our DeviceTaintRules)
        go. The first call that finds them usable records when (C(healthy_since) in the mark) and reports
        RV(nodes[].wait_seconds); a card lost again meanwhile stops that clock.
    type: int
    default: 0
extends_documentation_fragment:
  - ai_infra.node_recovery.k8s_auth
  - ai_infra.node_recovery.classification
  - ai_infra.node_recovery.step
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  diff_mode:
    support: full
    details: The diff shows each node's degraded mark, label and card-loss history before and after.
notes:
  - "RBAC: C(get), C(list) and C(patch) on C(nodes); C(list) on C(pods); C(create) on C(pods/eviction); C(create) on
    C(events) in namespace C(default); and what P(ai_infra.node_recovery.workload_recover#module) needs for the kinds of
    training job it restarts."
  - In check mode nothing is written. The result says what would be marked, evicted and restarted.
seealso:
  - module: ai_infra.node_recovery.workload_recover
  - module: ai_infra.node_recovery.node_faults_info
"""

EXAMPLES = r"""
- name: Keep the nodes that lost a card in service and restart the training that used it
  ai_infra.node_recovery.card_recover:
    name: "{{ groups['action_restart_workloads'] }}"
    run_id: "{{ node_recovery_run_id }}"
  register: cards

- name: Say what happened on each node
  ansible.builtin.debug:
    msg: "{{ cards.nodes | map(attribute='message') | list }}"

- name: Escalate a node to the node level after two lost cards instead of three
  ai_infra.node_recovery.card_recover:
    name: npu-a-0003
    catalog:
      defaults:
        card_level: {max_lost_cards: 1}
"""

RETURN = r"""
nodes:
  description: One result per node, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    name: {description: Name of the node., type: str, returned: always}
    changed: {description: "Whether this node was changed (or would be, in check mode).", type: bool, returned: always}
    failed: {description: Whether acting on this node failed (see C(msg))., type: bool, returned: always}
    msg: {description: Why acting on this node failed., type: str, returned: when failed}
    started: {description: When acting on this node started (UTC)., type: str, returned: always}
    finished: {description: When acting on this node finished (UTC)., type: str, returned: always}
    verdict:
      description: "V(act) (cards newly lost: marked and its work recovered), V(handled) (already degraded, its work
        recovered), V(return) (every card usable again: the mark removed), V(return_waiting) (every card usable
        again for less than O(healthy_delay)), V(not_card_level) (for the node-level steps)."
      returned: always
      type: str
    kept_in_service:
      description: Whether the node stays in service, handled card by card.
      returned: always
      type: bool
    cards:
      description: Per accelerator resource, the lost count, the expected count and the lost cards' names (null when
        the device-plugin names none).
      returned: always
      type: dict
      sample: {huawei.com/ascend-1980: {lost: 1, expected: 8, cards: [Ascend910-3]}}
    wait_seconds:
      description: Seconds left of the healthy delay before the cards are given back.
      returned: when the verdict is return_waiting
      type: int
    how:
      description: "How the work on the lost cards was found: V(assignments) (the device-plugin's per-pod cards) or
        V(every_training_rank) (no assignments published: every training job on the node, services left alone)."
      returned: when the verdict is act
      type: str
    escalated:
      description: Why the node's card loss is handled at node level instead, or null.
      returned: always
      type: str
    workloads:
      description: The workloads recovered for this node, as P(ai_infra.node_recovery.workload_recover#module) reports them.
      returned: always
      type: list
      elements: dict
    restarted:
      description: The training jobs restarted whole for this node (C(Kind namespace/name)).
      returned: always
      type: list
      elements: str
    recovered:
      description: Whether the work that used the lost cards runs again (false in check mode).
      returned: always
      type: bool
    message:
      description: One sentence on the outcome.
      returned: always
      type: str
workloads:
  description: Every workload recovered, once each however many of its nodes lost cards.
  returned: always
  type: list
  elements: dict
restarted:
  description: Training jobs restarted whole by this call.
  returned: always
  type: list
  elements: str
recovered:
  description: Whether the work on the lost cards of every card-level node runs again (false in check mode).
  returned: always
  type: bool
failed_nodes:
  description: Names of the nodes that could not be acted on; the module fails when there is any.
  returned: always
  type: list
  elements: str
run_id:
  description: The run id recorded.
  returned: always
  type: str
message:
  description: The nodes' sentences, joined.
  returned: always
  type: str
"""

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._batch import NAME_SPEC
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._cards import recover_cards
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import CLASSIFY_ARG_SPEC
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import ModuleSpec, run_module

SPEC = ModuleSpec(
    argument_spec=dict(
        name=NAME_SPEC,
        wait={"type": "bool", "default": True},
        wait_timeout={"type": "int", "default": 300},
        recreate_unmanaged={"type": "bool", "default": False},
        restart_ignores_budgets={"type": "bool", "default": False},
        run_id={"type": "str"},
        healthy_delay={"type": "int", "default": 0},
        **CLASSIFY_ARG_SPEC,
    ),
    run=recover_cards,
    ranges={"wait_timeout": (0, None), "healthy_delay": (0, None)},
)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
