#!/usr/bin/python
# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: node_drain
short_description: Drain a Kubernetes node through the Eviction API, several pods at once, waiting out PodDisruptionBudgets
version_added: 0.1.0
description:
  - Evicts the node's pods through the Eviction API, O(concurrency) at a time, and waits until they are gone.
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
  - "A drain that cannot finish is an outcome, not an error - the module returns RV(drained=false) with the per-pod
    report (refused pods, pods still held by a budget or still terminating at O(timeout)); use
    C(failed_when: not result.drained) to stop there. Only bad input and API failures (missing node, RBAC, connection)
    fail the module."
author:
  - ai_infra node_recovery maintainers (!UNKNOWN)
options:
  name:
    description:
      - Name of the node.
    type: str
    required: true
  timeout:
    description:
      - Seconds the drain may take, PDB retries and waiting for pods to be gone included.
    type: int
    default: 300
  concurrency:
    description:
      - How many eviction or deletion requests are in flight at once.
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
    type: bool
    default: false
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
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Returns the plan (each pod's expected outcome, judged from the budgets' current status) and changes nothing.
  diff_mode:
    support: full
  platform:
    platforms: all
notes:
  - Requires the C(kubernetes) Python library on the host that runs the module (usually the controller).
  - "RBAC: C(get)/C(patch) on C(nodes); C(list) on C(pods) and C(poddisruptionbudgets); C(create) on C(pods/eviction);
    C(delete) on C(pods); C(create) on C(events) in namespace C(default). Missing permissions are found before the first
    write."
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
    msg: "{{ drained.summary }} in {{ drained.elapsed_seconds }}s"

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
node_name:
  description: Name of the node.
  returned: always
  type: str
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
    will_return: {description: Whether a controller recreates the pod elsewhere., type: bool, returned: always}
    seconds: {description: Seconds from the start of the drain until the pod was gone., type: float, returned: always}
  sample:
    - {namespace: serving, name: llm-7d9f-abcde, owner: ReplicaSet/llm-7d9f, action: evict, outcome: evicted,
       reason: managed by ReplicaSet llm-7d9f, pdb: null, attempts: 1, grace_period: 30, will_return: true, seconds: 1.2}
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
run_id:
  description: The run id written to the node.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import new_run_id
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import (
    AUTH_ARG_SPEC,
    HAS_KUBERNETES,
    KUBERNETES_IMPORT_ERROR,
    Client,
    KubernetesError,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._drain import drain
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._isolate import NodeRefused


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            name={"type": "str", "required": True},
            timeout={"type": "int", "default": 300},
            concurrency={"type": "int", "default": 32},
            grace_period={"type": "int"},
            force={"type": "bool", "default": False},
            delete_emptydir_data={"type": "bool", "default": False},
            pod_selector={"type": "str"},
            exclude_namespaces={"type": "list", "elements": "str", "default": []},
            delete_after_timeout={"type": "bool", "default": False},
            force_delete_stuck_after={"type": "int", "default": 60},
            override_exclusion={"type": "bool", "default": False},
            run_id={"type": "str"},
            **AUTH_ARG_SPEC,
        ),
        supports_check_mode=True,
    )
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=str(KUBERNETES_IMPORT_ERROR))
    params = module.params
    for option in ("timeout", "concurrency", "grace_period", "force_delete_stuck_after"):
        if params[option] is not None and (params[option] < 0 or (option == "concurrency" and params[option] < 1)):
            module.fail_json(msg=f"{option} must be {'at least 1' if option == 'concurrency' else 'zero or more'}, "
                                 f"not {params[option]}")
    run_id = params["run_id"] or new_run_id()
    try:
        client = Client(params)
        result = drain(client, params["name"], timeout=params["timeout"], concurrency=params["concurrency"],
                       grace_period=params["grace_period"], force=params["force"],
                       delete_emptydir_data=params["delete_emptydir_data"], pod_selector=params["pod_selector"],
                       exclude_namespaces=params["exclude_namespaces"],
                       delete_after_timeout=params["delete_after_timeout"],
                       force_delete_stuck_after=params["force_delete_stuck_after"],
                       override_exclusion=params["override_exclusion"], run_id=run_id, check_mode=module.check_mode)
    except (KubernetesError, NodeRefused) as err:
        module.fail_json(msg=str(err), node_name=params["name"], run_id=run_id)
    diff = result.pop("diff")
    if module._diff:
        result["diff"] = diff
    result["run_id"] = run_id
    module.exit_json(**result)


if __name__ == "__main__":
    main()
