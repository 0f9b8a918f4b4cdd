#!/usr/bin/python
# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: node_power
short_description: Power-cycle a Kubernetes node through its BMC (Redfish) and wait until it is Ready again
version_added: 0.2.0
description:
  - For a node whose kubelet cannot be reached (C(Ready) V(Unknown)), where a reboot over SSH is impossible, or for
    any node when asked. Sends the node's BMC a Redfish C(ComputerSystem.Reset) with the first of O(reset_types) that
    the system's C(ResetType@Redfish.AllowableValues) offers (all of them when it lists none). A system that is off
    gets V(On) (or V(ForceOn)) instead.
  - 'The BMC is O(bmc_address) (and O(bmc_system_id)), else the node''s annotation C(node-recovery.ai-infra.io/bmc),
    a URL such as C(https://10.0.8.3/redfish/v1/Systems/1) (the system may be left out when the BMC has only one),
    or JSON C({"address": "10.0.8.3", "system": "1"}).'
  - Then waits up to O(ready_timeout) seconds until the kubelet reports the node C(Ready) again, with a new boot id
    (C(status.nodeInfo.bootID)) when the node reported one before the reset; without a boot id, C(Ready) again after
    the reset. A node that does not come back fails the task, with RV(power_cycled) true and RV(ready) false, so a
    play can hand it to repair (the reboot role of this collection does).
  - The reset is recorded on the node as a reboot is, an entry C(power_cycle) in its annotation
    C(node-recovery.ai-infra.io/actions) (updated with how the node came back) and an Event
    C(NodeRecoveryPowerCycle).
  - The credentials (O(bmc_user), O(bmc_password)) are sent to the BMC only, in HTTP basic authentication, and never
    appear in results, messages, annotations or Events.
  - In check mode the BMC is read (the system, its power state, the reset it offers) and nothing is reset nor
    written; the result says what would be done.
author:
  - ai_infra node_recovery maintainers (!UNKNOWN)
options:
  name:
    description: The Kubernetes node to power-cycle.
    type: str
    required: true
  bmc_address:
    description:
      - The node's BMC, as a host name, C(host:port) or URL (C(https://) when no scheme is given), optionally with
        the system's path C(/redfish/v1/Systems/<id>). Never with credentials in it.
      - Default the node's annotation C(node-recovery.ai-infra.io/bmc).
    type: str
  bmc_system_id:
    description:
      - The Redfish system's id under C(/redfish/v1/Systems/). Default the one the address or the annotation names,
        else the BMC's only system.
    type: str
  bmc_user:
    description:
      - The BMC user, for HTTP basic authentication. Default the environment variable C(NODE_RECOVERY_BMC_USER) of
        the task.
    type: str
  bmc_password:
    description:
      - The BMC user's password (from a vault or an AWX credential). Default the environment variable
        C(NODE_RECOVERY_BMC_PASSWORD) of the task. Never shown.
    type: str
  bmc_validate_certs:
    description: Whether the BMC's TLS certificate is verified.
    type: bool
    default: true
  bmc_ca_cert:
    description: A CA bundle to verify the BMC's certificate with.
    type: path
  bmc_timeout:
    description: Seconds each request to the BMC may take (1 to 600).
    type: int
    default: 30
  reset_types:
    description:
      - The Redfish reset types to use, the preferred first; the first the system offers is sent.
    type: list
    elements: str
    default: [PowerCycle, ForceRestart]
  only_if_unreachable:
    description:
      - Power-cycle the node only when its kubelet cannot be reached (C(Ready) V(Unknown), or the node lifecycle
        controller's C(node.kubernetes.io/unreachable) taint); otherwise change nothing and say why.
    type: bool
    default: false
  ready_timeout:
    description:
      - Seconds to wait after the reset for the node to be Ready again (V(0) does not wait).
    type: int
    default: 600
  poll_interval:
    description: Seconds between reads of the node while waiting (1 to 3600).
    type: int
    default: 5
  run_id:
    description:
      - The remediation run, recorded with the action. Default the run that isolated the node, else a new id.
    type: str
extends_documentation_fragment:
  - ai_infra.node_recovery.k8s_auth
  - ai_infra.node_recovery.step
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  diff_mode:
    support: none
notes:
  - "RBAC: C(get) and C(patch) on C(nodes), C(create) on C(events) in namespace C(default)."
  - The BMC's user needs the Redfish privilege C(ConfigureComponents) for the reset.
  - Redfish is reached with the Python standard library; no other library is needed.
seealso:
  - module: ai_infra.node_recovery.node_repair
  - name: Redfish ComputerSystem.Reset (DMTF DSP2046, the Redfish resource and schema guide)
    description: The reset action and its reset types.
    link: https://www.dmtf.org/dsp/DSP2046
"""

EXAMPLES = r"""
- name: Power-cycle a node whose kubelet is gone, through the BMC its annotation names
  ai_infra.node_recovery.node_power:
    name: npu-a-0003
    bmc_user: "{{ bmc_user }}"
    bmc_password: "{{ bmc_password }}"   # from a vault or an AWX credential
    only_if_unreachable: true
  delegate_to: localhost

- name: Power-cycle through a BMC given here, and wait 15 minutes for the node
  ai_infra.node_recovery.node_power:
    name: gpu-a-0007
    bmc_address: https://10.0.8.7
    bmc_system_id: System.Embedded.1
    reset_types: [ForceRestart]
    ready_timeout: 900
  environment:
    NODE_RECOVERY_BMC_USER: "{{ lookup('ansible.builtin.env', 'BMC_USER') }}"
    NODE_RECOVERY_BMC_PASSWORD: "{{ lookup('ansible.builtin.env', 'BMC_PASSWORD') }}"
  delegate_to: localhost
"""

RETURN = r"""
node:
  description: The node.
  returned: always
  type: str
  sample: npu-a-0003
ready_before:
  description: The node's C(Ready) status before anything was done (V(Unknown) when its kubelet is unreachable).
  returned: always
  type: str
  sample: Unknown
boot_id_before:
  description: The boot id the node reported before the reset, or null.
  returned: always
  type: str
power_cycled:
  description: Whether the reset was sent.
  returned: always
  type: bool
reset_type:
  description: The reset type sent (would be sent, in check mode), or null when nothing was to be done.
  returned: always
  type: str
  sample: ForceRestart
ready:
  description: Whether the node came back Ready after the reset (with a new boot id when it reports one); null when
    it was not waited for.
  returned: always
  type: bool
bmc:
  description: The BMC's base URL (never with credentials).
  returned: when a BMC was reached
  type: str
  sample: https://10.0.8.3
bmc_from:
  description: Where the BMC came from, V(bmc_address) or the node's annotation.
  returned: when a BMC was reached
  type: str
system:
  description: The Redfish system's id.
  returned: when a BMC was reached
  type: str
  sample: "1"
power_state_before:
  description: The system's C(PowerState) before the reset.
  returned: when a BMC was reached
  type: str
  sample: "On"
reset_at:
  description: When the reset was sent (RFC 3339).
  returned: when the reset was sent
  type: str
ready_after:
  description: The node's C(Ready) status when the wait ended.
  returned: when it was waited for
  type: str
boot_id_after:
  description: The node's boot id when the wait ended.
  returned: when it was waited for
  type: str
waited_seconds:
  description: How long the wait took.
  returned: when it was waited for
  type: float
run_id:
  description: The run recorded with the action.
  returned: when the reset was sent
  type: str
message:
  description: One sentence on what was done (or would be, in check mode).
  returned: success
  type: str
"""

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._power import (
    POWER_ARG_SPEC,
    POWER_RANGES,
    power_cycle_step,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import ModuleSpec, run_module

SPEC = ModuleSpec(argument_spec=POWER_ARG_SPEC, ranges=POWER_RANGES, run=power_cycle_step)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
