#!/usr/bin/python
# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: node_isolate
short_description: Isolate faulty Kubernetes nodes (cordon, taint, ownership annotations) or release them
version_added: 0.1.0
description:
  - O(state=isolated) cordons each node, adds the taint C(node-recovery.ai-infra.io/faulty=<first fault>:<effect>)
    and records in annotations who isolated it (this collection), why (the fault types), when and the run id;
    the recovery state moves to C(isolated) unless the node is already further along (draining, drained, in repair).
    A Kubernetes Event is recorded on the Node.
  - A new isolation also adds its time to the node's C(node-recovery.ai-infra.io/isolations) annotation (the newest 32
    of the last 90 days), in the same write; the rolling cap and the loop breaker of the C(recover) playbook count
    them. Releasing or returning the node keeps them.
  - Takes a batch of nodes and acts on them at once (at most O(max_parallel) at a time), each judged, audited and
    reported on its own; one node's failure does not stop the others and is named in the result.
  - A node that is already cordoned by a person stays theirs - the annotation C(node-recovery.ai-infra.io/cordoned)
    records V(false) and releasing the node never lifts that cordon.
  - O(state=released) removes only what this collection did - its taint, its annotations, and the cordon
    if (and only if) this collection set it. A node cordoned by a person, with no annotation of ours, is left as it is.
  - Writes are merge patches guarded by the node's resourceVersion and retried on a 409 conflict, so
    concurrent changes by others (the node lifecycle controller, a person) are never overwritten.
  - Permissions are checked before the first write, so missing RBAC changes nothing.
author:
  - ai_infra node_recovery maintainers (!UNKNOWN)
