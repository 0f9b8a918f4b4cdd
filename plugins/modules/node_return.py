#!/usr/bin/python
# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: node_return
short_description: Return a repaired or recovered accelerator node to service once it is proven healthy
version_added: 0.1.0
description:
  - Takes a batch of nodes and judges and returns them at once (at most O(max_parallel) at a time), each on its own.
  - Returns the node only when all of these hold. It was isolated by this collection (our annotations or our taint).
    Every catalogued fault condition has been healthy, C(False) (C(True) for C(Ready)) and never C(Unknown), for at
    least O(healthy_delay) seconds since its C(lastTransitionTime). Its accelerator C(allocatable) count is back to the
    expected count. The repair team does not hold it (state C(in-repair)). And it is not a repeat offender (annotation
    C(node-recovery.ai-infra.io/repeat-offender), written when P(ai_infra.node_recovery.node_repair#module) handed it
    over as one) unless the repair team marked it C(repaired) - the loop breaker's one reason.
  - The judgement of faults is the same classification as P(ai_infra.node_recovery.node_faults_info#module), with the
    same catalog options; the return adds the healthy delay and refuses C(Unknown) whatever O(nt_unknown) says.
  - Then our taint and isolation annotations are removed and the node is uncordoned, but only if the cordon is ours.
    A node a person cordoned stays cordoned. The repeat-offender mark is removed in the same write, the isolation
    times (C(node-recovery.ai-infra.io/isolations)) stay. The state becomes C(returned), an Event (C(NodeRecoveryReturned)) is
    written on the node, and the node's repair ticket is reported closed in RV(nodes[].ticket).
  - A node that is not ready to return is left unchanged; RV(returned) is false and RV(nodes[].reasons) says why, with
    RV(nodes[].wait_seconds) when only the healthy delay is missing. So a playbook can retry with C(until).
  - With O(webhook_url), the return of a node whose ticket is still open (state C(repair-pending), C(in-repair) or
    C(repaired)) POSTs the ticket's C(closed) update (C({update, text})) with the header C(Idempotency-Key) before the
    node is written, so a ticketing system can close the ticket. A refused delivery returns nothing (the node fails,
    the others go on); a rerun sends the same key again, so a receiver de-duplicates it. Check mode sends nothing.
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
  healthy_delay:
    description:
      - Seconds every catalogued condition must have been healthy before the node returns.
    type: int
    default: 300
  run_id:
    description:
      - Id of the remediation run, recorded on the node.
    type: str
  webhook_url:
    description:
      - URL the C(closed) update of a returned node's open ticket is POSTed to as JSON.
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
  - "RBAC: C(get) and C(patch) on C(nodes), C(create) on C(events) in namespace C(default)."
seealso:
  - module: ai_infra.node_recovery.node_isolate
  - module: ai_infra.node_recovery.node_repair
"""

EXAMPLES = r"""
- name: Return the node once it has been healthy for 5 minutes (waiting only while the delay is all that is left)
  ai_infra.node_recovery.node_return:
    name: npu-a-0003
  register: back
  until: back.returned or back.nodes[0].wait_seconds | default(none) is none
  retries: 30
  delay: 20

- name: Say why it is not back
  ansible.builtin.debug:
    msg: "{{ back.nodes[0].reasons }}"
  when: not back.returned

- name: Return every repaired node of a pool that is proven healthy, all at once
  ai_infra.node_recovery.node_return:
    name: "{{ groups['pool_npu_a'] | intersect(groups['state_repaired']) }}"
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
    returned:
      description: Whether the node is back in service (also true when it already was; false in check mode, where
        RV(nodes[].changed) says whether it would return).
      returned: always
      type: bool
    reasons:
      description: Why the node is not returned, one sentence each, for example C(NT_NPU_NET is Unknown, not healthy).
      returned: always
      type: list
      elements: str
    wait_seconds:
      description: When only the healthy delay is missing, how many seconds remain; otherwise null.
      returned: always
      type: int
    ticket:
      description: The node's repair ticket, closed by the return, with id, ref, state and closed_at; null without a ticket.
      returned: always
      type: dict
      sample: {id: NR-20261129T120000Z-npu-a-0003, ref: INC-20419, state: closed, closed_at: "2026-11-30T08:00:00Z"}
    update:
      description:
        - The ticket's C(closed) update (ticket, transition, idempotency_key, at, by, node, state, ticket_ref, note,
          run_id, previous_ticket), sent with O(webhook_url) or, in check mode, that would be; null when the node does
          not return now or its ticket is not open.
      returned: when the node returns (or would, in check mode)
      type: dict
    delivered:
      description: Where the update went, webhook (endpoint, HTTP status, attempts, idempotency_key); empty without one.
      returned: when the node returns (or would, in check mode)
      type: dict
    state:
      description: The node's recovery state afterwards.
      returned: always
      type: str
    health:
      description: "V(healthy), V(suspect) or V(faulty), from the classification."
      returned: always
      type: str
    cordon_owner:
      description: "Who holds the cordon afterwards: V(none), V(node_recovery) or V(person)."
      returned: always
      type: str
    message:
      description: One sentence on the outcome.
      returned: always
      type: str
returned:
  description: Whether every node given is returned to service (or already was); false in check mode.
  returned: always
  type: bool
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
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import CLASSIFY_ARG_SPEC
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._return import return_nodes
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import ModuleSpec, run_module
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._webhook import (
    WEBHOOK_ARG_SPEC,
    WEBHOOK_RANGES,
    url_problem,
)

SPEC = ModuleSpec(
    argument_spec=dict(
        **BATCH_ARGUMENT_SPEC,
        healthy_delay={"type": "int", "default": 300},
        run_id={"type": "str"},
        **WEBHOOK_ARG_SPEC,
        **CLASSIFY_ARG_SPEC,
    ),
    run=return_nodes,
    ranges={**BATCH_RANGES, **WEBHOOK_RANGES, "healthy_delay": (0, None)},
    check=lambda params: url_problem("webhook_url", params["webhook_url"]),
)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
