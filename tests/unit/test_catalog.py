"""Catalog loading and validation: a malformed catalog names the entry and field."""

from __future__ import annotations

import pytest

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import (
    CatalogError,
    default_catalog,
    load_catalog,
    parse_duration,
)

# The field notes' advice, except for one lost card: the node keeps serving on its other cards (issue 13).
FIELD_NOTES_TYPES = {"NT_NPU_DEVICE": "reboot_then_repair", "NT_NPU_NET": "reboot_then_repair",
                     "NT_NPU_CARD_LOSE": "restart_workloads", "NT_NPU_OTHER": "repair",
                     "NT_NPU_ECC_COUNT": "repair", "NT_NET_NTP_CHECK": "repair",
                     "NT_KUBE_DISK_READONLY_CHECK": "reboot_then_repair"}


def test_default_catalog_covers_modelarts_types_with_their_advice():
    catalog = default_catalog()
    for ctype, action in FIELD_NOTES_TYPES.items():
        assert catalog.lookup(ctype).action == action
    for ctype in ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable", "KernelDeadlock",
                  "ReadonlyFilesystem", "FrequentKubeletRestart", "GPUDeviceLost", "AllocatableCardLoss"):
        assert catalog.lookup(ctype) is not None, ctype
    assert catalog.lookup("Ready").fault_status == ("False", "Unknown")
    assert catalog.lookup("Ready").min_duration == 300


def test_override_changes_only_given_fields_and_adds_new_types():
    catalog = load_catalog(overrides=[{"type": "NT_NPU_NET", "action": "repair"},
                                      {"type": "NT_GPU_XID79", "action": "repair", "category": "gpu",
                                       "min_duration": "30s"}])
    assert catalog.lookup("NT_NPU_NET").action == "repair"
    assert catalog.lookup("NT_NPU_NET").category == "npu"  # kept from the default
    assert catalog.lookup("NT_GPU_XID79").min_duration == 30
    assert default_catalog().lookup("NT_NPU_NET").action == "reboot_then_repair"  # default untouched


def test_override_file_and_variable_in_order(tmp_path):
    path = tmp_path / "catalog.yml"
    path.write_text("defaults:\n  nt_unknown: fault\nfaults:\n  - {type: NT_NPU_NET, action: isolate}\n")
    catalog = load_catalog(overrides={"faults": [{"type": "NT_NPU_NET", "severity": "warning"}]}, path=str(path))
    entry = catalog.lookup("NT_NPU_NET")
    assert (entry.action, entry.severity) == ("isolate", "warning")
    assert catalog.nt_unknown == "fault"


def test_yaml_boolean_status_is_accepted():
    catalog = load_catalog(overrides=[{"type": "X", "action": "observe", "fault_status": [True]}])
    assert catalog.lookup("X").fault_status == ("True",)


@pytest.mark.parametrize("overrides, message", [
    ([{"type": "NT_X", "action": "reboot"}], "entry 1 (NT_X): action 'reboot' is not one of observe"),
    ([{"action": "repair"}], "entry 1: field 'type' (the condition type) is missing"),
    ([{"type": "NT_Y"}], "entry 1 (NT_Y): field 'action' is missing"),
    ([{"type": "NT_X", "action": "repair"}, {"type": "NT_Z", "action": "repair", "min_duration": "ten"}],
     "entry 2 (NT_Z): min_duration: 'ten' is not a duration"),
    ([{"type": "NT_X", "action": "repair", "category": "cpu"}], "category 'cpu' is not one of npu"),
    ([{"type": "NT_X", "action": "repair", "fault_status": ["Yes"]}], "fault_status 'Yes' is not one of"),
    ([{"type": "NT_X", "action": "repair", "colour": "red"}], "unknown field 'colour'"),
    (["NT_X"], "entry 1: must be a mapping"),
    ({"faults": [], "extra": 1}, "unknown top-level key 'extra'"),
    ({"defaults": {"nt_unknown": "maybe"}}, "nt_unknown 'maybe' is not one of suspect, fault, ignore"),
    ("just a string", "must be a list of entries or a mapping"),
])
def test_malformed_catalog_names_entry_and_field(overrides, message):
    with pytest.raises(CatalogError) as err:
        load_catalog(overrides=overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_malformed_file(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("faults: [ {type: X, action: repair\n")
    with pytest.raises(CatalogError, match="is not valid YAML"):
        load_catalog(path=str(bad))
    with pytest.raises(CatalogError, match="cannot read the fault catalog file"):
        load_catalog(path=str(tmp_path / "missing.yml"))


@pytest.mark.parametrize("text, seconds", [(90, 90), ("90", 90), ("90s", 90), ("5m", 300), ("1h30m", 5400),
                                           ("2h", 7200), ("0", 0)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "-1", "5 minutes", "1.5m", True, -3, None])
def test_parse_duration_rejects(text):
    with pytest.raises(CatalogError):
        parse_duration(text)


def test_catalog_reference_page_is_current():
    from tools.docs.__main__ import PAGE, render

    assert PAGE.read_text() == render(), "docs/fault_catalog.md is stale: run 'python -m tools.docs'"
