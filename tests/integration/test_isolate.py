"""node_isolate against the real local control plane: cordon, taint, ownership, release,
check/diff mode, idempotency, conflicts, Events and one-sentence failures."""

from __future__ import annotations

import json
import threading
import time

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._audit import node_events
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import Client
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._isolate import isolate
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._isolate import release_isolation as release

from .helpers import node, run_module, service_account_kubeconfig


def ours(node_obj: dict) -> dict:
    prefix = v.DOMAIN + "/"
    return {k: val for k, val in (node_obj["metadata"].get("annotations") or {}).items() if k.startswith(prefix)}


def our_taints(node_obj: dict) -> list[tuple]:
    return [(t["key"], t.get("value"), t["effect"]) for t in node_obj["spec"].get("taints") or []
            if t["key"] == v.TAINT_KEY]


def owned(node_obj: dict) -> tuple:
    """What isolation may touch. Not the resourceVersion (it moves with kwok's heartbeats), nor the
    node.kubernetes.io/ taints and beta.kubernetes.io/ labels, which the node lifecycle controller
    adds and removes on its own time after a node registers."""
    taints = [t for t in node_obj["spec"].get("taints") or [] if not t["key"].startswith("node.kubernetes.io/")]
    labels = {k: val for k, val in (node_obj["metadata"].get("labels") or {}).items()
              if not k.startswith("beta.kubernetes.io/")}
    return node_obj["spec"].get("unschedulable"), taints, ours(node_obj), labels


def reasons_of_events(api, name: str) -> list[str]:
    return [e["reason"] for e in node_events(api, name)]


def test_isolate_check_mode_then_diff_then_no_change(api, kubeconfig, make_nodes):
    name = make_nodes(1)[0]
    args = {"name": name, "reasons": ["NT_NPU_CARD_LOSE", "NT_NPU_NET"], "kubeconfig": kubeconfig, "run_id": "run-a"}
    untouched = node(api, name)

    checked = run_module("node_isolate", args, check=True, diff=True)
    assert checked["changed"] is True and "would be isolated" in checked["nodes"][0]["message"]
    assert checked["diff"][0]["after"]["unschedulable"] is True and checked["diff"][0]["after_header"] == name
    now = node(api, name)
    assert owned(now) == owned(untouched)
    assert not now["spec"].get("unschedulable") and not ours(now) and not our_taints(now)

    done = run_module("node_isolate", args, diff=True)
    assert done["changed"] is True, done
    before, after = done["diff"][0]["before"], done["diff"][0]["after"]
    assert done["nodes"][0]["isolation"] == after
    assert before == {"unschedulable": False, "taints": [], "annotations": {}, "labels": {}}
    assert after["unschedulable"] is True
    assert [(t["key"], t["value"], t["effect"]) for t in after["taints"]] == [
        (v.TAINT_KEY, "NT_NPU_CARD_LOSE", "NoSchedule")]
    assert set(after["annotations"]) == {v.CORDONED_BY_US, v.ISOLATED_BY, v.ISOLATED_AT, v.ISOLATION_REASON,
                                         v.RUN_ID, v.STATE, v.STATE_SINCE, v.ISOLATIONS}
    # The new isolation's time joins the node's isolation times in the same write.
    assert json.loads(after["annotations"][v.ISOLATIONS]) == [after["annotations"][v.ISOLATED_AT]]
    assert after["labels"] == {v.STATE_LABEL: v.STATE_ISOLATED}

    now = node(api, name)  # the diff is what the cluster holds
    assert now["spec"]["unschedulable"] is True
    assert ours(now) == after["annotations"]
    assert ours(now)[v.ISOLATION_REASON] == "NT_NPU_CARD_LOSE,NT_NPU_NET"
    assert ours(now)[v.ISOLATED_BY] == v.COLLECTION and ours(now)[v.RUN_ID] == "run-a"
    assert our_taints(now) == [(v.TAINT_KEY, "NT_NPU_CARD_LOSE", "NoSchedule")]
    assert v.EVENT_ISOLATED in reasons_of_events(api, name)

    again = run_module("node_isolate", {**args, "run_id": "run-b"}, diff=True)
    assert again["changed"] is False and "already isolated" in again["nodes"][0]["message"]
    assert owned(node(api, name)) == owned(now)
    assert reasons_of_events(api, name).count(v.EVENT_ISOLATED) == 1