options:
  name:
    description:
      - Names of the nodes (one name or a list).
    type: list
    elements: str
    required: true
    aliases: [names]
  state:
    description:
      - V(isolated) to isolate the nodes, V(released) to undo our isolation.
    type: str
    choices: [isolated, released]
    default: isolated
  reasons:
    description:
      - Fault types that justify the isolation, for every node given. The first one becomes the taint value.
      - When empty, each node's own faults as they are now, classified with the fault catalog (the classification
        options); a node already isolated by this collection keeps its recorded reasons when it has no fault now, and
        a node with neither is isolated with the reason C(unspecified) (it was asked for by name).
    type: list
    elements: str
    default: []
  effect:
    description:
      - Effect of our taint. V(NoExecute) also makes the node lifecycle controller evict the pods that do not
        tolerate the taint, without regard for PodDisruptionBudgets; prefer V(NoSchedule) and
        M(ai_infra.node_recovery.node_drain).
    type: str
    choices: [NoSchedule, NoExecute]
    default: NoSchedule
  force:
    description:
      - Isolate even a node labelled C(node-recovery.ai-infra.io/exclude=true).
    type: bool
    default: false
  record_attempt:
    description:
      - Count this run (O(run_id)) as an attempt of each node's fault episode in the
        C(node-recovery.ai-infra.io/attempts) annotation, written with the isolation, or alone on a node this
        collection already isolated; the same run is counted once. The C(recover) playbook does, and stops retrying
        a node after C(node_recovery_max_attempts) runs of one episode.
      - A node already isolated then reports a change (its count) but gets no new Event.
    type: bool
    default: false
  hot_spare:
    description:
      - With O(state=isolated) (it cannot go with O(state=released)), bring a hot spare of each isolated node's
        pool (its pool label, O(pool_label)) into service in its place, as M(ai_infra.node_recovery.node_spare) does with
        O(ai_infra.node_recovery.node_spare#module:state=active), once per replaced node and never for a node that
        could not be isolated.
      - A pool without a healthy spare left is said in the node's C(spare) result; it is not a failure.
    type: bool
    default: false
  max_parallel:
    description:
      - How many nodes are acted on at once (1 to 256).
    type: int
    default: 32
  run_id:
    description:
      - Identifier of this remediation run, written to the C(node-recovery.ai-infra.io/run-id) annotation.
      - Defaults to a new identifier (UTC time and a random suffix).
    type: str
extends_documentation_fragment:
  - ai_infra.node_recovery.k8s_auth
  - ai_infra.node_recovery.classification
  - ai_infra.node_recovery.step
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  diff_mode:
    support: full
notes:
  - "RBAC: C(get) and C(patch) on C(nodes), C(create) on C(events) in namespace C(default); with O(hot_spare),
    C(list) on C(nodes) too."
seealso:
  - module: ai_infra.node_recovery.node_drain
  - module: ai_infra.node_recovery.node_faults_info
"""

EXAMPLES = r"""
- name: Isolate a node with a lost NPU card
  ai_infra.node_recovery.node_isolate:
    name: npu-a-0003
    reasons: [NT_NPU_CARD_LOSE]

- name: Isolate every faulty node found at once, each for its own faults, one run id for the whole run
  ai_infra.node_recovery.node_isolate:
    name: "{{ faults.faulty_nodes | map(attribute='name') }}"
    run_id: "{{ run_id }}"

- name: Isolate a node and bring a hot spare of its pool into service in its place
  ai_infra.node_recovery.node_isolate:
    name: npu-a-0003
    hot_spare: true

- name: Give a node back (only what we did is undone)
  ai_infra.node_recovery.node_isolate:
    name: npu-a-0003
    state: released
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
    message:
      description: One sentence saying what was done (or would be, in check mode), or why nothing was.
      type: str
      returned: always
    isolation:
      description: The node's cordon, our taints, our annotations and state label after the change (as they would be
        in check mode).
      type: dict
      returned: when not failed
    spare:
      description: With O(hot_spare), the spare brought into service in the node's place, as
        M(ai_infra.node_recovery.node_spare) returns it (C(spare), C(replacing), C(changed), C(message)).
      type: dict
      returned: with O(hot_spare), when the node was isolated
    started: {description: When acting on this node started (UTC)., type: str, returned: always}
    finished: {description: When acting on this node finished (UTC)., type: str, returned: always}
  sample:
    - name: npu-a-0003
      changed: true
      failed: false
      message: "node 'npu-a-0003' was isolated: cordoned, taint node-recovery.ai-infra.io/faulty=NT_NPU_CARD_LOSE:NoSchedule,
        faults NT_NPU_CARD_LOSE, run 20261129T120000Z-3fa2c1"
      isolation:
        unschedulable: true
        taints: [{key: node-recovery.ai-infra.io/faulty, value: NT_NPU_CARD_LOSE, effect: NoSchedule}]
        annotations: {node-recovery.ai-infra.io/isolated-by: ai_infra.node_recovery, node-recovery.ai-infra.io/cordoned: "true"}
        labels: {node-recovery.ai-infra.io/state: isolated}
      started: "2026-11-29T12:00:00.120000Z"
      finished: "2026-11-29T12:00:00.180000Z"
failed_nodes:
  description: Names of the nodes that could not be acted on; the module fails when there is any.
  returned: always
  type: list
  elements: str
message:
  description: The nodes' sentences, joined.
  returned: always
  type: str
run_id:
  description: The run id written to the nodes.
  returned: always
  type: str
"""

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._batch import BATCH_ARGUMENT_SPEC, BATCH_RANGES
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._isolate import EFFECTS, isolate_nodes, option_problem
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import CLASSIFY_ARG_SPEC
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import ModuleSpec, run_module

SPEC = ModuleSpec(
    argument_spec=dict(
        **BATCH_ARGUMENT_SPEC,
        state={"type": "str", "choices": ["isolated", "released"], "default": "isolated"},
        reasons={"type": "list", "elements": "str", "default": []},
        effect={"type": "str", "choices": list(EFFECTS), "default": "NoSchedule"},
        force={"type": "bool", "default": False},
        record_attempt={"type": "bool", "default": False},
        hot_spare={"type": "bool", "default": False},
        run_id={"type": "str"},
        **CLASSIFY_ARG_SPEC,
    ),
    run=isolate_nodes,
    ranges=BATCH_RANGES,
    check=option_problem,
)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
