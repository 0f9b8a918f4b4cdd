#!/usr/bin/python
# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: device_taint
short_description: Isolate one DRA device with a DeviceTaintRule of this collection, or return it
version_added: 0.1.0
description:
  - "For clusters whose accelerators are published through Kubernetes dynamic resource allocation (DRA): a device is
    named by its driver, its pool (a node-local driver names the pool after the node) and its name in the pool's
    ResourceSlice (for example V(npu-3))."
  - O(state=present) isolates the device with a C(DeviceTaintRule) (C(resource.k8s.io/v1beta2), beta in Kubernetes
    1.36) whose selector names exactly that device and whose taint is C(node-recovery.ai-infra.io/faulty=<reason>)
    with O(effect). The rule is labelled and annotated as this collection's, with the reason, the time and the run
    id. The rest of the node stays in service.
  - With V(NoExecute), the device-taint eviction controller of kube-controller-manager deletes the pods whose
    ResourceClaims hold the device and do not tolerate the taint; their controllers create them again and the
    scheduler allocates other devices. V(NoSchedule) keeps the device from new allocations and leaves its pods
    running. V(None) changes nothing for pods; the eviction controller writes in the rule's status how many pods
    V(NoExecute) would evict.
  - The result names the pods whose ResourceClaims hold the device (from C(status.allocation.devices.results) and
    C(status.reservedFor)), and whether each tolerates the taint.
  - O(state=absent) removes the rule of this collection for the device. A rule of the same name made by anyone else
    is never changed nor removed; the task fails and says so. Rules others made for the same device are reported
    in RV(other_rules) and left alone.
  - Idempotent, one rule per device; a second run reports no change. A rule of ours with another effect is changed
    to O(effect) in place.
  - In check mode nothing is created or removed. The write is sent to the API server as a server-side dry run,
    so validation and RBAC answer as they would, and the result says what would change.
  - Every change records a Kubernetes Event on the device's node.
author:
  - ai_infra node_recovery maintainers (!UNKNOWN)
options:
  driver:
    description: The DRA driver that publishes the device (C(spec.driver) of its ResourceSlice).
    type: str
    required: true
  pool:
    description: The pool of the device (C(spec.pool.name) of its ResourceSlice; the node name for node-local drivers).
    type: str
    required: true
  device:
    description: The name of the device in its ResourceSlice.
    type: str
    required: true
  node:
    description:
      - The node the device must be on. When given, a device that is on another node (or on none) fails the task
        and nothing is written.
      - The Event goes on the node of the device's ResourceSlice either way.
    type: str
  state:
    description: V(present) to isolate the device, V(absent) to return it (remove our rule).
    type: str
    choices: [present, absent]
    default: present
  effect:
    description: The effect of the taint (O(state=present)).
    type: str
    choices: [NoExecute, NoSchedule, None]
    default: NoExecute
  reason:
    description:
      - Why the device is isolated (a fault type, for example), written to the rule's annotation and, as a label
        value, to the taint's value.
    type: str
  run_id:
    description:
      - Identifier of this remediation run, written to the rule's C(node-recovery.ai-infra.io/run-id) annotation.
      - Defaults to a new identifier (UTC time and a random suffix).
    type: str
extends_documentation_fragment:
  - ai_infra.node_recovery.k8s_auth
  - ai_infra.node_recovery.step
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  diff_mode:
    support: full
notes:
  - "Needs a cluster that serves C(DeviceTaintRule): in Kubernetes 1.36 the API server with
    C(--runtime-config=resource.k8s.io/v1beta2/devicetaintrules=true) and C(--feature-gates=DRADeviceTaintRules=true),
    and the same feature gate on kube-scheduler and kube-controller-manager."
  - "RBAC: C(get), C(create), C(patch), C(delete) and C(list) on C(devicetaintrules.resource.k8s.io), C(list) on
    C(resourceslices.resource.k8s.io) and C(resourceclaims.resource.k8s.io), C(get) on C(nodes), C(create) on
    C(events) in namespace C(default)."
seealso:
  - module: ai_infra.node_recovery.node_isolate
"""

EXAMPLES = r"""
- name: Isolate card npu-3 of npu-a-0003; the pods that use it are evicted, the node stays in service
  ai_infra.node_recovery.device_taint:
    driver: npu.dra.ai-infra.io
    pool: npu-a-0003
    device: npu-3
    node: npu-a-0003
    reason: NT_NPU_CARD_LOSE
    run_id: "{{ run_id }}"

- name: Ask the eviction controller what NoExecute would do, without evicting anything
  ai_infra.node_recovery.device_taint:
    driver: npu.dra.ai-infra.io
    pool: npu-a-0003
    device: npu-3
    effect: "None"

- name: Return the card once it is repaired
  ai_infra.node_recovery.device_taint:
    driver: npu.dra.ai-infra.io
    pool: npu-a-0003
    device: npu-3
    state: absent
"""

RETURN = r"""
device:
  description: The device acted on, and its node (null for a device that is not local to one node).
  returned: always
  type: dict
  sample: {driver: npu.dra.ai-infra.io, pool: npu-a-0003, device: npu-3, node: npu-a-0003}
rule:
  description:
    - Our rule as it is after the task (as it would be, in check mode), or null when there is none.
    - C(eviction) is the eviction controller's C(EvictionInProgress) condition, once it has written one.
  returned: always
  type: dict
  sample:
    name: node-recovery-npu-a-0003-npu-3-1f2e3d4c5b
    ours: true
    device: {driver: npu.dra.ai-infra.io, pool: npu-a-0003, device: npu-3}
    taint: {key: node-recovery.ai-infra.io/faulty, value: NT_NPU_CARD_LOSE, effect: NoExecute}
    since: "2026-11-29T12:00:00Z"
    run_id: 20261129T120000Z-3fa2c1
    reason: NT_NPU_CARD_LOSE
pods:
  description:
    - The pods whose ResourceClaims hold the device (O(state=present)).
    - C(tolerates) is true when the claim tolerates the taint for good; with V(NoExecute) the others are evicted.
  returned: with O(state=present)
  type: list
  elements: dict
  sample: [{namespace: ml, name: train-0, uid: 7d0c..., claim: train-0-npu-x7k2p, request: npu, tolerates: false}]
driver_taints:
  description: The taints the device's own driver puts on it in its ResourceSlice (its word that it is faulty).
  returned: when the device is published
  type: list
  elements: dict
  sample: [{key: npu.dra.ai-infra.io/unhealthy, value: ECC, effect: NoExecute, timeAdded: "2026-11-29T11:58:00Z"}]
other_rules:
  description: Names of DeviceTaintRules made by others that select the device too (never changed).
  returned: with O(state=present)
  type: list
  elements: str
run_id:
  description: The run id written to the rule.
  returned: when the rule was written (or would be, in check mode)
  type: str
message:
  description: One sentence on what was done (or would be, in check mode).
  returned: always
  type: str
diff:
  description: Our rule before and after, each as in RV(rule).
  returned: in diff mode
  type: dict
"""

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._device_taint import device_taint_step
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._dra import EFFECTS
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import ModuleSpec, run_module

SPEC = ModuleSpec(
    argument_spec=dict(
        driver={"type": "str", "required": True},
        pool={"type": "str", "required": True},
        device={"type": "str", "required": True},
        node={"type": "str"},
        state={"type": "str", "choices": ["present", "absent"], "default": "present"},
        effect={"type": "str", "choices": list(EFFECTS), "default": "NoExecute"},
        reason={"type": "str"},
        run_id={"type": "str"},
    ),
    run=device_taint_step,
)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