def test_release_undoes_our_isolation_and_records_it(api, make_nodes):
    name = make_nodes(1)[0]
    isolate(api, name, ["NT_NPU_ECC_COUNT"], "run-1", effect="NoExecute")
    assert our_taints(node(api, name)) == [(v.TAINT_KEY, "NT_NPU_ECC_COUNT", "NoExecute")]

    checked = release(api, name, "run-2", check_mode=True)
    assert checked["changed"] is True and node(api, name)["spec"]["unschedulable"] is True

    done = release(api, name, "run-2")
    assert done["changed"] is True and "uncordoned" in done["message"]
    now = node(api, name)
    assert not now["spec"].get("unschedulable") and not our_taints(now)
    # The isolation times stay (the rolling cap and the loop breaker count them after the node came back).
    assert set(ours(now)) == {v.STATE, v.STATE_SINCE, v.RUN_ID, v.ISOLATIONS} and ours(now)[v.STATE] == v.STATE_NONE
    assert v.STATE_LABEL not in now["metadata"]["labels"]
    assert v.EVENT_RELEASED in reasons_of_events(api, name)
    assert release(api, name, "run-3")["changed"] is False


def test_a_node_cordoned_by_a_person_is_never_uncordoned(api, kubeconfig, make_nodes):
    person, isolated_after_person = make_nodes(2)
    for name in (person, isolated_after_person):
        api.patch(f"/api/v1/nodes/{name}", {"spec": {"unschedulable": True}})

    result = run_module("node_isolate", {"name": person, "state": "released", "kubeconfig": kubeconfig})
    assert result["changed"] is False and "cordoned by a person" in result["nodes"][0]["message"]
    assert node(api, person)["spec"]["unschedulable"] is True

    isolate(api, isolated_after_person, ["NT_NPU_NET"], "run-1")
    assert ours(node(api, isolated_after_person))[v.CORDONED_BY_US] == "false"
    done = release(api, isolated_after_person, "run-2")
    assert done["changed"] is True and "the cordon stays" in done["message"]
    now = node(api, isolated_after_person)
    assert now["spec"]["unschedulable"] is True and not our_taints(now) and v.CORDONED_BY_US not in ours(now)


def test_excluded_node_is_refused_unless_forced(api, kubeconfig, make_nodes):
    name = make_nodes(1)[0]
    api.patch(f"/api/v1/nodes/{name}", {"metadata": {"labels": {v.EXCLUDE_LABEL: "true"}}})
    refused = run_module("node_isolate", {"name": name, "reasons": ["NT_NPU_NET"], "kubeconfig": kubeconfig})
    assert refused["failed"] is True and "exclude=true" in refused["msg"] and "\n" not in refused["msg"]
    assert refused["failed_nodes"] == [name]
    assert not node(api, name)["spec"].get("unschedulable")
    forced = run_module("node_isolate", {"name": name, "reasons": ["NT_NPU_NET"], "force": True,
                                         "kubeconfig": kubeconfig})
    assert forced["changed"] is True and node(api, name)["spec"]["unschedulable"] is True


