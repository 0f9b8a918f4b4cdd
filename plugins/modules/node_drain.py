#!/usr/bin/python
# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: node_drain
short_description: Drain Kubernetes nodes through the Eviction API, several pods at once, waiting out PodDisruptionBudgets
version_added: 0.1.0
description:
  - Evicts the pods of each node through the Eviction API, O(concurrency) at a time per node, and waits until they are
    gone.
  - Takes a batch of nodes and drains them at once (at most O(max_parallel) at a time), each judged, audited and
    reported on its own; one node's failure does not stop the others and is named in the result.
  - An eviction refused by a PodDisruptionBudget (HTTP 429) is retried with backoff (0.5 s doubling up to 5 s) until
    O(timeout); the result names each blocking budget and the pods it holds. With O(delete_after_timeout) the pods
    still blocked at the timeout are deleted anyway.
  - DaemonSet pods and mirror (static) pods are skipped; pods of completed Jobs (phase Succeeded or Failed) are
    deleted. Pods not managed by a controller are refused unless O(force) (then deleted - they do not come back by
    themselves). Pods with emptyDir volumes are refused unless O(delete_emptydir_data). Pods annotated
    C(cluster-autoscaler.kubernetes.io/safe-to-evict=false) or C(node-recovery.ai-infra.io/protected=true) are
    refused unless O(force).
  - Refusals are judged before anything is done - when one pod is refused nothing is changed (like C(kubectl drain))
    and RV(message) names every refused pod and why.
  - A node that is not cordoned is cordoned first, with the same ownership annotation as
    M(ai_infra.node_recovery.node_isolate). The recovery state moves to C(draining), then to C(drained) once every pod
    has gone; a node further along (in repair, for instance) keeps its state.
  - Pods stuck Terminating on a NotReady or unreachable node (whose kubelet cannot confirm anything) are deleted with
    grace period 0 once O(force_delete_stuck_after) seconds have passed since their deletion time, so their
    controllers replace them; the result reports it.
  - "A drain that cannot finish is an outcome, not an error - the node's result says RV(nodes[].drained=false) with the
    per-pod report (refused pods, pods still held by a budget or still terminating at O(timeout)), and RV(drained) is
    false; use C(failed_when: not result.drained) to stop there. Only bad input and API failures (missing node, RBAC,
    connection) fail a node, and the module when any node failed."
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
  max_parallel:
    description:
      - How many nodes are drained at once (1 to 256).
    type: int
    default: 32
  timeout:
    description:
      - Seconds the drain may take, PDB retries and waiting for pods to be gone included.
    type: int
    default: 300
  concurrency:
    description:
      - How many eviction or deletion requests are in flight at once, per node.
    type: int
    default: 32
  grace_period:
    description:
      - Termination grace period, in seconds, given to every pod. By default each pod gets its own
        C(terminationGracePeriodSeconds) (a training job needs it to write its final checkpoint).
    type: int
  force:
    description:
      - Delete pods not managed by a controller (they will not come back), and evict pods annotated as protected.
    type: bool
    default: false
  delete_emptydir_data:
    description:
      - Evict pods with emptyDir volumes, whose data is lost.
      - True by default, unlike C(kubectl drain), and the same in the runbook - a faulty node's scratch space is lost
        anyway when it is rebooted or repaired, and accelerator pods mount emptyDir for shared memory
        (C(/dev/shm)), so refusing them would leave every training pod on a dead node. Set V(false) to refuse them
        as kubectl does.
    type: bool
    default: true
  pod_selector:
    description:
      - Label selector; only matching pods are drained, the others are reported as skipped.
    type: str
  exclude_namespaces:
    description:
      - Pods in these namespaces are left on the node and reported as skipped.
    type: list
    elements: str
    default: []
  delete_after_timeout:
    description:
      - At O(timeout), delete the pods still blocked by a PodDisruptionBudget instead of failing
        (like C(kubectl drain --disable-eviction) after a wait). The budget is then not honoured.
    type: bool
    default: false
  force_delete_stuck_after:
    description:
      - Seconds after its deletion time that a pod still Terminating on a NotReady or unreachable node is deleted with
        grace period 0. V(0) never does that.
      - For a StatefulSet pod this lets its replacement start while the old one might, in theory, still run on a
        partitioned node.
    type: int
    default: 60
  override_exclusion:
    description:
      - Drain even a node labelled C(node-recovery.ai-infra.io/exclude=true).
    type: bool
    default: false
  run_id:
    description:
      - Identifier of this remediation run, written to the node's C(node-recovery.ai-infra.io/run-id) annotation and
        Events. Defaults to a new identifier.
    type: str
extends_documentation_fragment:
  - ai_infra.node_recovery.k8s_auth
  - ai_infra.node_recovery.step
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  check_mode:
    details: Returns the plan (each pod's expected outcome, judged from the budgets' current status) and changes nothing.
  diff_mode:
    support: full
notes:
  - "RBAC: C(get)/C(patch) on C(nodes); C(list) and C(watch) on C(pods); C(list) and C(get) on C(poddisruptionbudgets);
    C(create) on C(pods/eviction); C(delete) on C(pods); C(create) on C(events) in namespace C(default). Missing
    permissions are found before the first write."
