#!/usr/bin/python
# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: node_return
short_description: Return a repaired or recovered accelerator node to service once it is proven healthy
version_added: 0.1.0
description:
  - Returns the node only when all of these hold. It was isolated by this collection (our annotations or our taint).
    Every catalogued fault condition has been healthy, C(False) (C(True) for C(Ready)) and never C(Unknown), for at
    least O(healthy_delay) seconds since its C(lastTransitionTime). Its accelerator C(allocatable) count is back to the
    expected count. The repair team does not hold it (state C(in-repair)).
  - The judgement of faults is the same classification as P(ai_infra.node_recovery.node_faults_info#module), with the
    same catalog options; the return adds the healthy delay and refuses C(Unknown) whatever O(nt_unknown) says.
  - Then our taint and isolation annotations are removed and the node is uncordoned, but only if the cordon is ours.
    A node a person cordoned stays cordoned. The state becomes C(returned), an Event (C(NodeRecoveryReturned)) is
    written on the node, and the node's repair ticket is reported closed in RV(ticket).
  - A node that is not ready to return is left unchanged; RV(returned) is false and RV(reasons) says why, with
    RV(wait_seconds) when only the healthy delay is missing. So a playbook can retry with C(until).
author:
  - ai_infra node_recovery maintainers (!UNKNOWN)
options:
  name:
    description:
      - Name of the node.
    type: str
    required: true
  healthy_delay:
    description:
      - Seconds every catalogued condition must have been healthy before the node returns.
    type: int
    default: 300
  run_id:
    description:
      - Id of the remediation run, recorded on the node.
    type: str
extends_documentation_fragment:
  - ai_infra.node_recovery.k8s_auth
  - ai_infra.node_recovery.classification
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    support: full
    platforms: all
    details: Talks to the Kubernetes API from wherever it runs (usually the controller).
notes:
  - Requires the C(kubernetes) Python library on the host that runs the module (usually the controller).
seealso:
  - module: ai_infra.node_recovery.node_isolate
  - module: ai_infra.node_recovery.node_repair
"""

EXAMPLES = r"""
- name: Return the node once it has been healthy for 5 minutes
  ai_infra.node_recovery.node_return:
    name: npu-a-0003
  register: back
  until: back.returned or back.wait_seconds is none
  retries: 30
  delay: 20

- name: Say why it is not back
  ansible.builtin.debug:
    msg: "{{ back.reasons }}"
  when: not back.returned
"""

RETURN = r"""
returned:
  description: Whether the node is back in service (also true when it already was).
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
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import CatalogError
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import (
    AUTH_ARG_SPEC,
    HAS_KUBERNETES,
    KUBERNETES_IMPORT_ERROR,
    Client,
    KubernetesError,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import (
    CLASSIFY_ARG_SPEC,
    catalog_from,
    options_from,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._repair import return_to_service


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            name={"type": "str", "required": True},
            healthy_delay={"type": "int", "default": 300},
            run_id={"type": "str"},
            **AUTH_ARG_SPEC,
            **CLASSIFY_ARG_SPEC,
        ),
        supports_check_mode=True,
    )
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=str(KUBERNETES_IMPORT_ERROR))
    params = module.params
    if params["healthy_delay"] < 0:
        module.fail_json(msg=f"healthy_delay must be 0 or more seconds, not {params['healthy_delay']}")
    try:
        catalog, options = catalog_from(params), options_from(params)
        result = return_to_service(Client(params), params["name"], catalog, options, params["healthy_delay"],
                                   params["run_id"], module.check_mode)
    except (CatalogError, KubernetesError) as err:
        module.fail_json(msg=str(err))
    diff = result.pop("diff")
    if module._diff:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
