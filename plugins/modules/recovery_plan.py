#!/usr/bin/python
# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: recovery_plan
short_description: Plan a remediation run in one step - classify, judge the budgets, stop on a storm, take the lock
version_added: 0.2.0
description:
  - Classifies the cluster's nodes (as M(ai_infra.node_recovery.node_faults_info) with
    O(ai_infra.node_recovery.node_faults_info#module:include_healthy=false)) and decides which to remediate now, as
    the P(ai_infra.node_recovery.remediation_plan#filter) filter does, within every budget in O(budgets).
  - Fails with one sentence, before anything changes, on a malformed budget, a storm (the plan and the classification
    are in the result, for a report), or a cluster other than the one the inventory read its nodes from
    (O(inventory_cluster)).
  - With O(lock), and only when the plan acts on some node, takes the remediation lock and keeps it alive while the
    run lives, as M(ai_infra.node_recovery.remediation_lock) does. Under the lock the plan is made again when it may
    be out of date - the rolling cap (C(max_isolations)) is set, or the lock was waited for - so runs of every face
    together stay within the budgets.
  - One task for what would otherwise be a dozen - each Ansible task costs a run tens of milliseconds, skipped or
    not. The C(recover) playbook plans with it, and judges each batch's nodes again with it (O(names)) right before
    acting - from the plan's classification (O(classified)) for the first batch, which starts a moment after it.
author:
  - ai_infra node_recovery maintainers (!UNKNOWN)
options:
  names:
    description:
      - Only these nodes are read and judged (a name that does not exist is listed in the classification's
        C(missing_nodes)). The storm, the domains and the caps are then judged on these nodes only.
    type: list
    elements: str
  classified:
    description:
      - With O(names), what this module or M(ai_infra.node_recovery.node_faults_info) returned a moment ago for these
        nodes and maybe more (a run's plan, for its first batch); the nodes are judged from it instead of being read
        again. A name it does not hold counts as missing.
    type: dict
    version_added: 0.2.0
  label_selector:
    description: Only nodes matching this label selector (ignored with O(names)).
    type: str
  targets:
    description: Only these node names are acted on; the budgets are still judged on every node read.
    type: list
    elements: str
  targets_file:
    description:
      - A file that holds the node names to act on, as a JSON list, instead of O(targets); it is waited for up to
        O(targets_file_wait) seconds. Whoever starts the run writes it, at once (by renaming a complete file into
        place). The watcher starts a run as soon as a node faults and writes the file when its coalescing window
        closes, so the window passes while Ansible starts.
    type: path
    version_added: 0.2.0
  targets_file_wait:
    description: Seconds to wait for O(targets_file) to appear before failing, having changed nothing.
    type: int
    default: 60
    version_added: 0.2.0
  budgets:
    description:
      - The budgets, with the options of the P(ai_infra.node_recovery.remediation_plan#filter) filter -
        C(max_unhealthy), C(min_unhealthy_allowed), C(domain_budgets), C(max_nodes), C(max_isolations),
        C(isolation_window), C(repeat_after), C(repeat_window), C(max_attempts). A malformed one fails the task with
        one sentence naming its playbook variable.
    type: dict
    default: {}
  actions:
    description: Actions that are remediated; faults with other actions are only reported.
    type: list
    elements: str
    default: [restart_workloads, isolate, reboot_then_repair, repair]
  pause_namespace:
    description: Namespace of the pause switch ConfigMap.
    type: str
    default: default
  pause_name:
    description: Name of the pause switch ConfigMap; while it exists nothing is acted on. An empty name does not check.
    type: str
    default: node-recovery-pause
  inventory_cluster:
    description:
      - The cluster the inventory read the nodes from. When the cluster read here is another one (told apart by the
        uid of its C(kube-system) namespace), the task fails before anything changes.
    type: dict
    suboptions:
      id: {description: "The uid of the cluster's C(kube-system) namespace, as the inventory recorded it.", type: str}
      name: {description: "The cluster's name in an inventory of several clusters (the sentence then names it).",
             type: str}
      error: {description: Why the inventory could not read the cluster; the task fails with it., type: str}
  lock:
    description:
      - Take the remediation lock when the plan acts on some node (never in check mode), and keep it alive while the
        run's C(ansible-playbook) lives. Omitted, no lock is taken.
    type: dict
    suboptions:
      holder:
        description: Identity of the run holding the lock. Default C(<playbook>-<run_id>).
        type: str
      namespace: {description: Namespace of the Lease., type: str, default: default}
      name: {description: Name of the Lease; runs that must exclude each other use the same., type: str,
             default: node-recovery}
      duration: {description: Seconds the hold lasts after each renewal., type: int, default: 30}
      wait: {description: Seconds to wait for a lock held by another run before failing., type: int, default: 120}
  purpose:
    description:
      - V(remediate) plans the faulty nodes to act on, within every budget in O(budgets).
      - V(return) picks the nodes the C(return_to_service) playbook judges (each as an entry of the plan's C(act) with
        its C(name), C(state) and C(card)) - the nodes this collection isolated that are neither with the repair team
        (C(in-repair)) nor returned already, then nodes kept in service with lost cards whose cards are all usable
        again (C(card) true) - among O(targets). No budget holds a return, which gives capacity back; while the pause
        switch exists none is picked, each named in the plan's C(skip). Whether each may return is
        M(ai_infra.node_recovery.node_return)'s verdict.
    type: str
    choices: [remediate, return]
    default: remediate
    version_added: 0.2.0
  playbook:
    description: The playbook or face the run belongs to; names the lock's default holder.
    type: str
    default: recover
  run_id:
    description: Identifier of the run; a new one is made when omitted (RV(run_id)).
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
  - "RBAC: as M(ai_infra.node_recovery.node_faults_info), and with O(lock) as
    M(ai_infra.node_recovery.remediation_lock)."
  - Check mode reads and plans as a real run would, and takes no lock.
"""

EXAMPLES = r"""
- name: Plan the run and take the remediation lock
  ai_infra.node_recovery.recovery_plan:
    budgets: {max_unhealthy: 20%, max_nodes: 8}
    lock: {name: node-recovery}
  delegate_to: localhost
  run_once: true
  register: planned

- name: Judge a batch's nodes again right before acting (the per-node rules; the cluster-wide budgets were judged)
  ai_infra.node_recovery.recovery_plan:
    names: [npu-a-0003, npu-a-0004]
    budgets: {max_unhealthy: 100%}
  delegate_to: localhost
  run_once: true
  register: judged

- name: Pick the nodes to judge for return to service, and take the remediation lock when there is one
  ai_infra.node_recovery.recovery_plan:
    purpose: return
    playbook: return
    lock: {name: node-recovery}
  delegate_to: localhost
  run_once: true
  register: returning
"""

RETURN = r"""
run_id:
  description: The run's id, as given or made.
  returned: always
  type: str
  sample: 20261202T120000Z-3fa2c1
started:
  description: When the plan was started (RFC 3339, UTC).
  returned: always
  type: str
plan:
  description: The plan, as the P(ai_infra.node_recovery.remediation_plan#filter) filter returns it (C(act), C(skip),
    C(storm), C(budgets), ...); with O(purpose=return), in the same shape, the nodes to judge for return.
  returned: always, and on a storm or a cluster other than the inventory's
  type: dict
classification:
  description: What the plan was made from, as M(ai_infra.node_recovery.node_faults_info) returns it (C(nodes) the
    unhealthy ones, C(pools), C(domains), C(isolations), C(paused), C(cluster), C(missing_nodes)).
  returned: always, and on a storm or a cluster other than the inventory's
  type: dict
locked:
  description: Whether this task holds the remediation lock now (give it back with
    M(ai_infra.node_recovery.remediation_lock) O(ai_infra.node_recovery.remediation_lock#module:state=released)).
  returned: always
  type: bool
lock:
  description: The lock as taken - the Lease's fields, C(holder), C(message), C(waited_seconds) and
    C(keep_alive_pid) - or null.
  returned: always
  type: dict
"""

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._lock import (
    DEFAULT_DURATION,
    DEFAULT_NAME,
    DEFAULT_NAMESPACE,
    DEFAULT_WAIT,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import CLASSIFY_ARG_SPEC
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._plan import REMEDIABLE_ACTIONS
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._run_plan import option_problem, recovery_plan
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import ModuleSpec, run_module
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._vocabulary import PAUSE_CONFIGMAP, PAUSE_NAMESPACE

SPEC = ModuleSpec(
    argument_spec=dict(
        names={"type": "list", "elements": "str"},
        classified={"type": "dict"},
        label_selector={"type": "str"},
        targets={"type": "list", "elements": "str"},
        targets_file={"type": "path"},
        targets_file_wait={"type": "int", "default": 60},
        budgets={"type": "dict", "default": {}},
        actions={"type": "list", "elements": "str", "default": list(REMEDIABLE_ACTIONS)},
        pause_namespace={"type": "str", "default": PAUSE_NAMESPACE},
        pause_name={"type": "str", "default": PAUSE_CONFIGMAP},
        inventory_cluster={"type": "dict", "options": {"id": {"type": "str"}, "name": {"type": "str"},
                                                       "error": {"type": "str"}}},
        lock={"type": "dict", "options": {
            "holder": {"type": "str"},
            "namespace": {"type": "str", "default": DEFAULT_NAMESPACE},
            "name": {"type": "str", "default": DEFAULT_NAME},
            "duration": {"type": "int", "default": DEFAULT_DURATION},
            "wait": {"type": "int", "default": DEFAULT_WAIT},
        }},
        playbook={"type": "str", "default": "recover"},
        purpose={"type": "str", "default": "remediate", "choices": ["remediate", "return"]},
        run_id={"type": "str"},
        **CLASSIFY_ARG_SPEC,
    ),
    run=recovery_plan,
    ranges={"targets_file_wait": (0, None)},
    check=option_problem,
)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
