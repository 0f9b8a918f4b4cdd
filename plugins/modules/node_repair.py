#!/usr/bin/python
# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: node_repair
short_description: Hand a faulty accelerator node to repair with an evidence bundle, and record the hand-over
version_added: 0.1.0
description:
  - Takes a batch of nodes and acts on them at once (at most O(max_parallel) at a time), each judged, audited and
    reported on its own; one node's failure does not stop the others and is named in the result.
  - V(requested) marks the node C(repair-pending) (annotation C(node-recovery.ai-infra.io/state) and the label of the
    same name, so repair teams can select such nodes) and produces a repair ticket with an evidence bundle. The node's
    identity (name, provider ID, addresses, pool, flavor). Every fault with reason, message and since when.
    Accelerators expected against allocatable. The recent Events of the node. The affected workloads and what was done
    to them (O(workloads)). The actions already tried, for example a reboot. The fault history. The ticket is delivered
    to O(directory) (C(<ticket>.json) and a readable C(<ticket>.md)) and/or POSTed as JSON to O(webhook_url), before
    the node is marked, so a refused delivery changes nothing. A node already C(repair-pending) or C(in-repair) with a
    ticket is left as it is (changed false, the ticket is not sent again).
  - A node isolated by this collection more than O(repeat_after) times within O(repeat_window) (its
    C(node-recovery.ai-infra.io/isolations) annotation, the current isolation included) is a repeat offender - the
    loop breaker. Its ticket says so in its summary and its C(repeat_offender) field, and the hand-off marks the node
    (annotation C(node-recovery.ai-infra.io/repeat-offender)), so P(ai_infra.node_recovery.node_return#module) does not
    return it to service until the repair team marked it V(repaired).
  - V(in_repair) records that the repair team took the node, and V(repaired) that it gave it back. Who (O(by)), when,
    and the ticket reference (O(ticket_ref) when the repair system has its own) are recorded as annotations and a
    Kubernetes Event. A repaired node stays isolated until P(ai_infra.node_recovery.node_return#module) proves it
    healthy.
  - The ticket's lifecycle goes to O(webhook_url) under the ticket's one id. The hand-off carries an C(update) with the
    transition V(requested), or V(escalated) with C(previous_ticket) when the node had a ticket of an earlier episode
    (annotation C(node-recovery.ai-infra.io/previous-ticket)); V(in_repair) and V(repaired) each POST an update
    (C({update, text})) before the node is marked. Every update has an idempotency key, C(<ticket>:<transition>), also
    sent as the header C(Idempotency-Key), so a retried or re-sent delivery can be de-duplicated. Check mode sends
    nothing.
  - V(recorded) only records the node's current faults in its fault history (and O(action_tried), if given). It
    returns RV(nodes[].escalate) when a fault happened O(escalate_after) times within O(history_window). So a fault that
    comes back after a reboot goes to repair instead of another reboot (like MindCluster's fault frequency).
  - The fault history (annotation C(node-recovery.ai-infra.io/fault-history)) keeps, per fault type, when each
    episode began (its condition's C(lastTransitionTime), else the isolation time). Recording the same episode again
    changes nothing.
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
      - How many nodes are acted on at once (1 to 256).
    type: int
    default: 32
  state:
    description:
      - V(requested) opens a repair ticket and marks the node C(repair-pending).
      - V(in_repair) and V(repaired) record the hand-over to and back from the repair team.
      - V(recorded) records the current faults in the fault history (and O(action_tried)) without changing the state.
    type: str
    choices: [requested, in_repair, repaired, recorded]
    default: requested
  by:
    description:
      - Who requests the repair, takes the node (V(in_repair)) or gives it back (V(repaired)).
      - Required for V(in_repair) and V(repaired); defaults to the collection's name for V(requested).
    type: str
  ticket_ref:
    description:
      - The repair system's own reference for the ticket, recorded with V(in_repair) or V(repaired).
    type: str
  note:
    description:
      - Free text for the ticket or the hand-over Event.
    type: str
  action_tried:
    description:
      - An action already tried on the node, recorded with V(recorded) or V(requested) (annotation
        C(node-recovery.ai-infra.io/actions)) and listed in the ticket.
      - C(action) names it (for example C(reboot)); C(result) and C(detail) are free text.
      - The same action in the same run is updated in place rather than added again.
    type: dict
    suboptions:
      action:
        description: What was tried.
        type: str
        required: true
      result:
        description: How it went.
        type: str
      detail:
        description: Anything else worth knowing.
        type: str
  workloads:
    description:
      - The affected workloads and what was done to them, for the ticket.
      - Pass the RV(ai_infra.node_recovery.workload_recover#module:workloads) result as it is.
    type: list
    elements: dict
    default: []
  directory:
    description:
      - Directory the ticket is written to (created if missing), as C(<ticket>.json) and C(<ticket>.md).
    type: path
  webhook_url:
    description:
      - URL the ticket is POSTed to as JSON (C({ticket, text, markdown, update})); C(text) is a one-line summary, which
        chat webhooks display.
      - With V(in_repair) and V(repaired), the URL the ticket's update is POSTed to (C({update, text})).
      - Retried on HTTP 5xx, 429 and connection errors (O(webhook_retries)); any other 4xx fails at once.
      - Treated as a secret (it often embeds a token); messages name only its scheme, host and port.
    type: str
  webhook_headers:
    description:
      - Extra HTTP headers for the webhook, for example an C(Authorization) header. Never logged.
    type: dict
  webhook_timeout:
    description:
      - Seconds to wait for each webhook attempt.
    type: int
    default: 10
  webhook_retries:
    description:
      - How many times a failed webhook delivery is retried, with backoff (1, 2, 4... seconds, up to 10).
    type: int
    default: 3
  webhook_validate_certs:
    description:
      - Whether the webhook's TLS certificate is verified.
    type: bool
    default: true
  history_window:
    description:
      - Seconds of fault history that count; older occurrences are dropped.
    type: int
    default: 86400
  escalate_after:
    description:
      - How many occurrences of one fault within O(history_window) escalate it to repair.
    type: int
    default: 2
  repeat_after:
    description:
      - With V(requested), a node isolated more than this many times within O(repeat_window) is handed over as a
        repeat offender (V(0) never). The C(recover) playbook passes C(node_recovery_repeat_after).
    type: int
    default: 3
  repeat_window:
    description:
      - Seconds in which isolations count towards a repeat offence (at most 90 days, as long as a node keeps its
        isolation times). The C(recover) playbook passes C(node_recovery_repeat_window).
    type: int
    default: 604800
  events_limit:
    description:
      - How many of the node's most recent Events go into the ticket.
    type: int
    default: 20
  run_id:
    description:
      - Id of the remediation run; defaults to the one the isolation recorded on the node, or a new id.
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
  - "RBAC: C(get) and C(patch) on C(nodes), C(list) on C(events), C(create) on C(events) in namespace C(default)."
seealso:
  - module: ai_infra.node_recovery.workload_recover
  - module: ai_infra.node_recovery.node_return
"""

EXAMPLES = r"""
- name: Hand the node to repair with its evidence
  ai_infra.node_recovery.node_repair:
    name: npu-a-0003
    workloads: "{{ recovery.workloads }}"
    directory: /var/lib/node-recovery/tickets
    webhook_url: "{{ repair_webhook_url }}"
    webhook_headers:
      Authorization: "Bearer {{ repair_webhook_token }}"
  register: repair

- name: The repair team took it
  ai_infra.node_recovery.node_repair:
    name: npu-a-0003
    state: in_repair
    by: dc-ops (Jane)
    ticket_ref: INC-20419

- name: Before a reboot, does this fault come back too often?
  ai_infra.node_recovery.node_repair:
    name: npu-a-0003
    state: recorded
    action_tried: {action: reboot, result: started}
  register: history

- name: It does, so repair rather than reboot again
  ai_infra.node_recovery.node_repair:
    name: npu-a-0003
  when: history.nodes[0].escalate
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
    failed: {description: "Whether acting on this node failed (see C(msg)).", type: bool, returned: always}
    msg: {description: Why acting on this node failed., type: str, returned: when failed}
    started: {description: When acting on this node started (UTC)., type: str, returned: always}
    finished: {description: When acting on this node finished (UTC)., type: str, returned: always}
    ticket_id:
      description:
        - Id of the repair ticket (new, or the one the node already has). One per fault episode - derived from the
          node's isolation (or the repair team's last hand-back), else its earliest fault - so a retried hand-off
          sends the same id and a receiver can de-duplicate by it.
      returned: when O(state) is not V(recorded)
      type: str
      sample: NR-20261129T120000Z-npu-a-0003
    ticket:
      description:
        - The evidence bundle. It holds ticket, created, requested_by, run_id, note, previous_ticket, summary, node
          (name, provider_id, addresses, pool, flavor, accelerator_type, ready), recovery (state, isolation, cordon
          owner, taints), health, action, repeat_offender (null, or isolations, window_seconds, after and reason),
          faults, pending_faults, suspect_signals, accelerators, events, workloads, actions_tried and fault_history.
      returned: when a new ticket is made
      type: dict
    repeat_offender:
      description: Why the node was handed over as a repeat offender (isolations, window_seconds, after, reason), or
        null.
      returned: when a new ticket is made
      type: dict
    markdown:
      description: The ticket as Markdown.
      returned: when a new ticket is made
      type: str
    delivered:
      description: Where the ticket or its update went, files (the paths written) and webhook (endpoint, HTTP status,
        attempts, idempotency_key).
      returned: when O(state) is not V(recorded)
      type: dict
      sample:
        files: [/var/lib/node-recovery/tickets/NR-20261129T120000Z-npu-a-0003.json]
        webhook: {endpoint: "https://ops.example.com", status: 200, attempts: 2,
                  idempotency_key: "NR-20261129T120000Z-npu-a-0003:requested"}
    update:
      description:
        - The ticket's lifecycle update for this call (ticket, transition, idempotency_key, at, by, node, state,
          ticket_ref, note, run_id, previous_ticket), sent with O(webhook_url) or, in check mode, that would be.
        - The transition is V(requested) or V(escalated) for a hand-off, V(in_repair) or V(repaired) for a hand-over;
          null for a hand-over of a node without a ticket.
      returned: when a new ticket is made, and when O(state) is V(in_repair) or V(repaired)
      type: dict
      sample: {ticket: NR-20261129T120000Z-npu-a-0003, transition: in_repair,
               idempotency_key: "NR-20261129T120000Z-npu-a-0003:in_repair", at: "2026-11-29T14:00:00Z",
               by: dc-ops (Jane), node: npu-a-0003, state: in-repair, ticket_ref: INC-20419, note: null,
               run_id: 20261129T120000Z-1a2b3c, previous_ticket: null}
    previous_ticket:
      description: The node's ticket of an earlier episode that this hand-off follows (transition V(escalated)), or null.
      returned: when a new ticket is made
      type: str
    state:
      description: The node's recovery state afterwards.
      returned: when O(state) is not V(recorded)
      type: str
    ticket_ref:
      description: The repair system's own reference, when there is one.
      returned: when O(state) is V(in_repair) or V(repaired)
      type: str
    by:
      description: Who took the node or gave it back (O(by)).
      returned: when O(state) is V(in_repair) or V(repaired)
      type: str
    at:
      description: When (UTC).
      returned: when O(state) is V(in_repair) or V(repaired)
      type: str
    recorded:
      description: The fault types whose occurrence this call added to the history (an episode counts once).
      returned: when O(state=recorded)
      type: list
      elements: str
    action:
      description: The node's strongest catalog action now.
      returned: when O(state=recorded)
      type: str
    escalate:
      description: Whether a current fault reached O(escalate_after) occurrences within O(history_window).
      returned: when O(state=recorded)
      type: bool
    escalated:
      description: The fault types that escalate, each with type and count.
      returned: when O(state) is V(recorded) or V(requested)
      type: list
      elements: dict
    history:
      description: Occurrences per fault type within the window.
      returned: when O(state=recorded)
      type: dict
      sample: {NT_NPU_DEVICE: 2}
    occurrences:
      description: When each occurrence began, per fault type.
      returned: when O(state=recorded)
      type: dict
    faults:
      description: The node's current fault types.
      returned: when O(state=recorded)
      type: list
      elements: str
    actions_tried:
      description: The actions recorded on the node, oldest first.
      returned: when O(state=recorded)
      type: list
      elements: dict
    message:
      description: One sentence on what was done.
      returned: always
      type: str
    run_id:
      description: The run id used.
      returned: always
      type: str
failed_nodes:
  description: Names of the nodes that could not be acted on; the module fails when there is any.
  returned: always
  type: list
  elements: str
message:
  description: The nodes' sentences, joined.
  returned: always
  type: str
"""

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._batch import BATCH_ARGUMENT_SPEC, BATCH_RANGES
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import MAX_WINDOW
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import CLASSIFY_ARG_SPEC
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._plan import MAX_REPEAT_AFTER
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._repair import repair_nodes
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import ModuleSpec, run_module
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._webhook import url_problem

SPEC = ModuleSpec(
    argument_spec=dict(
        **BATCH_ARGUMENT_SPEC,
        state={"type": "str", "default": "requested", "choices": ["requested", "in_repair", "repaired", "recorded"]},
        by={"type": "str"},
        ticket_ref={"type": "str"},
        note={"type": "str"},
        action_tried={"type": "dict", "options": {"action": {"type": "str", "required": True},
                                                  "result": {"type": "str"}, "detail": {"type": "str"}}},
        workloads={"type": "list", "elements": "dict", "default": []},
        directory={"type": "path"},
        webhook_url={"type": "str", "no_log": True},
        webhook_headers={"type": "dict", "no_log": True},
        webhook_timeout={"type": "int", "default": 10},
        webhook_retries={"type": "int", "default": 3},
        webhook_validate_certs={"type": "bool", "default": True},
        history_window={"type": "int", "default": 86400},
        escalate_after={"type": "int", "default": 2},
        events_limit={"type": "int", "default": 20},
        repeat_after={"type": "int", "default": 3},
        repeat_window={"type": "int", "default": 604800},
        run_id={"type": "str"},
        **CLASSIFY_ARG_SPEC,
    ),
    run=repair_nodes,
    ranges={**BATCH_RANGES, "history_window": (1, None), "escalate_after": (1, None),
            "webhook_timeout": (1, None), "webhook_retries": (0, None), "events_limit": (0, None),
            "repeat_after": (0, MAX_REPEAT_AFTER), "repeat_window": (1, MAX_WINDOW)},
    check=lambda params: url_problem("webhook_url", params["webhook_url"]),
    required_if=(("state", "in_repair", ("by",)), ("state", "repaired", ("by",))),
)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
