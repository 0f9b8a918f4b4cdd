# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

Fault transitions: what changed between two classifications of one node that an
operator (or a rulebook) must hear about. Heartbeats, fault ages and our own state
annotations change nothing here, so a watch over thousands of nodes passes on only
the few updates that matter. Pure: no Ansible, no network, time passed in.
"""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass
from typing import Callable

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import DEGRADED, FAULTY, HEALTHY, SUSPECT

# One node update gives at most one transition, the most significant of these.
BECAME_FAULTY = "faulty"  # faults now count (past their catalog min_duration)
FAULT_CLEARED = "cleared"  # it was faulty and is not any more
CARD_LOSS = "card_loss"  # still faulty, and more accelerators stopped being allocatable
FAULTS_CHANGED = "faults_changed"  # still faulty, with faults added or gone, or another action
BECAME_SUSPECT = "suspect"  # a healthy node has Unknown checks or faults under their min_duration
SUSPECT_CLEARED = "suspect_cleared"  # a suspect turned healthy without ever counting as faulty
TRANSITIONS = (BECAME_FAULTY, FAULT_CLEARED, CARD_LOSS, FAULTS_CHANGED, BECAME_SUSPECT, SUSPECT_CLEARED)

# The parts of a snapshot whose change is news; everything else (ages, heartbeats, state) is not.
_COMPARED = ("health", "action", "faults", "pending", "suspect", "lost")
_HEALTHY_BASELINE = {"health": HEALTHY, "action": None, "faults": (), "pending": (), "suspect": (), "lost": ()}


def fault_key(fault: dict) -> str:
    """A card loss is one fault per accelerator resource; a condition is one fault per type."""
    return f"{fault['type']}:{fault['resource']}" if fault.get("resource") else fault["type"]


def snapshot(classified: dict) -> dict:
    """What transitions compare, from one classify_node() result."""
    return {
        "health": classified["health"],
        "action": classified["action"],
        "faults": tuple(sorted(fault_key(f) for f in classified["faults"])),
        "pending": tuple(sorted(f["type"] for f in classified["pending_faults"])),
        "suspect": tuple(sorted(s["type"] for s in classified["suspect_signals"])),
        "lost": tuple(sorted((a["resource"], a["lost"]) for a in classified["accelerators"] if a["lost"])),
    }


def episode_key(classified: dict) -> str:
    """Identifies one fault episode across restarts: the counted faults and since when they hold."""
    return ",".join(sorted(f"{fault_key(f)}@{f['since']}" if f.get("since") else fault_key(f)
                           for f in classified["faults"]))


def needs_recovery(classified: dict) -> bool:
    """Faulty with an action beyond observing, and not excluded by its owner."""
    return classified["health"] == FAULTY and classified["action"] != "observe" and not classified["excluded"]


def _kind(before: dict, after: dict, added: list, gone: list, more_lost: bool) -> str | None:
    if after["health"] == FAULTY:
        if before["health"] != FAULTY:
            return BECAME_FAULTY
        if more_lost:
            return CARD_LOSS
        if added or gone or after["action"] != before["action"]:
            return FAULTS_CHANGED
        return None
    if after["health"] == DEGRADED:
        return None  # its lost cards were handled card by card: the node serves on, nothing to recover
    if before["health"] in (FAULTY, DEGRADED):
        return FAULT_CLEARED  # a degraded node's cards came back too: return_to_service removes the mark
    if after["health"] == SUSPECT and before["health"] == HEALTHY:
        return BECAME_SUSPECT
    if after["health"] == HEALTHY and before["health"] == SUSPECT:
        return SUSPECT_CLEARED
    return None


def transition(previous: dict | None, classified: dict, now: dt.datetime, initial: bool = False) -> dict | None:
    """The event for one node update, or None when nothing that matters changed.

    `previous` is the snapshot() of the node's last classification; None (a node not
    seen before, or the first list) compares against a healthy node, so a node that is
    already faulty when we start is reported once."""
    before = previous or _HEALTHY_BASELINE
    after = snapshot(classified)
    if all(before[key] == after[key] for key in _COMPARED):
        return None
    added = sorted(set(after["faults"]) - set(before["faults"]))
    gone = sorted(set(before["faults"]) - set(after["faults"]))
    lost_before = dict(before["lost"])
    card_loss = [{"resource": a["resource"], "expected": a["expected"], "allocatable": a["allocatable"],
                  "lost": a["lost"], "previously_lost": lost_before.get(a["resource"], 0)}
                 for a in classified["accelerators"] if a["lost"] != lost_before.get(a["resource"], 0)]
    more_lost = any(c["lost"] > c["previously_lost"] for c in card_loss)
    kind = _kind(before, after, added, gone, more_lost)
    if kind is None:
        return None
    was_recoverable = before["health"] == FAULTY and before["action"] != "observe"
    # Copies: consumers (rulebook event filters) may rewrite events in place; the classification stays ours.
    details = copy.deepcopy({key: classified[key] for key in ("faults", "pending_faults", "suspect_signals")})
    return {
        "transition": kind,
        "node": classified["name"],
        "pool": classified["pool"],
        "health": after["health"],
        "previous_health": before["health"],
        "action": classified["action"],
        "previous_action": before["action"],
        # The trigger for a recover run: true once per fault episode (and when an episode escalates
        # from observe-only to an action).
        "needs_recovery": needs_recovery(classified) and not was_recoverable,
        "faults": details["faults"],
        "fault_types": sorted({f["type"] for f in classified["faults"]}),
        "added_faults": added,
        "cleared_faults": gone,
        "pending_faults": details["pending_faults"],
        "suspect_signals": details["suspect_signals"],
        "card_loss": card_loss,
        "state": classified["state"],
        "excluded": classified["excluded"],
        "cordon_owner": classified["cordon_owner"],
        "episode": episode_key(classified),
        "initial": initial,
        "observed_at": _iso(now),
    }


def next_recheck(classified: dict) -> float | None:
    """Seconds until the first pending fault counts: no node update will say so, a timer must."""
    waits = [f["counts_in_seconds"] for f in classified["pending_faults"] if f.get("counts_in_seconds") is not None]
    return float(min(waits)) if waits else None


# -- recovery batches ---------------------------------------------------------------------------
# A rack or a switch makes 8-32 nodes faulty within a second or two: their needs_recovery events
# become one recover run, not one per node. Pure: the caller passes a monotonic clock.

RECOVERY_BATCH = "recovery_batch"  # the batch event's "type"
# States in which the collection has not taken the node (yet): a retry may run recover for it again.
_UNTOUCHED_STATES = (v.STATE_NONE, v.STATE_RETURNED)


def awaits_recovery(classified: dict) -> bool:
    """Still needs recovery and no run of ours has touched it: not isolated, not handed to repair."""
    return needs_recovery(classified) and not classified["isolated_by_us"] and classified["state"] in _UNTOUCHED_STATES


class CoalescingWindow:
    """Opens with the first item and is due `seconds` later; what arrives meanwhile joins it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self.opened_at: float | None = None

    def open(self, now: float) -> None:
        """Opens the window unless it is open already (a later item never delays it)."""
        if self.opened_at is None:
            self.opened_at = now

    @property
    def closes_at(self) -> float | None:
        return None if self.opened_at is None else self.opened_at + self.seconds

    def is_due(self, now: float) -> bool:
        return self.opened_at is not None and now >= self.opened_at + self.seconds

    def close(self) -> None:
        self.opened_at = None


