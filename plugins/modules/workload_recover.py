#!/usr/bin/python
# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: workload_recover
short_description: Bring the work of remediated accelerator nodes back, restarting distributed training whole
version_added: 0.1.0
description:
  - Finds the owner of every pod that ran on the nodes being remediated (the pods still bound to O(nodes) and the
    pods a drain already evicted, O(evicted)), following ReplicaSet to Deployment, Job to CronJob or JobSet, and
    recognising StatefulSet, ReplicationController, Volcano C(batch.volcano.sh) Job, Kubeflow C(kubeflow.org)
    PyTorchJob, TFJob and MPIJob, JobSet, DaemonSet, static and bare pods. Each workload is handled once per run,
    however many of its nodes are remediated.
  - B(Services) (Deployment, StatefulSet, ReplicaSet, ReplicationController) and single-worker Jobs are replaced by
    their controller; the module waits until the desired replicas are Ready on schedulable nodes other than O(nodes)
    and reports the time it took and where they landed, or, on timeout, what is still Pending and the scheduler's
    reason.
  - B(Distributed training) is restarted as a whole, because a job whose rank died is dead as a whole. A batch Job
    with parallelism above 1 or Indexed completions is suspended (the Job controller stops every pod with its grace
    period, so the final checkpoint can be written, without counting failures), then resumed once every old pod is
    gone, so all ranks are recreated together and no rank ever runs twice; a Job admitted by Kueue is evicted pod by
    pod instead. A Volcano Job gets a C(bus.volcano.sh/v1alpha1) Command with action C(RestartJob) (what
    C(vcctl job restart) creates). Kubeflow jobs and JobSets have every pod stopped through the Eviction API with
    its grace period, and their operator recreates them. The restart is recorded on the job (annotations
    C(node-recovery.ai-infra.io/restarted-run) and C(restarted-at)), and a job is restarted once per fault episode -
    not again by this run, nor by a later run once it was restarted after every remediated node it ran on was
    isolated.
  - A whole restart never force-deletes a pod on a Ready node (its kubelet enforces the grace period). A batch Job
    whose rank does not stop within its grace period and a margin stays suspended, with the label
    C(node-recovery.ai-infra.io/suspended-by-run), and is reported failed. Any later run finds such Jobs by that label,
    wherever they run, and resumes them once their pods are gone. Pods on a node that is not Ready are force-deleted
    at once, since their kubelet can confirm nothing.
  - The retry budget of each training job is reported (C(backoffLimit) vs C(status.failed), C(maxRetry) vs
    C(status.retryCount), C(runPolicy.backoffLimit), C(failurePolicy.maxRestarts) vs C(status.restartsCountTowardsMax)
    or C(status.restarts)), and a job about to exhaust it is called out in RV(warnings).
  - B(Bare pods) are reported lost; with O(recreate_unmanaged) they are re-created from their spec without the node
    binding.
  - DaemonSet and static pods belong to their node and are left alone.
  - Every action is recorded as a Kubernetes Event (reason C(NodeRecoveryWorkloadRestarted)) on the node.
  - Fails, with the full report, when a workload does not run again - it timed out (O(wait_timeout)), its restart
    failed, or a PodDisruptionBudget blocked it (see O(restart_ignores_budgets)) - also with O(wait=false).
author:
  - ai_infra node_recovery maintainers (!UNKNOWN)
