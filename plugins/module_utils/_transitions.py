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

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import FAULTY, HEALTHY, SUSPECT

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
    if before["health"] == FAULTY:
        return FAULT_CLEARED
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
        "observed_at": now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }


def next_recheck(classified: dict) -> float | None:
    """Seconds until the first pending fault counts: no node update will say so, a timer must."""
    waits = [f["counts_in_seconds"] for f in classified["pending_faults"] if f.get("counts_in_seconds") is not None]
    return float(min(waits)) if waits else None


__all__ = ["TRANSITIONS", "episode_key", "fault_key", "needs_recovery", "next_recheck", "snapshot", "transition"]