@dataclass
class _Member:
    event: dict  # the node's latest transition event in this fault episode
    attempt: int  # recover runs asked for this episode, counting the batch it is in or was last in
    retry_at: float | None = None  # when to look again whether it still awaits recovery


class RecoveryBatches:
    """Turns the needs_recovery events of a node fault stream into recovery batch events.

    A needs_recovery event opens a coalescing window (or joins the open one); when the window
    is due, its nodes become one batch. Each node of an emitted batch is looked at again
    `retry_seconds` later: if it still awaits recovery in the same fault episode (it stayed
    faulty all along and no run isolated it or handed it off), the recover run evidently did
    not take it, so it joins a new batch, up to `max_attempts` batches per episode. A node
    that stops being faulty is forgotten; its next fault is a new episode."""

    def __init__(self, coalesce_seconds: float, retry_seconds: float, max_attempts: int) -> None:
        self.window = CoalescingWindow(coalesce_seconds)
        self.retry_seconds = float(retry_seconds)
        self.max_attempts = int(max_attempts)
        self._waiting: dict[str, _Member] = {}  # in the open window, in arrival order
        self._sent: dict[str, _Member] = {}  # in an emitted batch, watched for a retry
        self.opened_wall: dt.datetime | None = None
        self.batches = 0
        # What due() found since the caller last read (and cleared) these, for its log:
        self.gave_up: list[str] = []  # still awaiting recovery, and no attempts left
        self.settled: list[str] = []  # taken by a run, handed off, healed, excluded or gone: no retry

    def observe(self, event: dict, now: float, wall: dt.datetime) -> None:
        """Follow one node transition event (every transition, emitted or not)."""
        name = event["node"]
        if event["needs_recovery"]:
            self._sent.pop(name, None)  # a new episode: its attempts count from one
            self._join(name, _Member(copy.deepcopy(event), 1), now, wall)
        elif event["health"] != FAULTY:
            self.forget(name)
        else:  # still faulty (faults changed, cards lost): the same episode, with newer details
            member = self._waiting.get(name) or self._sent.get(name)
            if member is not None:
                member.event = copy.deepcopy(event)

    def forget(self, name: str) -> None:
        self._waiting.pop(name, None)
        self._sent.pop(name, None)
        if not self._waiting:
            self.window.close()

    def due(self, now: float, wall: dt.datetime, current: Callable[[str], dict | None]) -> dict | None:
        """Retries that came due join the window; a window that is due becomes the batch event returned.

        `current(name)` is the node's latest classification, None when the node is gone."""
        for name, member in list(self._sent.items()):
            if member.retry_at is None or member.retry_at > now:
                continue
            member.retry_at = None
            classified = current(name)
            if classified is None or not awaits_recovery(classified):
                del self._sent[name]
                self.settled.append(name)
            elif member.attempt >= self.max_attempts:
                self.gave_up.append(name)  # kept (without a retry) so that no new batch takes it
            else:
                del self._sent[name]
                member.attempt += 1
                self._join(name, member, now, wall)
        if not self._waiting or not self.window.is_due(now):
            return None
        return self._emit(now, wall)

    def next_wakeup(self) -> float | None:
        """The monotonic time of the next due() that may do something, None when nothing waits."""
        times = [m.retry_at for m in self._sent.values() if m.retry_at is not None]
        if self._waiting:
            times.append(self.window.closes_at)
        return min(times) if times else None

    def _join(self, name: str, member: _Member, now: float, wall: dt.datetime) -> None:
        if not self._waiting:
            self.opened_wall = wall
        self.window.open(now)
        self._waiting[name] = member

    def _emit(self, now: float, wall: dt.datetime) -> dict:
        members, self._waiting = self._waiting, {}
        self.window.close()
        self.batches += 1
        for member in members.values():
            member.retry_at = now + self.retry_seconds
        self._sent.update(members)
        attempts = {name: m.attempt for name, m in members.items()}
        return {
            "type": RECOVERY_BATCH,
            "batch": self.batches,
            "nodes": list(members),
            "episodes": {name: m.event["episode"] for name, m in members.items()},
            "attempts": attempts,
            "attempt": max(attempts.values()),
            "max_attempts": self.max_attempts,
            "retried_nodes": [name for name, attempt in attempts.items() if attempt > 1],
            "events": [copy.deepcopy(m.event) for m in members.values()],
            "coalesce_seconds": self.window.seconds,
            "opened_at": _iso(self.opened_wall or wall),
            "observed_at": _iso(wall),
        }


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


__all__ = ["RECOVERY_BATCH", "TRANSITIONS", "CoalescingWindow", "RecoveryBatches", "awaits_recovery", "episode_key",
           "fault_key", "needs_recovery", "next_recheck", "snapshot", "transition"]
