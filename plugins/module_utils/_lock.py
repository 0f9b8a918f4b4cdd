# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

A coordination.k8s.io/v1 Lease as the remediation lock, so two runs (two AWX jobs, a
schedule and an event-driven trigger) never remediate at once.

- Short and kept alive: the holder's lease lasts `duration` seconds (30 by default) and a
  detached renewer process renews it every duration/3 for as long as the run's controller
  (ansible-playbook) lives, however long a drain or a reboot takes. A run killed by SIGKILL,
  an OOM or a lost execution node stops renewing.
- Expiry by observation, not clocks (as client-go leader election judges it): an acquirer
  that finds the Lease held by another run watches it and counts the hold as expired only
  once the Lease has not changed for leaseDurationSeconds of its own monotonic clock. The
  renewTime written by another host is never compared with the local wall clock.
- Guarded writes: creation fails with 409 if someone created it first, updates carry the
  resourceVersion read, so of two racing runs exactly one wins and the other reads who did.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import parse_time
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import (
    Client,
    KubernetesError,
    forget_certificate_files,
    object_path,
    remove_certificate_files,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._errors import NodeRecoveryError
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import Call

LEASES = "/apis/coordination.k8s.io/v1/leases"
RESOURCE = "leases.coordination.k8s.io"
DEFAULT_NAMESPACE = "default"
DEFAULT_NAME = "node-recovery"
DEFAULT_DURATION = 30
DEFAULT_WAIT = 120
POLL_SECONDS = 1.0
RACE_ATTEMPTS = 5  # conflicts in a row before giving up on one call

Clock = Callable[[], float]
Sleep = Callable[[float], None]


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


def _spec(lease: dict | None) -> dict:
    return (lease or {}).get("spec") or {}


def holder_of(lease: dict | None) -> str | None:
    return _spec(lease).get("holderIdentity") or None


def duration_of(lease: dict | None) -> int:
    return int(_spec(lease).get("leaseDurationSeconds") or DEFAULT_DURATION)


def describe(lease: dict | None) -> dict:
    """The lock as the module returns it (pure). `held` means a holder is named; whether that hold
    is still alive is judged only by watching the Lease (LeaseObserver). `expires_at` is renewTime
    plus duration by the holder's clock: information, never the judgement."""
    if not lease:
        return {"exists": False, "holder": None, "held": False, "expires_at": None}
    spec = _spec(lease)
    holder = holder_of(lease)
    renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
    duration = spec.get("leaseDurationSeconds")
    expires = renewed + dt.timedelta(seconds=duration) if renewed and duration else None
    return {
        "exists": True,
        "namespace": lease["metadata"].get("namespace"),
        "name": lease["metadata"]["name"],
        "holder": holder,
        "held": bool(holder),
        "run_id": (lease["metadata"].get("annotations") or {}).get(v.RUN_ID),
        "acquired_at": spec.get("acquireTime"),
        "renewed_at": spec.get("renewTime"),
        "duration": duration,
        "expires_at": micro_time(expires) if expires else None,
        "transitions": spec.get("leaseTransitions") or 0,
    }


def _fingerprint(lease: dict) -> tuple:
    """Any write changes the resourceVersion; holder and renewTime too, for readers without one."""
    spec = _spec(lease)
    return ((lease.get("metadata") or {}).get("resourceVersion"), spec.get("holderIdentity"), spec.get("renewTime"))


class LeaseObserver:
    """What an acquirer has seen of a Lease held by another run: the version it last saw and the
    local monotonic time it first saw it. The hold counts as expired once that version has stood
    unchanged for the lease's duration, by this clock alone."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.fingerprint: tuple | None = None
        self.seen_at = 0.0
        self.renewals_seen = 0

    def observe(self, lease: dict) -> None:
        fingerprint = _fingerprint(lease)
        if fingerprint != self.fingerprint:
            self.renewals_seen += self.fingerprint is not None
            self.fingerprint, self.seen_at = fingerprint, self.clock()

    def unchanged_for(self) -> float:
        return self.clock() - self.seen_at

    def expired(self, lease: dict) -> bool:
        self.observe(lease)
        return self.unchanged_for() >= duration_of(lease)


FREE, OURS, HELD, EXPIRED = "free", "ours", "held", "expired"


def judge(lease: dict | None, holder: str, observer: LeaseObserver) -> str:
    """FREE (no Lease or no holder), OURS, EXPIRED (unchanged for its duration as observed) or HELD."""
    current = holder_of(lease)
    if not current:
        return FREE
    if current == holder:
        return OURS
    return EXPIRED if observer.expired(lease) else HELD


def poll_interval(lease: dict | None) -> float:
    return min(POLL_SECONDS, duration_of(lease) / 4)


def _held_sentence(namespace: str, name: str, lease: dict, observer: LeaseObserver | None, wait: float) -> str:
    lock = describe(lease)
    run = f"run id '{lock['run_id']}'" if lock["run_id"] else "no run id"
    duration = duration_of(lease)
    sentence = (f"the remediation lock (Lease {namespace}/{name}) is held by '{lock['holder']}' ({run}) after "
                f"waiting {wait:g} s: its Lease has gone unrenewed for "
                f"{observer.unchanged_for() if observer else 0.0:.1f} s as seen from here, and it counts as expired "
                f"only after {duration} s without renewal")
    if wait < duration:
        sentence += (f"; a wait shorter than the lease duration ({duration} s) cannot outlast a holder that "
                     "stopped renewing")
    return sentence


def _lease_body(namespace: str, name: str, holder: str, duration: int, now: dt.datetime, previous: dict | None,
                run_id: str | None) -> dict:
    spec_before = _spec(previous)
    same_holder = spec_before.get("holderIdentity") == holder
    transitions = int(spec_before.get("leaseTransitions") or 0) + (0 if same_holder or not previous else 1)
    metadata: dict[str, Any] = dict((previous or {}).get("metadata") or {"name": name, "namespace": namespace})
    metadata["labels"] = {**(metadata.get("labels") or {}), "app.kubernetes.io/managed-by": v.COLLECTION}
    annotations = dict(metadata.get("annotations") or {})
    if run_id:
        annotations[v.RUN_ID] = run_id
    elif not same_holder:
        annotations.pop(v.RUN_ID, None)  # the previous holder's run is not this one
    metadata["annotations"] = annotations
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


def _conflicted(namespace: str, name: str, doing: str) -> KubernetesError:
    return KubernetesError(f"{doing} Lease {namespace}/{name} failed: it kept changing under us "
                           f"(HTTP 409 conflict {RACE_ATTEMPTS} times)", status=409)


def _result(changed: bool, lease: dict | None, before: dict | None, message: str) -> dict:
    return {"changed": changed, "lock": describe(lease), "message": message,
            "diff": {"before": describe(before), "after": describe(lease)}}


def acquire(client: Client, namespace: str, name: str, holder: str, duration: int = DEFAULT_DURATION,
            run_id: str | None = None, check_mode: bool = False, wait: float = DEFAULT_WAIT,
            clock: Clock = time.monotonic, sleep: Sleep = time.sleep) -> dict:
    """Take the lock for `holder` for `duration` seconds. Held by us already: renewed (changed false).
    Released: taken at once. Held by another run: watched for up to `wait` seconds and taken over once
    it has stood unchanged for its duration; still held then: LockHeld naming the holder."""
    if not holder:
        raise NodeRecoveryError("holder must not be empty")
    observer = LeaseObserver(clock)
    started = clock()
    deadline = started + wait
    conflicts = 0
    while True:
        lease = _read(client, namespace, name)
        verdict = judge(lease, holder, observer)
        if verdict == HELD:
            left = deadline - clock()
            if left <= 0:
                raise LockHeld(_held_sentence(namespace, name, lease, observer, wait),
                               {**describe(lease), "unrenewed_seconds": round(observer.unchanged_for(), 1)})
            sleep(min(poll_interval(lease), left))
            continue
        now = _now()
        body = _lease_body(namespace, name, holder, duration, now, lease, run_id)
        if verdict == OURS:
            doing, message = "renew", f"'{holder}' already holds the remediation lock {namespace}/{name}; renewed"
        elif verdict == EXPIRED:
            doing = "take over"
            message = (f"'{holder}' took over the remediation lock {namespace}/{name} from '{holder_of(lease)}', "
                       f"whose Lease had not changed for {observer.unchanged_for():.1f} s as seen from here")
        else:
            doing, message = "take", f"'{holder}' acquired the remediation lock {namespace}/{name}"
        # How long it waited: a plan made before a wait is out of date once the lock is ours.
        waited = {"waited_seconds": round(clock() - started, 1)}
        if check_mode:
            after = {**body, "metadata": {**body["metadata"], "namespace": namespace}}
            return _result(verdict != OURS, after, lease,
                           f"check mode: '{holder}' would {doing} the remediation lock {namespace}/{name}") | waited
        written = _write(client, namespace, name, body, create=lease is None)
        if written is None:  # someone else wrote first: read again and judge
            conflicts += 1
            if conflicts >= RACE_ATTEMPTS:
                raise _conflicted(namespace, name, "acquiring")
            continue
        return _result(verdict != OURS, written, lease, f"{message} for {duration} s") | waited


def renew(client: Client, namespace: str, name: str, holder: str, duration: int | None = None,
          run_id: str | None = None, check_mode: bool = False) -> dict:
    """Extend our hold (by the lease's own duration unless given); LockHeld when we do not hold it (anymore)."""
    for _attempt in range(RACE_ATTEMPTS):
        lease = _read(client, namespace, name)
        current = holder_of(lease)
        if current != holder:
            if current:
                raise LockHeld(f"cannot renew: {_held_by(namespace, name, lease)}, not by '{holder}'",
                               describe(lease))
            raise LockHeld(f"cannot renew: '{holder}' does not hold the remediation lock {namespace}/{name} "
                           f"({'nobody holds it' if lease else 'it does not exist'})", describe(lease))
        body = _lease_body(namespace, name, holder, duration or duration_of(lease), _now(), lease, run_id)
        if check_mode:
            return _result(True, body, lease, f"check mode: '{holder}' would renew the lock {namespace}/{name}")
        written = _write(client, namespace, name, body, create=False)
        if written is not None:
            return _result(True, written, lease, f"'{holder}' renewed the remediation lock {namespace}/{name} "
                           f"for {duration_of(written)} s")
        # a conflict: our own renewer may have renewed it in between; read again and judge
    raise _conflicted(namespace, name, "renewing")


def _held_by(namespace: str, name: str, lease: dict | None) -> str:
    lock = describe(lease)
    run = f" (run id '{lock['run_id']}')" if lock.get("run_id") else ""
    return f"the remediation lock (Lease {namespace}/{name}) is held by '{lock['holder']}'{run}"


def release(client: Client, namespace: str, name: str, holder: str, run_id: str | None = None,
            check_mode: bool = False) -> dict:
    """Give the lock back, only if `holder` holds it (the Lease stays, with no holder, as a record).
    A keep-alive renewer of ours sees at its next tick that the Lease is no longer ours and stops."""
    for _attempt in range(RACE_ATTEMPTS):
        lease = _read(client, namespace, name)
        current = holder_of(lease)
        if current != holder:
            who = f"'{current}'" if current else "nobody"
            return _result(False, lease, lease, f"the remediation lock {namespace}/{name} is held by {who}, "
                           f"not '{holder}'; left as it is")
        body = dict(lease)
        body["spec"] = {**lease["spec"], "holderIdentity": None, "renewTime": micro_time(_now())}
        if run_id:
            annotations = {**(lease["metadata"].get("annotations") or {}), v.RUN_ID: run_id}
            body["metadata"] = {**lease["metadata"], "annotations": annotations}
        if check_mode:
            return _result(True, body, lease, f"check mode: '{holder}' would release the lock {namespace}/{name}")
        written = _write(client, namespace, name, body, create=False)
        if written is not None:
            return _result(True, written, lease, f"'{holder}' released the remediation lock {namespace}/{name}")
    raise _conflicted(namespace, name, "releasing")


# Keeping the lease alive while the run lives.

@dataclass(frozen=True)
class ProcessIdentity:
    """A process by pid and, on Linux, its start time, so that a pid reused by a new process after
    the run's controller died does not count as the controller."""

    pid: int
    start_time: str | None

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity:
        stat = _proc_stat(pid)
        return cls(pid, stat[1] if stat else None)

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists, owned by someone else
        stat = _proc_stat(self.pid)
        if stat is None:
            return self.start_time is None  # no /proc here: os.kill is all we know
        state, start_time = stat
        return state not in ("Z", "X") and start_time == self.start_time


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) from /proc/<pid>/stat, or None where unreadable."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            text = stat.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    return (fields[0], fields[19]) if len(fields) > 19 else None


def keep_renewing(client: Client, namespace: str, name: str, holder: str, duration: int,
                  controller_alive: Callable[[], bool], clock: Clock = time.monotonic, sleep: Sleep = time.sleep) -> str:
    """Renew our Lease every duration/3 while the controller lives; return why it stopped: the
    controller is gone, the Lease is no longer ours, or the API stayed unreachable until the lease
    had expired. A guarded update each time, with the holder checked on the Lease just read."""
    last_renewed = clock()  # the acquisition just before
    next_renewal = last_renewed + duration / 3
    while True:
        while clock() < next_renewal:
            if not controller_alive():
                return "the run's controller is gone"
            sleep(min(POLL_SECONDS, max(0.0, next_renewal - clock())))
        if not controller_alive():
            return "the run's controller is gone"
        try:
            lease = _read(client, namespace, name)
            if holder_of(lease) != holder:
                return "the Lease is no longer ours"
            duration = duration_of(lease)
            written = _write(client, namespace, name,
                             _lease_body(namespace, name, holder, duration, _now(), lease, None), create=False)
            if written is None:
                continue  # someone wrote in between (our own run renewing or releasing): judge again at once
            last_renewed = clock()
            next_renewal = last_renewed + duration / 3
        except KubernetesError:
            if clock() - last_renewed >= duration:
                return "the lease expired while renewing failed"
            next_renewal = clock() + min(POLL_SECONDS, duration / 3)


def start_keep_alive(params: dict[str, Any], environ: Mapping[str, str], namespace: str, name: str, holder: str,
                     duration: int, controller_pid: int) -> int:
    """Fork a renewer detached from the Ansible worker (its own session, no inherited descriptors)
    that keeps the Lease alive while the controller process lives; return its pid. Forked twice
    so that it is nobody's child in Ansible and never a session leader that could take a terminal."""
    controller = ProcessIdentity.of(controller_pid)
    if not controller.alive():
        raise NodeRecoveryError(f"cannot keep the remediation lock {namespace}/{name} alive: the controller "
                                f"process {controller_pid} is not running")
    read_end, write_end = os.pipe()
    first = os.fork()
    if first == 0:  # intermediate child: never returns into Ansible code
        try:
            os.close(read_end)
            os.setsid()
            second = os.fork()
            if second == 0:
                os.close(write_end)
                _renewer_main(params, environ, namespace, name, holder, duration, controller)
            os.write(write_end, str(second).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        reported = pipe.read()
    os.waitpid(first, 0)
    if not reported.isdigit():
        raise NodeRecoveryError(f"cannot keep the remediation lock {namespace}/{name} alive: the renewer "
                                "process did not start")
    return int(reported)


def _renewer_main(params: dict[str, Any], environ: Mapping[str, str], namespace: str, name: str, holder: str,
                  duration: int, controller: ProcessIdentity) -> None:
    """The renewer process: runs keep_renewing and leaves with os._exit, whatever happens."""
    status = 1
    try:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.closerange(3, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 4096)
        os.chdir("/")
        # Certificate files of its own: the worker it was forked from removes the ones it wrote when it ends.
        forget_certificate_files()
        try:
            # Bounded retries and timeouts: the loop retries on its own, within the lease's duration.
            client = Client(params, environ=environ, retries=0, timeout=max(1.0, duration / 3))
            keep_renewing(client, namespace, name, holder, duration, controller.alive)
            status = 0
        finally:
            remove_certificate_files()
    except BaseException:  # noqa: BLE001 - nothing may escape into the forked Ansible code
        pass
    finally:
        os._exit(status)


def remediation_lock(call: Call) -> dict:
    """The remediation_lock module."""
    params = call.params
    if not (params["holder"] or "").strip():
        raise NodeRecoveryError("holder must not be empty")
    where = {"namespace": params["namespace"], "name": params["name"], "holder": params["holder"],
             "run_id": params["run_id"], "check_mode": call.check_mode}
    if params["state"] == "renewed":
        return renew(call.client, duration=params["duration"], **where)
    if params["state"] == "released":
        return release(call.client, **where)
    return acquire_for_run(call, params["namespace"], params["name"], params["holder"],
                           params["duration"] or DEFAULT_DURATION, params["wait"], params["run_id"],
                           params["keep_alive"])


def acquire_for_run(call: Call, namespace: str, name: str, holder: str, duration: int, wait: float,
                    run_id: str | None, keep_alive: bool = True) -> dict:
    """acquire, and with keep_alive a renewer that keeps the lease alive while the run's controller lives (not in
    check mode). A lock that could not be kept alive is given back and the error says so."""
    if keep_alive and call.controller_pid is None:
        raise NodeRecoveryError(
            "keep_alive needs the task to run on the controller (delegate_to: localhost, without become or async), "
            "where the lock can be renewed while the run lives; elsewhere set keep_alive: false and renew the lock "
            "with state=renewed")
    outcome = acquire(call.client, namespace, name, holder, duration=duration, run_id=run_id,
                      check_mode=call.check_mode, wait=wait)
    if keep_alive and not call.check_mode:
        try:
            outcome["keep_alive_pid"] = start_keep_alive(call.params, call.environ, namespace, name, holder, duration,
                                                         call.controller_pid)
        except (OSError, NodeRecoveryError) as err:
            # A lock nobody keeps alive would lapse mid-run: give it back and say why.
            release(call.client, namespace, name, holder)
            reason = err if isinstance(err, NodeRecoveryError) else f"cannot start the lock's renewer process: {err}"
            raise NodeRecoveryError(f"{reason}; the lock was released") from None
    return outcome
