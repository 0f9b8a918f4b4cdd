"""Recovery batches of the node_faults source, on a fake clock: which needs_recovery events
become one batch, when it is emitted, and which nodes are asked for again (retries); and
what the source hands to its queue, fed node JSON without any API."""

from __future__ import annotations

import datetime as dt

import pytest

from ansible_collections.ai_infra.node_recovery.extensions.eda.plugins.event_source.node_faults import (
    NodeFaultSource,
    SourceError,
    validate_args,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import default_catalog
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import Options, classify_node
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._transitions import (
    RECOVERY_BATCH,
    CoalescingWindow,
    RecoveryBatches,
    awaits_recovery,
    snapshot,
    transition,
)

from .nodes import NOW, condition, node

CATALOG = default_catalog()


class Cluster:
    """The source's memory of each node (its latest classification) and the events it would emit."""

    def __init__(self, count: int = 8):
        self.names = [f"npu-a-{i:04d}" for i in range(count)]
        self.current = {name: self._classify(node(name)) for name in self.names}

    @staticmethod
    def _classify(raw: dict) -> dict:
        return classify_node(raw, CATALOG, Options(), NOW)

    def become(self, name: str, raw: dict) -> dict | None:
        before = snapshot(self.current[name])
        self.current[name] = self._classify(raw)
        return transition(before, self.current[name], NOW)

    def fault(self, name: str, ctype: str = "NT_NPU_OTHER", age: float = 600, **extra) -> dict:
        return self.become(name, node(name, conditions=[condition(ctype, "True", age=age)], **extra))

    def faults(self, name: str, *ctypes: str, **extra) -> dict:
        return self.become(name, node(name, conditions=[condition(c, "True", age=600) for c in ctypes], **extra))

    def heal(self, name: str) -> dict:
        return self.become(name, node(name))

    def isolate(self, name: str, state: str = v.STATE_ISOLATED) -> None:
        """What a recover run writes: a cordon and our annotations (no transition: not news)."""
        raw = node(name, conditions=[condition("NT_NPU_OTHER", "True", age=600)], unschedulable=True,
                   annotations={v.STATE: state, v.ISOLATED_BY: v.COLLECTION, v.CORDONED_BY_US: "true"})
        assert self.become(name, raw) is None

    def lookup(self, name: str) -> dict | None:
        return self.current.get(name)


def wall(seconds: float) -> dt.datetime:
    return NOW + dt.timedelta(seconds=seconds)


def run_until(batches: RecoveryBatches, cluster: Cluster, until: float) -> list[tuple[float, dict]]:
    """Call due() at every wake-up the batcher asks for up to `until`, as the source's timer does."""
    emitted = []
    while (when := batches.next_wakeup()) is not None and when <= until:
        batch = batches.due(when, wall(when), cluster.lookup)
        if batch is not None:
            emitted.append((when, batch))
    return emitted


def test_the_window_opens_with_the_first_item_and_is_not_extended():
    window = CoalescingWindow(2)
    assert window.closes_at is None and not window.is_due(100)
    window.open(10)
    window.open(11.5)
    assert window.closes_at == 12
    assert not window.is_due(11.99) and window.is_due(12)
    window.close()
    assert window.closes_at is None and not window.is_due(13)


def test_a_burst_within_the_window_is_one_batch_in_arrival_order():
    cluster = Cluster()
    batches = RecoveryBatches(coalesce_seconds=2, retry_seconds=60, max_attempts=3)
    burst = cluster.names[:6]
    for i, name in enumerate(burst):
        batches.observe(cluster.fault(name), now=100 + 0.3 * i, wall=wall(0.3 * i))
        assert batches.due(100 + 0.3 * i, wall(0.3 * i), cluster.lookup) is None
    assert batches.next_wakeup() == 102
    assert batches.due(101.99, wall(1.99), cluster.lookup) is None
    batch = batches.due(102, wall(2), cluster.lookup)
    assert batch["type"] == RECOVERY_BATCH and batch["batch"] == 1
    assert batch["nodes"] == burst
    assert batch["attempts"] == dict.fromkeys(burst, 1) and batch["attempt"] == 1 and batch["max_attempts"] == 3
    assert batch["retried_nodes"] == []
    assert batch["episodes"] == {e["node"]: e["episode"] for e in batch["events"]}
    assert [e["node"] for e in batch["events"]] == burst and all(e["needs_recovery"] for e in batch["events"])
    assert batch["coalesce_seconds"] == 2.0
    assert batch["opened_at"] == "2026-11-29T12:00:00.000000Z" and batch["observed_at"] == "2026-11-29T12:00:02.000000Z"
    assert batches.due(102, wall(2), cluster.lookup) is None  # emitted once


def test_a_node_after_the_window_is_in_the_next_batch():
    cluster = Cluster()
    batches = RecoveryBatches(2, 60, 3)
    first, late = cluster.names[:2]
    batches.observe(cluster.fault(first), 0, wall(0))
    assert [b["nodes"] for _, b in run_until(batches, cluster, 2)] == [[first]]
    batches.observe(cluster.fault(late), 2.5, wall(2.5))
    assert [(t, b["nodes"]) for t, b in run_until(batches, cluster, 10)] == [(4.5, [late])]


def test_no_wait_makes_a_batch_at_once():
    cluster = Cluster()
    batches = RecoveryBatches(0, 60, 3)
    batches.observe(cluster.fault(cluster.names[0]), 5, wall(5))
    assert batches.due(5, wall(5), cluster.lookup)["nodes"] == [cluster.names[0]]


def test_events_without_needs_recovery_make_no_batch():
    cluster = Cluster()
    batches = RecoveryBatches(2, 60, 3)
    a, b, c = cluster.names[:3]
    events = [cluster.fault(a, "MemoryPressure"),  # observe only
              cluster.fault(b, labels={v.EXCLUDE_LABEL: "true"}),  # excluded by its owner
              cluster.fault(c, age=10)]  # under its min_duration: suspect
    for event in events:
        assert event is not None and not event["needs_recovery"]
        batches.observe(event, 0, wall(0))
    assert batches.next_wakeup() is None and run_until(batches, cluster, 100) == []


def test_a_node_that_clears_within_the_window_leaves_it():
    cluster = Cluster()
    batches = RecoveryBatches(2, 60, 3)
    flapping, staying = cluster.names[:2]
    batches.observe(cluster.fault(flapping), 0, wall(0))
    batches.observe(cluster.fault(staying), 0.5, wall(0.5))
    batches.observe(cluster.heal(flapping), 1, wall(1))
    assert [b["nodes"] for _, b in run_until(batches, cluster, 10)] == [[staying]]

    alone = RecoveryBatches(2, 60, 3)
    alone.observe(cluster.fault(cluster.names[2]), 0, wall(0))
    alone.observe(cluster.heal(cluster.names[2]), 1, wall(1))
    assert alone.next_wakeup() is None and run_until(alone, cluster, 100) == []


def test_a_node_still_awaiting_recovery_is_retried_until_max_attempts():
    cluster = Cluster()
    batches = RecoveryBatches(2, 60, 3)
    name = cluster.names[0]
    batches.observe(cluster.fault(name), 0, wall(0))
    emitted = run_until(batches, cluster, 1000)
    # Batch at 2; looked at again 60 s after each batch, then 2 s of window.
    assert [(t, b["attempt"], b["attempts"], b["retried_nodes"]) for t, b in emitted] == [
        (2, 1, {name: 1}, []), (64, 2, {name: 2}, [name]), (126, 3, {name: 3}, [name])]
    assert batches.gave_up == [name]  # at 186: reported once, and then nothing more to do
    assert batches.next_wakeup() is None
    assert emitted[1][1]["episodes"] == emitted[0][1]["episodes"]


@pytest.mark.parametrize("taken", ["isolated", "drained", "repair-pending", "healed", "excluded", "deleted"])
def test_a_node_the_run_took_or_that_stopped_needing_recovery_is_not_retried(taken):
    cluster = Cluster()
    batches = RecoveryBatches(2, 60, 3)
    name = cluster.names[0]
    batches.observe(cluster.fault(name), 0, wall(0))
    assert len(run_until(batches, cluster, 2)) == 1
    if taken in ("isolated", "drained", "repair-pending"):
        cluster.isolate(name, taken)  # a node update that is no transition: the batcher hears nothing
    elif taken == "healed":
        batches.observe(cluster.heal(name), 30, wall(30))
    elif taken == "excluded":
        assert cluster.fault(name, labels={v.EXCLUDE_LABEL: "true"}) is None  # no transition either
    else:
        del cluster.current[name]
    assert run_until(batches, cluster, 1000) == [] and batches.gave_up == []
    assert batches.settled == ([] if taken == "healed" else [name])  # a healed node was forgotten at once
    assert batches.next_wakeup() is None


def test_a_new_episode_counts_its_attempts_from_one():
    cluster = Cluster()
    batches = RecoveryBatches(2, 60, 2)
    name = cluster.names[0]
    batches.observe(cluster.fault(name), 0, wall(0))
    assert [b["attempt"] for _, b in run_until(batches, cluster, 1000)] == [1, 2]
    assert batches.gave_up == [name]
    batches.gave_up.clear()
    batches.observe(cluster.heal(name), 1000, wall(1000))
    batches.observe(cluster.fault(name, "NT_NPU_ECC_COUNT"), 1001, wall(1001))
    emitted = run_until(batches, cluster, 2000)
    assert [(t, b["attempt"]) for t, b in emitted] == [(1003, 1), (1065, 2)]
    assert emitted[0][1]["events"][0]["fault_types"] == ["NT_NPU_ECC_COUNT"]


def test_a_retry_carries_the_newest_details_of_the_same_episode():
    cluster = Cluster()
    batches = RecoveryBatches(2, 60, 3)
    name = cluster.names[0]
    batches.observe(cluster.fault(name), 0, wall(0))
    run_until(batches, cluster, 2)
    changed = cluster.faults(name, "NT_NPU_OTHER", "NT_NPU_ECC_COUNT")
    assert changed["transition"] == "faults_changed" and not changed["needs_recovery"]
    batches.observe(changed, 10, wall(10))
    (when, retry), = run_until(batches, cluster, 64)
    assert retry["attempts"] == {name: 2}
    assert retry["events"][0]["fault_types"] == ["NT_NPU_ECC_COUNT", "NT_NPU_OTHER"]
    assert retry["episodes"][name] == changed["episode"]


def test_retries_and_new_faults_share_a_window():
    cluster = Cluster()
    batches = RecoveryBatches(2, 60, 3)
    old, new = cluster.names[:2]
    batches.observe(cluster.fault(old), 0, wall(0))
    run_until(batches, cluster, 2)
    batches.observe(cluster.fault(new), 61, wall(61))
    (when, batch), = run_until(batches, cluster, 100)
    assert when == 63 and batch["nodes"] == [new, old]
    assert batch["attempts"] == {new: 1, old: 2} and batch["attempt"] == 2 and batch["retried_nodes"] == [old]


def test_a_batch_shares_nothing_mutable_with_the_batcher():
    """ansible-rulebook adds meta to the events it receives; the next retry must not carry it."""
    cluster = Cluster()
    batches = RecoveryBatches(0, 60, 3)
    event = cluster.fault(cluster.names[0])
    batches.observe(event, 0, wall(0))
    event["meta"] = {"source": "mutated"}
    batch = batches.due(0, wall(0), cluster.lookup)
    batch["events"][0]["faults"].clear()
    retry = batches.due(60, wall(60), cluster.lookup)
    assert "meta" not in retry["events"][0] and retry["events"][0]["faults"]


def test_awaits_recovery_is_needs_recovery_without_our_hands_on_the_node():
    cluster = Cluster(1)
    name = cluster.names[0]
    cluster.fault(name)
    assert awaits_recovery(cluster.current[name])
    cluster.isolate(name)
    assert not awaits_recovery(cluster.current[name])
    cluster.current[name] = cluster._classify(node(name, conditions=[condition("NT_NPU_OTHER", "True", age=600)],
                                                  annotations={v.STATE: v.STATE_RETURNED}))
    assert awaits_recovery(cluster.current[name])  # returned earlier and faulty again: untouched since
    for state in (v.STATE_DRAINING, v.STATE_REPAIR_PENDING, v.STATE_IN_REPAIR):  # a state alone says a run had it
        cluster.current[name] = cluster._classify(node(name, conditions=[condition("NT_NPU_OTHER", "True", age=600)],
                                                      annotations={v.STATE: state}))
        assert not awaits_recovery(cluster.current[name]), state


@pytest.mark.parametrize(("args", "message"), [
    ({"coalesce_seconds": -1}, "option coalesce_seconds: -1 is less than the minimum of 0"),
    ({"coalesce_seconds": "2s"}, "option coalesce_seconds: '2s' is not of type 'number', 'null'"),
    ({"retry_seconds": 0}, "option retry_seconds: 0 is less than or equal to the minimum of 0"),
    ({"max_attempts": 0}, "option max_attempts: 0 is less than the minimum of 1"),
    ({"max_attempts": 1.5}, "option max_attempts: 1.5 is not of type 'integer', 'null'"),
    ({"coalesce": 2}, "('coalesce' was unexpected)"),
])
def test_bad_batch_options_are_one_sentence(args, message):
    with pytest.raises(SourceError) as caught:
        validate_args(args)
    assert str(caught.value).startswith("node_faults: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_batch_options_default_and_null_means_default():
    assert {k: validate_args({})[k] for k in ("coalesce_seconds", "retry_seconds", "max_attempts")} == {
        "coalesce_seconds": 1, "retry_seconds": 60, "max_attempts": 3}
    given = validate_args({"coalesce_seconds": None, "retry_seconds": 5.5, "max_attempts": None})
    assert (given["coalesce_seconds"], given["retry_seconds"], given["max_attempts"]) == (1, 5.5, 3)


def _source_with_sink(**args):
    """The source's own bookkeeping fed node JSON directly (no API): what it hands to the queue, in order."""
    from concurrent.futures import Future

    source = NodeFaultSource({"coalesce_seconds": 0, **args}, client=object())
    handed: list[dict] = []

    def sink(event):
        handed.append(event)
        done = Future()
        done.set_result(None)
        return done

    source._sink = sink
    return source, handed


def test_the_source_hands_over_a_nodes_event_before_its_batch():
    source, handed = _source_with_sink()
    source._observe(node("npu-a-0001", conditions=[condition("NT_NPU_OTHER", "True", age=600)]))
    assert [e.get("transition", e.get("type")) for e in handed] == ["faulty", RECOVERY_BATCH]
    assert handed[1]["nodes"] == ["npu-a-0001"] and handed[1]["events"][0] is not handed[0]


def test_batches_are_made_from_transitions_the_filter_does_not_emit():
    source, handed = _source_with_sink(transitions=[])
    source._observe(node("npu-a-0001", conditions=[condition("NT_NPU_OTHER", "True", age=600)]))
    assert [e["type"] for e in handed] == [RECOVERY_BATCH]


def test_the_watchers_source_makes_no_batches():
    source = NodeFaultSource({"coalesce_seconds": 0}, client=object(), recovery_batches=False)
    handed = []
    source._sink = lambda event: handed.append(event)
    source._observe(node("npu-a-0001", conditions=[condition("NT_NPU_OTHER", "True", age=600)]))
    assert [e["transition"] for e in handed] == ["faulty"]
