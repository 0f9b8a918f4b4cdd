# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

Acting on a batch of nodes inside one process: each node judged, acted on and reported
on its own, at most max_parallel at once; one node's failure is its own result and never
stops the others. A correlated failure (a rack, a switch) takes 8-32 nodes at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._errors import NodeRecoveryError

DEFAULT_MAX_PARALLEL = 32
NAME_SPEC: dict[str, Any] = {"type": "list", "elements": "str", "required": True, "aliases": ["names"]}
MAX_PARALLEL_SPEC: dict[str, Any] = {"type": "int", "default": DEFAULT_MAX_PARALLEL}
MAX_PARALLEL_RANGE = (1, 256)
# What every batch module takes: the nodes and how many at once.
BATCH_ARGUMENT_SPEC: dict[str, dict[str, Any]] = {"name": NAME_SPEC, "max_parallel": MAX_PARALLEL_SPEC}
BATCH_RANGES = {"max_parallel": MAX_PARALLEL_RANGE}


def stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def unique(names: Iterable[str]) -> list[str]:
    """The names once each, in the order given; an empty name is bad input."""
    names = list(dict.fromkeys(names))
    if not names or any(not str(n).strip() for n in names):
        raise NodeRecoveryError("name must list at least one node, and no empty name")
    return names


def for_each_node(names: list[str], act: Callable[[str], dict], max_parallel: int = DEFAULT_MAX_PARALLEL) -> list[dict]:
    """act(name) for every node, at most max_parallel at once. Each result gains name, started and
    finished (UTC, for the run's timeline) and failed; an expected failure is that node's result
    (failed, msg), in the order the names were given."""

    def one(name: str) -> dict:
        started = stamp()
        try:
            result = dict(act(name))
            result.setdefault("failed", False)
        except NodeRecoveryError as err:
            result = {**err.fields, "changed": False, "failed": True, "msg": str(err), "message": str(err)}
        result.setdefault("changed", False)
        return {"name": name, **result, "started": started, "finished": stamp()}

    if len(names) == 1:
        return [one(names[0])]
    with ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(names)))) as pool:
        return list(pool.map(one, names))


def batch_result(per_node: list[dict], doing: str) -> dict:
    """The module result of a batch: every node's own result under `nodes`, diffs per node, and a
    failure naming each node that failed (the others' results stand)."""
    failed = [n for n in per_node if n.get("failed")]
    diffs = [{"before_header": n["name"], "after_header": n["name"], **n.pop("diff")}
             for n in per_node if n.get("diff") is not None]
    done = len(per_node) - len(failed)
    result: dict[str, Any] = {
        "changed": any(n.get("changed") for n in per_node),
        "nodes": per_node,
        "failed_nodes": [n["name"] for n in failed],
        "message": "; ".join(n.get("message") or n.get("msg") or "" for n in per_node),
        "diff": diffs,
    }
    if failed:
        result["failed"] = True
        result["msg"] = (f"{len(failed)} of {len(per_node)} node(s) failed {doing} ({done} done): "
                         + "; ".join(f"{n['name']}: {n.get('msg')}" for n in failed))
    return result
