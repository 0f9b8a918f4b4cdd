"""Pure parts of the power cycle through a BMC: where the BMC and the system are, which reset is sent, and
when a node counts as back (no BMC, no cluster)."""

from __future__ import annotations

import json

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _power as p
from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _redfish as r
from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._errors import NodeRecoveryError


@pytest.mark.parametrize("address, system_id, expected", [
    ("10.0.8.3", None, ("https://10.0.8.3", None)),
    ("10.0.8.3:8443", "1", ("https://10.0.8.3:8443", "/redfish/v1/Systems/1")),
    ("http://bmc-7.example/", None, ("http://bmc-7.example", None)),
    ("https://bmc/redfish/v1/Systems/System.Embedded.1", None, ("https://bmc", "/redfish/v1/Systems/System.Embedded.1")),
    ("https://bmc/redfish/v1/Systems/1/", "1", ("https://bmc", "/redfish/v1/Systems/1")),
    ("https://bmc/redfish/v1", "a b", ("https://bmc", "/redfish/v1/Systems/a%20b")),
])
def test_the_bmc_and_its_system_from_an_address(address, system_id, expected):
    assert r.parse_target(address, system_id) == expected


@pytest.mark.parametrize("address, system_id, message", [
    ("", None, "no BMC address is known for the node: give bmc_address (or set the node's BMC annotation)"),
    ("ftp://bmc", None, "the BMC address 'ftp://bmc' is not a host name or an http(s) URL"),
    ("https://bmc/redfish/v1/Managers/1", None,
     "the BMC address 'https://bmc/redfish/v1/Managers/1' names no Redfish system (expected /redfish/v1/Systems/<id> "
     "or no path)"),
    ("https://bmc/redfish/v1/Systems/1", "2",
     "the BMC address 'https://bmc/redfish/v1/Systems/1' names system '1' but system_id is '2'"),
])
def test_a_bad_address_is_one_sentence(address, system_id, message):
    with pytest.raises(r.RedfishError) as err:
        r.parse_target(address, system_id)
    assert str(err.value) == message and isinstance(err.value, NodeRecoveryError)


def test_credentials_in_the_address_are_refused_without_being_repeated():
    with pytest.raises(r.RedfishError) as err:
        r.parse_target("https://root:calvin-secret@10.0.8.3/redfish/v1/Systems/1")
    assert "calvin-secret" not in str(err.value) and "bmc_user and bmc_password" in str(err.value)


@pytest.mark.parametrize("value, expected", [
    (None, {"address": None, "system": None}),
    ("https://10.0.8.3/redfish/v1/Systems/1", {"address": "https://10.0.8.3/redfish/v1/Systems/1", "system": None}),
    ('{"address": "10.0.8.3", "system": 1}', {"address": "10.0.8.3", "system": "1"}),
    ('{"address": "10.0.8.3"}', {"address": "10.0.8.3", "system": None}),
])
def test_the_bmc_annotation(value, expected):
    assert r.parse_annotation(value) == expected


@pytest.mark.parametrize("value", ['{"address": 3}', "{not json", '["10.0.8.3"]'])
def test_a_malformed_bmc_annotation_is_one_sentence(value):
    with pytest.raises(r.RedfishError, match="the node's BMC annotation"):
        r.parse_annotation(value)


SUSHY_ALLOWED = ["On", "ForceOff", "GracefulShutdown", "GracefulRestart", "ForceRestart", "Nmi", "ForceOn"]


@pytest.mark.parametrize("allowed, preferred, power_state, expected", [
    (SUSHY_ALLOWED, ["PowerCycle", "ForceRestart"], "On", "ForceRestart"),
    (SUSHY_ALLOWED + ["PowerCycle"], ["PowerCycle", "ForceRestart"], "On", "PowerCycle"),
    (None, ["PowerCycle", "ForceRestart"], "On", "PowerCycle"),  # a system that lists none offers every type
    (SUSHY_ALLOWED, ["PowerCycle", "ForceRestart"], "Off", "On"),  # a system that is off is powered on
    (["ForceOn", "ForceOff"], ["ForceRestart"], "Off", "ForceOn"),
])
def test_the_reset_type_is_the_first_preferred_one_offered(allowed, preferred, power_state, expected):
    assert r.choose_reset_type(allowed, preferred, power_state) == expected