options:
  nodes:
    description:
      - Names of the nodes being remediated. Their pods are recovered, and replicas landing on them do not count.
      - A name that does not exist fails the module.
      - At least one of O(nodes) and O(evicted) is required.
    type: list
    elements: str
  evicted:
    description:
      - Pods a drain already removed from the nodes (they are gone from the node, so their owners come from here).
      - "Each item is either a mapping with key C(pod) (the pod object itself) or a mapping with C(namespace), C(name),
        optionally C(node) and C(uid), and the owner as C(owner) (C(Kind/name) as P(ai_infra.node_recovery.node_drain#module)
        reports it in C(pods), or a mapping with C(kind), C(name), C(api_version)), as C(owner_references) (the pod's
        ownerReferences) or as C(owner_kind), C(owner_name), C(owner_api_version)."
      - The items of P(ai_infra.node_recovery.node_drain#module)'s C(pods) result can be passed as they are; an item
        without C(node) belongs to the only node in O(nodes).
      - A bare pod can only be re-created from here when the item carries the pod itself.
    type: list
    elements: dict
  recreate_unmanaged:
    description:
      - Re-create bare pods (no controller) from their spec, without the node binding, so the scheduler places them
        on a healthy node. A bare pod still on the node is deleted first, with its grace period.
    type: bool
    default: false
  restart_ignores_budgets:
    description:
      - Restart a training job whole even when PodDisruptionBudgets covering its pods allow fewer disruptions than
        the restart makes - its pods are then deleted past the budget.
      - By default a restart never bypasses a budget. Before any whole restart the budgets of the job's pods are
        judged; a job they protect is reported C(blocked) and not touched. What each kind's restart does otherwise -
        a batch Job is suspended (the Job controller deletes its pods, which budgets do not see), a Volcano Job gets a
        RestartJob Command (Volcano deletes its pods), Kubeflow jobs and JobSets have their pods evicted (a refusal is
        retried for about 15 s, then reported).
    type: bool
    default: false
  wait:
    description:
      - Wait until services and batch Jobs are running again. Operator-managed jobs (Volcano, Kubeflow, JobSet)
        are not waited for; the restart request is reported and their operator does the rest.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait for the work to be running again (counted from the start of the module).
    type: int
    default: 300
  run_id:
    description:
      - Id of the remediation run, recorded on every job it restarts (a job is restarted once per fault episode).
      - Defaults to the run id the isolation recorded on the nodes (annotation C(node-recovery.ai-infra.io/run-id)),
        or a new id.
    type: str
extends_documentation_fragment:
  - ai_infra.node_recovery.k8s_auth
  - ai_infra.node_recovery.step
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  check_mode:
    details: Resolves owners and returns the plan (RV(workloads[].action)); nothing is stopped, created or waited for.
  diff_mode:
    support: full
notes:
  - For a batch Job, a C(podFailurePolicy) rule ignoring pods with condition C(DisruptionTarget) keeps node failures
    and drains from consuming C(backoffLimit); see the collection's recovery and repair guide.
seealso:
  - module: ai_infra.node_recovery.node_drain
  - module: ai_infra.node_recovery.node_repair
"""

EXAMPLES = r"""
- name: Recover what ran on the drained node
  ai_infra.node_recovery.workload_recover:
    nodes: [npu-a-0003]
    evicted: "{{ drain.nodes[0].pods | selectattr('outcome', 'in', ['evicted', 'deleted']) }}"
    wait_timeout: 600
  register: recovery

- name: Show how long each workload took to come back
  ansible.builtin.debug:
    msg: "{{ item.kind }} {{ item.namespace }}/{{ item.name }}: {{ item.status }} {{ item.recovered_seconds | default('') }}"
  loop: "{{ recovery.workloads }}"

- name: Plan only (which jobs would be restarted whole)
  ai_infra.node_recovery.workload_recover:
    nodes: "{{ faulty_nodes }}"
  check_mode: true
"""

RETURN = r"""
started:
  description: When the recovery started (UTC).
  returned: always
  type: str
finished:
  description: When it ended, the wait included (UTC).
  returned: always
  type: str
by_node:
  description: Per node given, what the recovery did for the work that ran there.
  returned: always
  type: list
  elements: dict
  contains:
    name: {description: Name of the node., type: str, returned: always}
    workloads: {description: "The workloads whose pods ran there, as C(Kind namespace/name).", type: list,
                elements: str, returned: always}
    recovered: {description: Whether all of them run again (never true in check mode)., type: bool, returned: always}
    unrecovered: {description: "Those that do not (timed out, failed, blocked or not waited for).", type: list,
                  elements: str, returned: always}
    restarted: {description: Training jobs restarted whole., type: list, elements: str, returned: always}
    lost: {description: "Bare pods lost, as C(namespace/name).", type: list, elements: str, returned: always}
    messages: {description: One line per workload saying where it stands., type: list, elements: str,
               returned: always}
  sample:
    - {name: npu-a-0003, workloads: [Deployment serving/llm, Job train/gpt], recovered: true, unrecovered: [],
       restarted: [Job train/gpt], lost: [], messages: ["Deployment serving/llm: 2/2 Ready on schedulable nodes"]}
workloads:
  description: One entry per workload whose pods ran on the nodes.
  returned: always
  type: list
  elements: dict
  contains:
    kind:
      description: Kind of the owning workload (C(Pod) for a bare pod).
      type: str
      returned: always
    api_version:
      description: Its apiVersion.
      type: str
      returned: always
    namespace:
      description: Its namespace.
      type: str
      returned: always
    name:
      description: Its name.
      type: str
      returned: always
    strategy:
      description: "V(wait_ready), V(restart_job), V(restart_command), V(restart_pods), V(recreate), V(lost) or V(none)."
      type: str
      returned: always
    why:
      description: Why this strategy.
      type: str
      returned: always
    status:
      description:
        - "V(recovered), V(restarted), V(restart_requested), V(already_restarted), V(recreated), V(already_recreated),
          V(lost), V(skipped),
          V(timeout), V(failed), V(blocked) (a PodDisruptionBudget forbids the whole restart), V(not_waited) or, in
          check mode, V(planned)."
      type: str
      returned: always
    action:
      description: What was done to it, or in check mode what would be done.
      type: str
      returned: when acted on
    message:
      description: One sentence on where it stands.
      type: str
      returned: always
    pods:
      description: Its pods that ran on the nodes, each with namespace, name, uid, node and phase.
      type: list
      elements: dict
      returned: always
    nodes:
      description: The remediated nodes its pods ran on.
      type: list
      elements: str
      returned: always
    stopped:
      description: Pods stopped for a whole restart, and how.
      type: list
      elements: dict
      returned: when restarted
    landed:
      description: Its Ready pods on schedulable nodes, each with pod, node and uid.
      type: list
      elements: dict
      returned: when waited for
    desired:
      description: How many Ready pods it needs.
      type: int
      returned: when waited for
    recovered_seconds:
      description: Seconds from the start of the module until it was running again.
      type: float
      returned: when recovered
    pending:
      description: On timeout, each pod that is not running where it should, with the scheduler's reason.
      type: list
      elements: dict
      returned: on timeout
    budget:
      description:
        - Retry budget of a training job, with field, limit, used, remaining, restart_cost (what this restart
          consumes, null when unknown), at_risk and a message.
      type: dict
      returned: for training jobs
    request:
      description: The Volcano Command created, with name, apiVersion, kind, action and target.
      type: dict
      returned: for Volcano jobs
  sample:
    - kind: Job
      api_version: batch/v1
      namespace: training
      name: llm-pretrain
      strategy: restart_job
      status: recovered
      recovered_seconds: 4.2
      landed: [{pod: llm-pretrain-0-x7k2p, node: npu-a-0007, uid: 5f0c2a7e-0b1d-4c57-9a43-0f3b8d2f9e11}]
      budget: {field: backoffLimit, limit: 6, used: 0, remaining: 6, restart_cost: 0, at_risk: false}
restarted:
  description: The training jobs restarted whole in this call.
  returned: always
  type: list
  elements: str
recovered:
  description: Whether every workload that can come back is running again.
  returned: always
  type: bool
lost:
  description: Bare pods that nothing brings back, as namespace/name.
  returned: always
  type: list
  elements: str
unrecovered:
  description: Workloads that do not run again (timed out, failed or blocked by a PodDisruptionBudget).
  returned: always
  type: list
  elements: str
warnings:
  description: Jobs about to exhaust their retry budget.
  returned: always
  type: list
  elements: str
run_id:
  description: The run id used for the restart guard and the Events.
  returned: always
  type: str
nodes:
  description: The remediated nodes, given or named by the evicted pods.
  returned: always
  type: list
  elements: str
elapsed_seconds:
  description: Time the module took.
  returned: always
  type: float
"""

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import ModuleSpec, run_module
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._workloads import recover_workloads

SPEC = ModuleSpec(
    argument_spec=dict(
        nodes={"type": "list", "elements": "str"},
        evicted={"type": "list", "elements": "dict"},
        recreate_unmanaged={"type": "bool", "default": False},
        restart_ignores_budgets={"type": "bool", "default": False},
        wait={"type": "bool", "default": True},
        wait_timeout={"type": "int", "default": 300},
        run_id={"type": "str"},
    ),
    run=recover_workloads,
    ranges={"wait_timeout": (0, None)},
    required_one_of=(("nodes", "evicted"),),
)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
