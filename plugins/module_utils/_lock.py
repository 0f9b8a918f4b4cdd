# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

A coordination.k8s.io/v1 Lease as a remediation lock, so two runs (two AWX jobs, a
schedule and an event-driven trigger) never remediate at once. Every write is guarded:
creation fails with 409 if someone created it first, updates carry the resourceVersion
read, so of two racing runs exactly one wins and the other reads who did.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import parse_time
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client, KubernetesError, object_path
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._errors import NodeRecoveryError

LEASES = "/apis/coordination.k8s.io/v1/leases"
RESOURCE = "leases.coordination.k8s.io"
DEFAULT_NAMESPACE = "default"
DEFAULT_NAME = "node-recovery"
DEFAULT_DURATION = 3600
RACE_ATTEMPTS = 5


class LockHeld(NodeRecoveryError):
    """Someone else holds the lock; str() is one sentence naming them."""

    def __init__(self, message: str, lease: dict) -> None:
        super().__init__(message, lock=lease)
        self.lease = lease


def micro_time(when: dt.datetime) -> str:
    """metav1.MicroTime, as the API server writes it."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def describe(lease: dict | None, now: dt.datetime) -> dict:
    """The lock as the module returns it (pure)."""
    if not lease:
        return {"exists": False, "holder": None, "held": False, "expires_at": None}
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity") or None
    renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
    duration = spec.get("leaseDurationSeconds")
    expires = renewed + dt.timedelta(seconds=duration) if renewed and duration else None
    return {
        "exists": True,
        "namespace": lease["metadata"].get("namespace"),
        "name": lease["metadata"]["name"],
        "holder": holder,
        "held": bool(holder) and expires is not None and expires > now,
        "acquired_at": spec.get("acquireTime"),
        "renewed_at": spec.get("renewTime"),
        "duration": duration,
        "expires_at": micro_time(expires) if expires else None,
        "transitions": spec.get("leaseTransitions") or 0,
    }


def _holder_sentence(namespace: str, name: str, lock: dict) -> str:
    return (f"the remediation lock (Lease {namespace}/{name}) is held by '{lock['holder']}' until "
            f"{lock['expires_at']} (acquired {lock['acquired_at']})")


def _lease_body(namespace: str, name: str, holder: str, duration: int, now: dt.datetime, previous: dict | None,
                run_id: str | None) -> dict:
    spec_before = (previous or {}).get("spec") or {}
    same_holder = spec_before.get("holderIdentity") == holder
    transitions = int(spec_before.get("leaseTransitions") or 0) + (0 if same_holder or not previous else 1)
    metadata: dict[str, Any] = dict((previous or {}).get("metadata") or {"name": name, "namespace": namespace})
    metadata.setdefault("labels", {})
    metadata["labels"] = {**(metadata.get("labels") or {}), "app.kubernetes.io/managed-by": v.COLLECTION}
    if run_id:
        metadata["annotations"] = {**(metadata.get("annotations") or {}), v.RUN_ID: run_id}
    return {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata,
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": int(duration),
                 "acquireTime": spec_before.get("acquireTime") if same_holder and spec_before.get("acquireTime")
                 else micro_time(now),
                 "renewTime": micro_time(now), "leaseTransitions": transitions},
    }


def _read(client: Client, namespace: str, name: str) -> dict | None:
    return client.get_or_none(object_path(LEASES, name, namespace), what=f"reading Lease {namespace}/{name}",
                              verb="get", resource=RESOURCE)


def _write(client: Client, namespace: str, name: str, body: dict, create: bool) -> dict | None:
    """Create or update (guarded by resourceVersion); None when someone else wrote first."""
    try:
        if create:
            return client.request("POST", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases", body=body,
                                  what=f"creating Lease {namespace}/{name}", verb="create", resource=RESOURCE)
        return client.request("PUT", object_path(LEASES, name, namespace), body=body,
                              what=f"updating Lease {namespace}/{name}", verb="update", resource=RESOURCE)
    except KubernetesError as err:
        if err.status == 409:
            return None
        raise


def _result(changed: bool, lease: dict | None, before: dict | None, now: dt.datetime, message: str) -> dict:
    return {"changed": changed, "lock": describe(lease, now), "message": message,
            "diff": {"before": describe(before, now), "after": describe(lease, now)}}


def acquire(client: Client, namespace: str, name: str, holder: str, duration: int, run_id: str | None = None,
            check_mode: bool = False) -> dict:
    """Take the lock for `holder`, or raise LockHeld naming the current holder. Held by us already:
    renewed (changed false). Expired or released: taken over."""
    if not holder:
        raise ValueError("holder must not be empty")
    for _attempt in range(RACE_ATTEMPTS):
        now = _now()
        lease = _read(client, namespace, name)
        lock = describe(lease, now)
        if lock["held"] and lock["holder"] != holder:
            raise LockHeld(_holder_sentence(namespace, name, lock), lock)
        ours = lock["held"] and lock["holder"] == holder
        body = _lease_body(namespace, name, holder, duration, now, lease, run_id)
        if check_mode:
            after = {**body, "metadata": {**body["metadata"], "namespace": namespace}}
            return _result(not ours, after, lease, now, f"check mode: '{holder}' would "
                           + ("renew" if ours else "take") + f" the remediation lock {namespace}/{name}")
        written = _write(client, namespace, name, body, create=lease is None)
        if written is None:
            continue  # someone else wrote first: read again and judge
        if ours:
            return _result(False, written, lease, now, f"'{holder}' already holds the remediation lock "
                           f"{namespace}/{name}; renewed until {describe(written, now)['expires_at']}")
        taken = " (taken over from expired holder '" + lock["holder"] + "')" if lock["holder"] else ""
        return _result(True, written, lease, now, f"'{holder}' acquired the remediation lock {namespace}/{name}"
                       f"{taken} until {describe(written, now)['expires_at']}")
    raise KubernetesError(f"acquiring Lease {namespace}/{name} failed: it kept changing under us "
                          f"(HTTP 409 conflict {RACE_ATTEMPTS} times)", status=409)


def renew(client: Client, namespace: str, name: str, holder: str, duration: int | None = None,
          run_id: str | None = None, check_mode: bool = False) -> dict:
    """Extend our hold for a long run; raise LockHeld when we do not hold it (anymore)."""
    now = _now()
    lease = _read(client, namespace, name)
    lock = describe(lease, now)
    if not lock["held"] or lock["holder"] != holder:
        if lock["held"]:
            raise LockHeld(f"cannot renew: {_holder_sentence(namespace, name, lock)}", lock)
        raise LockHeld(f"cannot renew: '{holder}' does not hold the remediation lock {namespace}/{name} "
                       f"({'it expired at ' + lock['expires_at'] if lock['holder'] else 'nobody holds it'})", lock)
    body = _lease_body(namespace, name, holder, duration or lock["duration"], now, lease, run_id)
    if check_mode:
        return _result(True, body, lease, now, f"check mode: '{holder}' would renew the lock {namespace}/{name}")
    written = _write(client, namespace, name, body, create=False)
    if written is None:
        raise LockHeld(f"cannot renew the remediation lock {namespace}/{name}: it changed under us; "
                       "someone else may have taken it", lock)
    return _result(True, written, lease, now, f"'{holder}' renewed the remediation lock {namespace}/{name} until "
                   f"{describe(written, now)['expires_at']}")


def release(client: Client, namespace: str, name: str, holder: str, run_id: str | None = None,
            check_mode: bool = False) -> dict:
    """Give the lock back, only if `holder` holds it (the Lease stays, with no holder, as a record)."""
    now = _now()
    lease = _read(client, namespace, name)
    lock = describe(lease, now)
    if lock["holder"] != holder:
        who = f"'{lock['holder']}'" if lock["holder"] else "nobody"
        return _result(False, lease, lease, now, f"the remediation lock {namespace}/{name} is held by {who}, "
                       f"not '{holder}'; left as it is")
    body = dict(lease)
    body["spec"] = {**lease["spec"], "holderIdentity": None, "renewTime": micro_time(now)}
    if run_id:
        annotations = {**(lease["metadata"].get("annotations") or {}), v.RUN_ID: run_id}
        body["metadata"] = {**lease["metadata"], "annotations": annotations}
    if check_mode:
        return _result(True, body, lease, now, f"check mode: '{holder}' would release the lock {namespace}/{name}")
    written = _write(client, namespace, name, body, create=False)
    if written is None:
        raise KubernetesError(f"releasing Lease {namespace}/{name} failed: it changed under us (HTTP 409 conflict)",
                              status=409)
    return _result(True, written, lease, now, f"'{holder}' released the remediation lock {namespace}/{name}")