def test_no_offered_reset_type_is_one_sentence():
    with pytest.raises(r.RedfishError) as err:
        r.choose_reset_type(["On", "ForceOff"], ["PowerCycle", "ForceRestart"], "On")
    assert str(err.value) == "the system offers none of the reset types PowerCycle, ForceRestart (it offers On, ForceOff)"


def test_the_reset_action_of_a_system():
    system = {"Id": "1", "Actions": {"#ComputerSystem.Reset": {
        "target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset", "ResetType@Redfish.AllowableValues": ["On"]}}}
    assert r.reset_action(system) == ("/redfish/v1/Systems/1/Actions/ComputerSystem.Reset", ["On"])
    with pytest.raises(r.RedfishError, match="offers no ComputerSystem.Reset action"):
        r.reset_action({"Id": "1", "Actions": {}})


def kubelet(ready="True", since="2026-12-01T10:00:00Z", boot_id=None, unreachable=False) -> dict:
    node = {"metadata": {"name": "n1"}, "spec": {}, "status": {
        "conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": since}],
        "nodeInfo": {"bootID": boot_id or ""}}}
    if unreachable:
        node["spec"]["taints"] = [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]
    return node


def test_readiness_takes_the_unreachable_taint_as_unknown():
    assert p.readiness(kubelet(boot_id="b1")) == {"ready": "True", "since": "2026-12-01T10:00:00Z", "boot_id": "b1"}
    assert p.readiness(kubelet(unreachable=True))["ready"] == "Unknown"
    assert p.readiness({"metadata": {}, "status": {}}) == {"ready": "Unknown", "since": None, "boot_id": None}


RESET_AT = "2026-12-01T12:00:00Z"


@pytest.mark.parametrize("before, now, seen_not_ready, expected", [
    # With a boot id: back only when Ready with a new one.
    (kubelet("Unknown", boot_id="b1"), kubelet("True", boot_id="b1"), True, False),
    (kubelet("Unknown", boot_id="b1"), kubelet("True", boot_id="b2"), True, True),
    (kubelet("Unknown", boot_id="b1"), kubelet("Unknown", boot_id="b2"), True, False),
    (kubelet("Unknown", boot_id="b1"), kubelet("True", boot_id=None), True, False),
    # Without one: Ready again after the reset.
    (kubelet("True"), kubelet("True", since="2026-12-01T10:00:00Z"), False, False),
    (kubelet("True"), kubelet("True", since="2026-12-01T10:00:00Z"), True, True),
    (kubelet("Unknown"), kubelet("True", since="2026-12-01T12:00:05Z"), False, True),
])
def test_a_node_is_back_when_ready_with_a_new_boot_id(before, now, seen_not_ready, expected):
    assert p.back(p.readiness(before), p.readiness(now), RESET_AT, seen_not_ready) is expected


def test_the_bmc_comes_from_the_options_before_the_annotation():
    node = kubelet()
    node["metadata"]["annotations"] = {v.BMC: json.dumps({"address": "10.0.8.3", "system": "7"})}
    assert p.bmc_target({"bmc_address": "https://bmc-x"}, node) == ("https://bmc-x", None, "bmc_address")
    assert p.bmc_target({}, node) == ("https://10.0.8.3", "/redfish/v1/Systems/7", f"annotation {v.BMC}")
    assert p.bmc_target({"bmc_system_id": "8"}, node)[1] == "/redfish/v1/Systems/8"
    with pytest.raises(p.PowerError, match=f"node 'n1' has no BMC address: give bmc_address or annotate the node with {v.BMC}"):
        p.bmc_target({}, kubelet())


def test_the_password_option_is_never_logged():
    assert p.POWER_ARG_SPEC["bmc_password"]["no_log"] is True