seealso:
  - module: ai_infra.node_recovery.node_isolate
  - module: kubernetes.core.k8s_drain
"""

EXAMPLES = r"""
- name: Drain a faulty node, giving training pods their own grace period for a final checkpoint
  ai_infra.node_recovery.node_drain:
    name: npu-a-0003
    delete_emptydir_data: true
    timeout: 900
  register: drained
  failed_when: not drained.drained

- name: Show what left and how long it took
  ansible.builtin.debug:
    msg: "{{ drained.nodes[0].summary }} in {{ drained.nodes[0].elapsed_seconds }}s"

- name: Drain the nodes of a failed rack at once; the result names each node that could not be drained
  ai_infra.node_recovery.node_drain:
    name: "{{ rack_nodes }}"
    max_parallel: 32
  register: rack

- name: See what a drain would do
  ai_infra.node_recovery.node_drain:
    name: npu-a-0003
  check_mode: true
  register: plan

- name: Drain only inference pods, leave kube-system alone, delete what a budget still holds after 10 minutes
  ai_infra.node_recovery.node_drain:
    name: npu-a-0003
    pod_selector: tier=inference
    exclude_namespaces: [kube-system]
    timeout: 600
    delete_after_timeout: true
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
    failed: {description: "Whether draining this node failed (bad input, API failure; see C(msg)).", type: bool,
             returned: always}
    msg: {description: Why draining this node failed., type: str, returned: when failed}
    started: {description: When the drain of this node started (UTC)., type: str, returned: always}
    finished: {description: When the drain of this node ended (UTC)., type: str, returned: always}
    drained:
      description: Whether every pod that had to leave is gone (or, in check mode, would be without waiting for a budget).
      returned: always
      type: bool
    pods:
      description: Every pod that was on the node, with its outcome.
      returned: always
      type: list
      elements: dict
      contains:
        namespace: {description: Namespace of the pod., type: str, returned: always}
        name: {description: Name of the pod., type: str, returned: always}
        owner: {description: "Controller of the pod as C(Kind/name), or null.", type: str, returned: always}
        action: {description: "What the rules decided: V(evict), V(delete), V(skip), V(refuse) or V(wait) (already
                  terminating).", type: str, returned: always}
        outcome: {description: "V(evicted), V(deleted), V(skipped), V(refused), V(blocked) (by a budget) or V(failed).",
                  type: str, returned: always}
        reason: {description: "Why (the rule, the budget's refusal, the error).", type: str, returned: always}
        pdb: {description: The PodDisruptionBudget that blocked it., type: str, returned: always}
        attempts: {description: Eviction or deletion requests made., type: int, returned: always}
        grace_period: {description: "Grace period the pod was given, in seconds.", type: int, returned: always}
        node: {description: The node the pod was on., type: str, returned: always}
        will_return: {description: Whether a controller recreates the pod elsewhere., type: bool, returned: always}
        seconds: {description: Seconds from the start of the drain until the pod was gone., type: float, returned: always}
      sample:
        - {namespace: serving, name: llm-7d9f-abcde, owner: ReplicaSet/llm-7d9f, action: evict, outcome: evicted,
           reason: managed by ReplicaSet llm-7d9f, pdb: null, attempts: 1, grace_period: 30, will_return: true, seconds: 1.2,
           node: npu-a-0003}
    summary:
      description: Number of pods per outcome.
      returned: always
      type: dict
      sample: {evicted: 12, deleted: 1, skipped: 2, refused: 0, blocked: 0, failed: 0}
    blocking_pdbs:
      description: Each PodDisruptionBudget that still blocked pods at the end, with the pods it holds and its status.
      returned: always
      type: list
      elements: dict
      sample:
        - {namespace: serving, name: llm, pods: [llm-7d9f-abcde], disruptionsAllowed: 0, currentHealthy: 2,
           desiredHealthy: 2, expectedPods: 2}
    elapsed_seconds:
      description: Time the drain took, in seconds.
      returned: always
      type: float
    state:
      description: Recovery state of the node afterwards.
      returned: always
      type: str
      sample: drained
    message:
      description: One sentence summing up the drain.
      returned: always
      type: str
drained:
  description: Whether every node given is drained (or would be, in check mode).
  returned: always
  type: bool
failed_nodes:
  description: Names of the nodes whose drain failed; the module fails when there is any.
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
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._drain import drain_nodes
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import ModuleSpec, run_module

SPEC = ModuleSpec(
    argument_spec=dict(
        **BATCH_ARGUMENT_SPEC,
        timeout={"type": "int", "default": 300},
        concurrency={"type": "int", "default": 32},
        grace_period={"type": "int"},
        force={"type": "bool", "default": False},
        delete_emptydir_data={"type": "bool", "default": True},
        pod_selector={"type": "str"},
        exclude_namespaces={"type": "list", "elements": "str", "default": []},
        delete_after_timeout={"type": "bool", "default": False},
        force_delete_stuck_after={"type": "int", "default": 60},
        override_exclusion={"type": "bool", "default": False},
        run_id={"type": "str"},
    ),
    run=drain_nodes,
    ranges={**BATCH_RANGES, "timeout": (0, None), "concurrency": (1, None),
            "grace_period": (0, None), "force_delete_stuck_after": (0, None)},
)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
