"""Pure parts of the recovery_plan module: the nodes to act on read from a file whoever started the run
writes while Ansible starts, a classification made a moment ago narrowed to a batch, and the option checks."""

from __future__ import annotations

import json
import threading

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._errors import NodeRecoveryError
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._run_plan import (
    of_names,
    option_problem,
    targets_from_file,
)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_targets_are_read_once_the_file_appears(tmp_path):
    path = tmp_path / "targets.json"
    clock = FakeClock()
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        clock.sleep(seconds)
        if len(slept) == 3:  # written (renamed into place) while the run waits
            path.write_text(json.dumps(["npu-a-0001", "npu-a-0002"]))

    assert targets_from_file(str(path), 5, clock=clock, sleep=sleep) == ["npu-a-0001", "npu-a-0002"]
    assert len(slept) == 3


def test_a_file_already_there_is_read_at_once(tmp_path):
    path = tmp_path / "targets.json"
    path.write_text("[]")
    assert targets_from_file(str(path), 0, sleep=lambda _s: pytest.fail("no wait")) == []


def test_a_file_that_never_appears_is_one_sentence(tmp_path):
    clock = FakeClock()
    with pytest.raises(NodeRecoveryError) as err:
        targets_from_file(str(tmp_path / "targets.json"), 2, clock=clock, sleep=clock.sleep)
    assert str(err.value) == (f"The nodes to act on were to be written to {tmp_path / 'targets.json'}, which did not "
                              "appear within 2 s (targets_file_wait); nothing was changed.")
    assert 2 <= clock.now < 2.1


@pytest.mark.parametrize("content", ['{"nodes": ["a"]}', '["a", ""]', '["a", 1]', '"a"', "[not json"])
def test_a_file_that_is_not_a_list_of_node_names_is_one_sentence(tmp_path, content):
    path = tmp_path / "targets.json"
    path.write_text(content)
    with pytest.raises(NodeRecoveryError) as err:
        targets_from_file(str(path), 0)
    assert str(err.value).startswith(("The nodes to act on could not be read from", f"{path} must hold a JSON list"))
    assert str(err.value).endswith("nothing was changed.")


def test_the_file_is_waited_for_by_a_real_sleep_too(tmp_path):
    path = tmp_path / "targets.json"
    writer = threading.Timer(0.2, lambda: path.write_text('["npu-a-0003"]'))
    writer.start()
    try:
        assert targets_from_file(str(path), 30) == ["npu-a-0003"]
    finally:
        writer.cancel()


def test_a_classification_narrowed_to_a_batch_names_what_it_does_not_hold_as_missing():
    classified = {"nodes": [{"name": "a", "health": "faulty"}, {"name": "b", "health": "faulty"}],
                  "paused": None, "cluster": {"id": "c"}}
    narrowed = of_names(classified, ["b", "gone"])
    assert narrowed["nodes"] == [{"name": "b", "health": "faulty"}]
    assert narrowed["missing_nodes"] == ["gone"] and narrowed["cluster"] == {"id": "c"}


@pytest.mark.parametrize("params, problem", [
    ({"classified": {}, "names": None, "targets_file": None, "targets": None}, "give names too"),
    ({"classified": None, "names": None, "targets_file": "/x", "targets": ["a"]}, "give one of them"),
    ({"classified": None, "names": None, "targets_file": "/x", "targets": None}, None),
    ({"classified": {}, "names": ["a"], "targets_file": None, "targets": []}, None),
])
def test_options_that_cannot_go_together_are_one_sentence(params, problem):
    found = option_problem(params)
    assert (found is None) if problem is None else (problem in found)


def test_a_batch_judged_from_the_plans_classification_builds_no_client():
    """The first batch is judged from the classification the plan made a moment ago: nothing is read, so no
    connection is made (a kubeconfig that does not exist would fail the moment one was)."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import default_catalog
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._classify import Options, classify_node
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._nodes import fault_summary, utcnow
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._run_plan import recovery_plan
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import Call
    from ansible_collections.ai_infra.node_recovery.plugins.modules.recovery_plan import SPEC
    from tests.unit.nodes import condition, node

    faulty = node("npu-a-0001", conditions=[condition("NT_NPU_CARD_LOSE", "True", age=600)])
    nodes = [classify_node(faulty, default_catalog(), Options(), utcnow())]
    summary = fault_summary(nodes)
    classified = {"nodes": nodes, "pools": summary["pools"], "domains": summary["domains"], "isolations": {},
                  "paused": None, "cluster": {"id": None, "server": "https://nowhere"}}
    validated = ArgumentSpecValidator(SPEC.full_argument_spec()).validate(
        {"names": ["npu-a-0001"], "classified": classified, "kubeconfig": "/nonexistent/kubeconfig"})
    assert not validated.error_messages
    call = Call(validated.validated_parameters)
    outcome = recovery_plan(call)
    assert call._client is None
    assert [n["name"] for n in outcome["plan"]["act"]] == ["npu-a-0001"] and not outcome["locked"]
