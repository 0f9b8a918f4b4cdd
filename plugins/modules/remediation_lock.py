#!/usr/bin/python
# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: remediation_lock
short_description: Take, keep alive, renew or give back a Lease so that two remediation runs never act at once
version_added: 0.1.0
description:
  - A C(coordination.k8s.io/v1) Lease used as a lock between remediation runs (two AWX jobs, a schedule and an
    event-driven trigger).
  - O(state=acquired) takes the lock for O(holder) for O(duration) seconds. A released lock is taken at once. A lock
    held by another run is watched for up to O(wait) seconds and taken over once its Lease has not changed for its
    duration; if it is still held then, the task fails with one sentence naming the holder, its run id and how long
    its Lease has gone unrenewed as seen from here. Acquiring a lock the holder already holds renews it and reports
    no change.
  - "Expiry is judged by observation, not by clocks (as Kubernetes leader election does): the waiting run notes when
    it first saw the Lease's current version by its own monotonic clock, and counts the hold as expired only once that
    version has stood for the lease's duration. The holder's C(renewTime) is never compared with the local clock, so
    the hosts' clocks need not agree."
  - With O(keep_alive) (the default), a short lease is kept alive for as long as the run lives. A process detached
    from the task renews it every O(duration)/3 seconds while the run's C(ansible-playbook) process is running,
    however long a drain or reboot takes. It stops when the run ends or is killed (SIGKILL, OOM, a lost AWX
    execution node), or when the Lease is no longer the holder's (released or taken over); the lease then expires
    O(duration) seconds after its last renewal.
  - O(state=renewed) extends the hold of a run that does not use O(keep_alive); it fails when O(holder) does not
    hold the lock (anymore), so a run that lost its lock stops instead of acting unguarded.
  - O(state=released) gives the lock back only if O(holder) holds it; otherwise nothing changes. A renewer of the
    holder notices at its next renewal and stops.
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
      - Seconds the hold lasts after it is acquired or renewed; a run that stopped renewing is taken over once its
        Lease has stood unchanged this long.
      - Defaults to 30 with O(state=acquired); with O(state=renewed) the lease's current duration is kept.
    type: int
  wait:
    description:
      - With O(state=acquired), how many seconds to wait for a lock held by another run before failing.
      - A hold counts as expired only after the waiting run has watched its Lease stand unchanged for the lease's
        duration, so a O(wait) shorter than the holder's duration cannot take over a lock whose run died; V(0)
        takes only a free or released lock.
    type: int
    default: 120
  keep_alive:
    description:
      - With O(state=acquired), keep the lease alive while the run's C(ansible-playbook) process lives, from a
        renewer process detached from the task (see RV(keep_alive_pid)).
      - Needs the task to run on the controller (C(delegate_to) localhost, without C(become) or C(async)); elsewhere
        set V(false) and renew the lock with O(state=renewed) more often than O(duration).
    type: bool
    default: true
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
  - ai_infra.node_recovery.step
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  diff_mode:
    support: full
notes:
  - "RBAC: C(get), C(create) and C(update) on C(leases.coordination.k8s.io) in O(namespace)."
  - Check mode takes nothing and starts no renewer; it reports whether the lock would be taken (waiting as a real run
    would for a lock held by another run).
"""

EXAMPLES = r"""
- name: Take the remediation lock for this AWX job and keep it while the job runs (waits up to 2 minutes)
  ai_infra.node_recovery.remediation_lock:
    holder: "awx-job-{{ awx_job_id | default('manual') }}"
    run_id: "{{ node_recovery_run_id }}"
  delegate_to: localhost
  run_once: true

- name: Where the task cannot run on the controller, renew by hand more often than the duration
  ai_infra.node_recovery.remediation_lock:
    holder: "awx-job-{{ awx_job_id | default('manual') }}"
    keep_alive: false
    duration: 900

- name: Renew it before a long drain (without keep_alive)
  ai_infra.node_recovery.remediation_lock:
    state: renewed
    holder: "awx-job-{{ awx_job_id | default('manual') }}"

- name: Give it back
  ai_infra.node_recovery.remediation_lock:
    state: released
    holder: "awx-job-{{ awx_job_id | default('manual') }}"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
lock:
  description: The lock after the task (as it would be, in check mode).
  returned: always
  type: dict
  contains:
    exists: {description: Whether the Lease exists., type: bool, returned: always}
    holder: {description: Current holder (null when free)., type: str, returned: always}
    held:
      description: Whether a holder is named. Whether that hold is still alive is judged only by watching the Lease.
      type: bool
      returned: always
    expires_at:
      description: Last renewal plus duration, by the holder's clock (RFC 3339). Information only, never the judgement.
      type: str
      returned: always
    run_id: {description: The holder's run id annotation., type: str, returned: when exists}
    acquired_at: {description: When the holder took it., type: str, returned: when exists}
    renewed_at: {description: Last renewal., type: str, returned: when exists}
    duration: {description: Hold duration in seconds., type: int, returned: when exists}
    transitions: {description: How many times the lock changed hands., type: int, returned: when exists}
    unrenewed_seconds:
      description: Seconds the Lease had gone unchanged as seen by this task, when it failed on a lock held by another.
      type: float
      returned: on failure to acquire
  sample: {exists: true, namespace: default, name: node-recovery, holder: awx-job-4242, held: true, run_id: 20261129T1200Z,
           acquired_at: "2026-11-29T12:00:00.000000Z", renewed_at: "2026-11-29T12:00:20.000000Z", duration: 30,
           expires_at: "2026-11-29T12:00:50.000000Z", transitions: 3}
waited_seconds:
  description: How long the task waited for another run's lock before taking it (a plan made before that wait is
    out of date).
  returned: with O(state=acquired), when taken
  type: float
  sample: 0.0
keep_alive_pid:
  description: Process id of the renewer that keeps the lease alive while the run lives.
  returned: with O(state=acquired) and O(keep_alive), not in check mode
  type: int
  sample: 41234
message:
  description: One sentence saying what happened.
  returned: always
  type: str
"""

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._lock import (
    DEFAULT_NAME,
    DEFAULT_NAMESPACE,
    DEFAULT_WAIT,
    remediation_lock,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import ModuleSpec, run_module

SPEC = ModuleSpec(
    argument_spec=dict(
        state={"type": "str", "choices": ["acquired", "renewed", "released"], "default": "acquired"},
        holder={"type": "str", "required": True},
        duration={"type": "int"},
        wait={"type": "int", "default": DEFAULT_WAIT},
        keep_alive={"type": "bool", "default": True},
        namespace={"type": "str", "default": DEFAULT_NAMESPACE},
        name={"type": "str", "default": DEFAULT_NAME},
        run_id={"type": "str"},
    ),
    run=remediation_lock,
    ranges={"duration": (1, None), "wait": (0, None)},
)


def main() -> None:
    run_module(SPEC)


if __name__ == "__main__":
    main()
