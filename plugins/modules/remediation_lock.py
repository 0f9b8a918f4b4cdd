#!/usr/bin/python
# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: remediation_lock
short_description: Take, renew or give back a Lease so that two remediation runs never act at once
version_added: 0.1.0
description:
  - A C(coordination.k8s.io/v1) Lease used as a lock between remediation runs (two AWX jobs, a schedule and an
    event-driven trigger).
  - O(state=acquired) takes the lock for O(holder) for O(duration) seconds, or fails with a sentence naming the
    current holder and when its hold expires. A lease that expired (or was released) is taken over. Acquiring a lock
    the holder already holds renews it and reports no change.
  - O(state=renewed) extends the hold of a long run; it fails when O(holder) does not hold the lock (anymore), so a run
    that lost its lock stops instead of acting unguarded.
  - O(state=released) gives the lock back only if O(holder) holds it; otherwise nothing changes.
  - Every write is guarded (creation fails if someone created the Lease first, updates carry the resourceVersion read),
    so of two runs racing for a free lock exactly one wins.
author:
  - ai_infra node_recovery maintainers (!UNKNOWN)
options:
  state:
    description:
      - V(acquired), V(renewed) or V(released).
    type: str
    choices: [acquired, renewed, released]
    default: acquired
  holder:
    description:
      - Identity of the run holding the lock, the same in every task of the run (for example the AWX job id).
    type: str
    required: true
  duration:
    description:
      - Seconds the hold lasts after it is acquired or renewed.
      - Defaults to 3600 with O(state=acquired); with O(state=renewed) the lease's current duration is kept.
    type: int
  namespace:
    description:
      - Namespace of the Lease.
    type: str
    default: default
  name:
    description:
      - Name of the Lease. Runs that must exclude each other use the same name.
    type: str
    default: node-recovery
  run_id:
    description:
      - Identifier of this remediation run, written to the Lease's C(node-recovery.ai-infra.io/run-id) annotation.
    type: str
extends_documentation_fragment:
  - ai_infra.node_recovery.k8s_auth
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: all
notes:
  - Requires the C(kubernetes) Python library on the host that runs the module (usually the controller).
  - "RBAC: C(get), C(create) and C(update) on C(leases.coordination.k8s.io) in O(namespace)."
  - Expiry is judged with the clock of the host running the module against the lease's renew time; keep clocks in sync.
"""

EXAMPLES = r"""
- name: Take the remediation lock for this AWX job (fails if another run holds it)
  ai_infra.node_recovery.remediation_lock:
    holder: "awx-job-{{ awx_job_id | default('manual') }}"
    duration: 1800

- name: Renew it before a long drain
  ai_infra.node_recovery.remediation_lock:
    state: renewed
    holder: "awx-job-{{ awx_job_id | default('manual') }}"

- name: Give it back
  ai_infra.node_recovery.remediation_lock:
    state: released
    holder: "awx-job-{{ awx_job_id | default('manual') }}"
"""

RETURN = r"""
lock:
  description: The lock after the task (as it would be, in check mode).
  returned: always
  type: dict
  contains:
    exists: {description: Whether the Lease exists., type: bool, returned: always}
    holder: {description: Current holder (null when free)., type: str, returned: always}
    held: {description: Whether a holder holds it now (not expired)., type: bool, returned: always}
    expires_at: {description: When the current hold expires (RFC 3339)., type: str, returned: always}
    acquired_at: {description: When the holder took it., type: str, returned: when exists}
    renewed_at: {description: Last renewal., type: str, returned: when exists}
    duration: {description: Hold duration in seconds., type: int, returned: when exists}
    transitions: {description: How many times the lock changed hands., type: int, returned: when exists}
  sample: {exists: true, namespace: default, name: node-recovery, holder: awx-job-4242, held: true,
           acquired_at: "2026-11-29T12:00:00.000000Z", renewed_at: "2026-11-29T12:00:00.000000Z", duration: 3600,
           expires_at: "2026-11-29T13:00:00.000000Z", transitions: 3}
message:
  description: One sentence saying what happened.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import (
    AUTH_ARG_SPEC,
    HAS_KUBERNETES,
    KUBERNETES_IMPORT_ERROR,
    Client,
    KubernetesError,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._lock import (
    DEFAULT_DURATION,
    LockHeld,
    acquire,
    release,
    renew,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            state={"type": "str", "choices": ["acquired", "renewed", "released"], "default": "acquired"},
            holder={"type": "str", "required": True},
            duration={"type": "int"},
            namespace={"type": "str", "default": "default"},
            name={"type": "str", "default": "node-recovery"},
            run_id={"type": "str"},
            **AUTH_ARG_SPEC,
        ),
        supports_check_mode=True,
    )
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=str(KUBERNETES_IMPORT_ERROR))
    params = module.params
    if not params["holder"].strip():
        module.fail_json(msg="holder must not be empty")
    if params["duration"] is not None and params["duration"] < 1:
        module.fail_json(msg=f"duration must be at least 1 second, not {params['duration']}")
    where = {"client": None, "namespace": params["namespace"], "name": params["name"],
             "holder": params["holder"], "run_id": params["run_id"], "check_mode": module.check_mode}
    try:
        where["client"] = Client(params)
        if params["state"] == "acquired":
            outcome = acquire(duration=params["duration"] or DEFAULT_DURATION, **where)
        elif params["state"] == "renewed":
            outcome = renew(duration=params["duration"], **where)
        else:
            outcome = release(**where)
    except LockHeld as err:
        module.fail_json(msg=str(err), lock=err.lease)
    except KubernetesError as err:
        module.fail_json(msg=str(err))
    result = {"changed": outcome["changed"], "lock": outcome["lock"], "message": outcome["message"]}
    if module._diff:
        result["diff"] = outcome["diff"]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