def test_concurrent_taints_by_others_survive_isolation(kubeconfig, api, make_nodes):
    """Another writer adds taints while we isolate: our guarded patch retries on 409, loses nothing."""
    name = make_nodes(1)[0]
    ours_client = Client({"kubeconfig": kubeconfig})
    stop = threading.Event()
    added: list[str] = []

    def other_writer():
        i = 0
        while not stop.is_set() and i < 200:
            key = f"other.example.com/t{i}"
            api.patch(f"/api/v1/nodes/{name}", [{"op": "add", "path": "/spec/taints/-" if i else "/spec/taints",
                                                 "value": {"key": key, "effect": "PreferNoSchedule"} if i
                                                 else [{"key": key, "effect": "PreferNoSchedule"}]}],
                      patch_type="json")
            added.append(key)
            i += 1
            time.sleep(0.02)

    writer = threading.Thread(target=other_writer)
    writer.start()
    try:
        round_ = 0
        # Until a write of ours met a conflict and was retried: without one, nothing here was concurrent.
        while round_ < 6 or (ours_client.conflicts_retried == 0 and round_ < 60):
            isolate(ours_client, name, [f"FAULT_{round_}"], f"run-{round_}")
            round_ += 1
    finally:
        stop.set()
        writer.join()
    now = node(api, name)
    keys = {t["key"] for t in now["spec"]["taints"]}
    assert set(added) <= keys, sorted(set(added) - keys)
    assert ours_client.conflicts_retried > 0, "no write of ours ever met a conflict"
    assert our_taints(now) == [(v.TAINT_KEY, f"FAULT_{round_ - 1}", "NoSchedule")]


def test_missing_node_bad_option_bad_kubeconfig_each_one_sentence(kubeconfig, tmp_path):
    missing = run_module("node_isolate", {"name": "no-such-node-x1", "kubeconfig": kubeconfig})
    assert missing["failed"] is True and missing["nodes"][0]["msg"] == "node 'no-such-node-x1' does not exist"
    assert missing["msg"] == "1 of 1 node(s) failed isolation (0 done): no-such-node-x1: node 'no-such-node-x1' does not exist"

    unknown = run_module("node_isolate", {"name": "x", "colour": "red", "kubeconfig": kubeconfig})
    assert unknown["failed"] is True and "colour" in unknown["msg"] and "\n" not in unknown["msg"]

    bad_effect = run_module("node_isolate", {"name": "x", "effect": "Evict", "kubeconfig": kubeconfig})
    assert bad_effect["failed"] is True and "effect" in bad_effect["msg"] and "NoExecute" in bad_effect["msg"]

    spare_on_release = run_module("node_isolate", {"name": "x", "state": "released", "hot_spare": True,
                                                    "kubeconfig": kubeconfig})
    assert spare_on_release["failed"] is True and spare_on_release["msg"] == (
        "hot_spare brings a spare into service in place of a node being isolated: it cannot go with state=released")

    broken = tmp_path / "broken.kubeconfig"
    broken.write_text("apiVersion: v1\nclusters: [\n")
    unreadable = run_module("node_isolate", {"name": "x", "kubeconfig": str(broken)})
    assert unreadable["failed"] is True and "kubeconfig" in unreadable["msg"] and "Traceback" not in unreadable["msg"]
    assert "exception" not in unreadable or "Traceback" not in str(unreadable.get("module_stderr", ""))


def test_forbidden_patch_verb_is_named_and_nothing_changes(api, namespace, make_nodes, tmp_path):
    name = make_nodes(1)[0]
    reader = service_account_kubeconfig(api, namespace, "reader", [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}], tmp_path)
    result = run_module("node_isolate", {"name": name, "reasons": ["NT_NPU_NET"], "kubeconfig": str(reader)})
    assert result["failed"] is True
    assert "verb 'patch' on resource 'nodes'" in result["msg"] and "\n" not in result["msg"], result["msg"]
    now = node(api, name)
    assert not now["spec"].get("unschedulable") and not ours(now)


def test_a_batch_is_isolated_at_once_each_for_its_own_faults_and_one_failure_stops_nobody(api, kubeconfig,
                                                                                          make_nodes):
    card, ecc, excluded = make_nodes(3)
    for name, ctype in ((card, "NT_NPU_CARD_LOSE"), (ecc, "NT_NPU_ECC_COUNT")):
        api.patch(f"/api/v1/nodes/{name}/status", {"status": {"conditions": [
            {"type": ctype, "status": "True", "reason": "test", "message": "fault",
             "lastTransitionTime": "2026-01-01T00:00:00Z", "lastHeartbeatTime": "2026-01-01T00:00:00Z"}]}},
            patch_type="strategic")
    api.patch(f"/api/v1/nodes/{excluded}", {"metadata": {"labels": {v.EXCLUDE_LABEL: "true"}}})
    names = [card, "no-such-node-b2", ecc, excluded]

    planned = run_module("node_isolate", {"name": names, "kubeconfig": kubeconfig}, check=True)
    assert [n["name"] for n in planned["nodes"]] == names
    assert [n["failed"] for n in planned["nodes"]] == [False, True, False, True]
    assert all("would be isolated" in n["message"] for n in planned["nodes"] if not n["failed"])
    assert not node(api, card)["spec"].get("unschedulable")

    done = run_module("node_isolate", {"name": names, "kubeconfig": kubeconfig, "run_id": "run-batch"})
    assert done["failed"] is True and done["failed_nodes"] == ["no-such-node-b2", excluded], done["msg"]
    assert done["changed"] is True
    assert "2 of 4 node(s) failed isolation (2 done)" in done["msg"] and "exclude=true" in done["msg"]
    assert ours(node(api, card))[v.ISOLATION_REASON] == "NT_NPU_CARD_LOSE"
    assert ours(node(api, ecc))[v.ISOLATION_REASON] == "NT_NPU_ECC_COUNT"
    assert all(node(api, n)["spec"]["unschedulable"] for n in (card, ecc))
    assert not node(api, excluded)["spec"].get("unschedulable")
    for result in done["nodes"]:
        assert result["started"] <= result["finished"]
    assert all(v.EVENT_ISOLATED in reasons_of_events(api, n) for n in (card, ecc))


def test_a_hot_spare_comes_into_service_in_the_isolated_nodes_place_in_the_same_step(api, kubeconfig, make_nodes):
    faulty, spare = make_nodes(2)
    standby = run_module("node_spare", {"state": "standby", "name": spare, "kubeconfig": kubeconfig})
    assert standby["changed"] is True, standby.get("msg")
    args = {"kubeconfig": kubeconfig, "name": [faulty], "reasons": ["NT_NPU_OTHER"], "hot_spare": True,
            "run_id": "run-spare"}
    # What a run killed between the isolation and the spare leaves: the node isolated, the spare still in reserve.
    isolated = run_module("node_isolate", {k: val for k, val in args.items() if k != "hot_spare"})
    assert isolated["changed"] is True and "spare" not in isolated["nodes"][0], isolated

    checked = run_module("node_isolate", args, check=True)
    assert checked["nodes"][0]["spare"]["spare"] == spare and checked["changed"] is True, checked
    assert [t["key"] for t in node(api, spare)["spec"].get("taints") or []].count(v.SPARE_TAINT_KEY) == 1

    done = run_module("node_isolate", args)  # the next run: the isolation stands, the spare comes
    assert not done.get("failed"), done.get("msg")
    assert "already isolated" in done["nodes"][0]["message"] and done["changed"] is True
    assert done["nodes"][0]["spare"] == {**done["nodes"][0]["spare"], "changed": True, "spare": spare,
                                         "replacing": faulty}
    assert f"hot spare {spare} brought into service in place of {faulty}" == done["nodes"][0]["spare"]["message"]
    in_service = node(api, spare)
    assert v.SPARE_TAINT_KEY not in [t["key"] for t in in_service["spec"].get("taints") or []]
    assert in_service["metadata"]["annotations"][v.SPARE_FOR] == faulty
    assert our_taints(node(api, faulty))

    again = run_module("node_isolate", args)  # once per replaced node
    assert again["changed"] is False and again["nodes"][0]["spare"]["message"] == f"{spare} already replaces {faulty}"
