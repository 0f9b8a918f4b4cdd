"""A malformed fault catalog, whatever is wrong with it, is one CatalogError sentence naming the entry
and the field, never another exception.

Three ways in: a table of the mistakes people make (wrong types, unknown values, duplicates, files
that are not YAML), a walk that puts every wrong kind of value in every place of a valid catalog,
and seeded random documents and damaged catalog files.

No property-based library: the catalog's shape is small and known, so the walk over every place
and every kind of value covers it exhaustively and deterministically in well under a second, and
a failure names its case exactly; random generation (seeded here) adds the shapes nobody listed.
"""

from __future__ import annotations

import copy
import datetime as dt
import random

import pytest
import yaml

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _catalog
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._catalog import (
    DEFAULT_CATALOG,
    ENTRY_FIELDS,
    CatalogError,
    default_catalog,
    load_catalog,
)

OK = {"type": "NT_X", "action": "repair"}


def failure(overrides=None, path=None) -> str:
    """The message of the CatalogError load_catalog raises; any other exception fails the test."""
    with pytest.raises(CatalogError) as err:
        load_catalog(overrides=overrides, path=path)
    return one_sentence(str(err.value))


def one_sentence(message: str) -> str:
    assert message and "\n" not in message and "\r" not in message, message
    assert "Traceback" not in message and len(message) < 400, message
    return message


def entry(**fields) -> list[dict]:
    return [dict(OK, **fields)]


# (what is wrong, overrides, what the message must say)
MALFORMED = [
    # The document itself.
    ("top level a string", "NT_X: repair", "fault catalog variable: must be a list of entries or a mapping "
                                           "with 'faults' (and 'defaults'), not a string"),
    ("top level an empty string", "", "not a string"),
    ("top level a number", 3, "fault catalog variable: must be a list of entries or a mapping"),
    ("top level zero", 0, "not a number"),
    ("top level false", False, "not a boolean"),
    ("top level a list of strings", ["NT_X", "NT_Y"], "fault catalog variable entry 1: must be a mapping with at "
                                                      "least 'type' and 'action', not a string"),
    ("unknown top-level key", {"faults": [], "fault": []}, "unknown top-level key 'fault' (known: defaults, faults)"),
    ("top-level key a number", {"faults": [], 7: 1}, "unknown top-level key '7'"),
    ("faults a number", {"faults": 3}, "fault catalog variable: 'faults' must be a list of entries, not a number"),
    ("faults zero", {"faults": 0}, "'faults' must be a list of entries, not a number"),
    ("faults a mapping", {"faults": OK}, "'faults' must be a list of entries, not a mapping"),
    ("faults a string", {"faults": "NT_X"}, "'faults' must be a list of entries, not a string"),
    # An entry.
    ("entry a string", [OK, "NT_Y"], "fault catalog variable entry 2: must be a mapping"),
    ("entry a list", [["type", "NT_X"]], "entry 1: must be a mapping with at least 'type' and 'action', not a list"),
    ("entry null", [None], "entry 1: must be a mapping with at least 'type' and 'action', not null"),
    ("type missing", [{"action": "repair"}], "entry 1: field 'type' (the condition type) is missing"),
    ("type a list", entry(type=["NT_X"]), "entry 1: field 'type' (the condition type) must be a string, not a list"),
    ("type a mapping", entry(type={"name": "NT_X"}), "entry 1: field 'type' (the condition type) must be a string, "
                                                      "not a mapping"),
    ("type a number", entry(type=42), "entry 1: field 'type' (the condition type) must be a string, not a number"),
    ("type a boolean", entry(type=True), "entry 1: field 'type' (the condition type) must be a string, not a boolean"),
    ("type empty", entry(type=""), "entry 1: field 'type' (the condition type) is empty"),
    ("type blank", entry(type="  "), "entry 1: field 'type' (the condition type) is empty"),
    ("type with a newline", entry(type="NT_X\nNT_Y"), "entry 1: field 'type' 'NT_X\\nNT_Y' is not a condition type"),
    ("type with a space", entry(type="NT X"), "entry 1: field 'type' 'NT X' is not a condition type"),
    ("duplicate type", [OK, {"type": "NT_Y", "action": "observe"}, dict(OK, action="observe")],
     "entry 3 (NT_X): type 'NT_X' is already given by entry 1"),
    ("unknown field", entry(colour="red"), "entry 1 (NT_X): unknown field 'colour' (known: type, fault_status"),
    ("field name a number", entry(**{"severity": "major"}) + [{"type": "NT_Y", "action": "repair", 3: "x"}],
     "entry 2 (NT_Y): unknown field '3'"),
    ("action missing for a new type", [{"type": "NT_NEW"}], "entry 1 (NT_NEW): field 'action' is missing (one of "
                                                            "observe, restart_workloads, isolate, reboot_then_repair, "
                                                            "repair)"),
    ("action unknown", entry(action="reboot"), "entry 1 (NT_X): action 'reboot' is not one of observe, "
                                               "restart_workloads, isolate, reboot_then_repair, repair"),
    ("action a list", entry(action=["repair"]), "entry 1 (NT_X): action must be one of observe, "
                                                "restart_workloads, isolate, reboot_then_repair, repair, not a list"),
    ("action a number", entry(action=1), "entry 1 (NT_X): action must be one of observe"),
    ("action null", entry(action=None), "entry 1 (NT_X): action must be one of observe, restart_workloads, "
                                        "isolate, reboot_then_repair, repair, not null"),
    ("action with a newline", entry(action="repair\nnow"), "entry 1 (NT_X): action 'repair\\nnow' is not one of"),
    ("category unknown", entry(category="cpu"), "entry 1 (NT_X): category 'cpu' is not one of npu, gpu"),
    ("category a mapping", entry(category={"npu": 1}), "entry 1 (NT_X): category must be one of npu, gpu, network, "
                                                       "runtime, storage, node, not a mapping"),
    ("severity a number", entry(severity=3), "entry 1 (NT_X): severity must be one of info, warning, major, "
                                             "critical, not a number"),
    ("severity unknown", entry(severity="fatal"), "entry 1 (NT_X): severity 'fatal' is not one of info"),
    ("source a list", entry(source=["allocatable"]), "entry 1 (NT_X): source must be one of condition, allocatable, "
                                                     "dra, not a list"),
    ("source unknown", entry(source="dcmi"), "entry 1 (NT_X): source 'dcmi' is not one of condition, allocatable"),
    ("unknown policy a boolean", entry(unknown=False), "entry 1 (NT_X): unknown must be one of suspect, fault, "
                                                       "ignore, not a boolean"),
    ("unknown policy unknown", entry(unknown="maybe"), "entry 1 (NT_X): unknown 'maybe' is not one of suspect"),
    ("description a mapping", entry(description={"en": "x"}), "entry 1 (NT_X): description must be a string, "
                                                              "not a mapping"),
    ("fault_status a string", entry(fault_status="True"), "entry 1 (NT_X): fault_status must be a list of True, "
                                                          "False or Unknown (for example [\"True\"]), not a string"),
    ("fault_status a boolean", entry(fault_status=True), "entry 1 (NT_X): fault_status must be a list"),
    ("fault_status a mapping", entry(fault_status={"True": 1}), "fault_status must be a list of True, False or "
                                                                "Unknown (for example [\"True\"]), not a mapping"),
    ("fault_status empty", entry(fault_status=[]), "entry 1 (NT_X): fault_status must be a list of True, False or "
                                                   "Unknown (for example [\"True\"]), not an empty list"),
    ("fault_status numbers", entry(fault_status=[1, 0]), "entry 1 (NT_X): fault_status item 1 must be one of True, "
                                                         "False, Unknown, not a number"),
    ("fault_status a nested list", entry(fault_status=["True", ["False"]]), "entry 1 (NT_X): fault_status item 2 "
                                                                            "must be one of True, False, Unknown, "
                                                                            "not a list"),
    ("fault_status unknown", entry(fault_status=["Yes"]), "entry 1 (NT_X): fault_status 'Yes' is not one of True, "
                                                          "False, Unknown"),
    ("min_duration a list", entry(min_duration=["5m"]), "entry 1 (NT_X): min_duration must be a duration (use "
                                                        "seconds or a string like 90s, 5m, 1h), not a list"),
    ("min_duration a boolean", entry(min_duration=True), "entry 1 (NT_X): min_duration must be a duration"),
    ("min_duration null", entry(min_duration=None), "entry 1 (NT_X): min_duration must be a duration (use seconds "
                                                    "or a string like 90s, 5m, 1h), not null"),
    ("min_duration negative", entry(min_duration=-60), "entry 1 (NT_X): min_duration: '-60' is not a duration"),
    ("min_duration negative text", entry(min_duration="-5m"), "entry 1 (NT_X): min_duration: '-5m' is not a "
                                                              "duration"),
    ("min_duration a fraction", entry(min_duration=1.5), "entry 1 (NT_X): min_duration: '1.5' is not a duration"),
    ("min_duration words", entry(min_duration="5 minutes"), "entry 1 (NT_X): min_duration: '5 minutes' is not a "
                                                            "duration"),
    ("min_duration in days", entry(min_duration="2d"), "entry 1 (NT_X): min_duration: '2d' is not a duration"),
    ("min_duration beyond a week", entry(min_duration="169h"), "entry 1 (NT_X): min_duration '169h' is longer "
                                                               "than a week (at most 168h)"),
    ("min_duration huge", entry(min_duration=10 ** 30), "entry 1 (NT_X): min_duration '1000000000000000000000000"),
    ("min_duration a date", entry(min_duration=dt.date(2024, 1, 1)), "entry 1 (NT_X): min_duration must be a "
                                                                     "duration (use seconds or a string like 90s, "
                                                                     "5m, 1h), not a date"),
    # Overriding an entry of the default catalog: checked the same way.
    ("override with a wrong action", [{"type": "NT_NPU_NET", "action": "replace"}],
     "entry 1 (NT_NPU_NET): action 'replace' is not one of"),
    ("override with a wrong status", [{"type": "Ready", "fault_status": "False"}],
     "entry 1 (Ready): fault_status must be a list"),
    # Defaults.
    ("defaults a list", {"defaults": ["nt_unknown"]}, "fault catalog variable: 'defaults' must be a mapping (with "
                                                      "uncatalogued, nt_unknown, card_level), not a list"),
    ("defaults a string", {"defaults": "suspect"}, "'defaults' must be a mapping (with uncatalogued, nt_unknown, card_level), "
                                                   "not a string"),
    ("defaults unknown key", {"defaults": {"nt_unkown": "fault"}}, "fault catalog variable defaults: unknown key "
                                                                   "'nt_unkown' (known: uncatalogued, nt_unknown, card_level)"),
    ("uncatalogued a string", {"defaults": {"uncatalogued": "repair"}}, "fault catalog variable defaults."
                                                                        "uncatalogued must be a mapping of entry "
                                                                        "fields (such as action, severity, "
                                                                        "min_duration), not a string"),
    ("uncatalogued a list", {"defaults": {"uncatalogued": [["action", "repair"]]}},
     "defaults.uncatalogued must be a mapping of entry fields (such as action, severity, min_duration), not a list"),
    ("uncatalogued action unknown", {"defaults": {"uncatalogued": {"action": "rma"}}},
     "fault catalog variable defaults.uncatalogued: action 'rma' is not one of observe"),
    ("uncatalogued min_duration a mapping", {"defaults": {"uncatalogued": {"min_duration": {"m": 5}}}},
     "fault catalog variable defaults.uncatalogued: min_duration must be a duration"),
    ("uncatalogued with a type", {"defaults": {"uncatalogued": {"type": "NT_X", "action": "repair"}}},
     "fault catalog variable defaults.uncatalogued: unknown field 'type' (known: fault_status"),
    ("nt_unknown a number", {"defaults": {"nt_unknown": 1}}, "fault catalog variable defaults: nt_unknown must be "
                                                             "one of suspect, fault, ignore, not a number"),
    ("nt_unknown a list", {"defaults": {"nt_unknown": ["fault"]}}, "defaults: nt_unknown must be one of suspect, "
                                                                   "fault, ignore, not a list"),
    ("nt_unknown unknown", {"defaults": {"nt_unknown": "maybe"}}, "defaults: nt_unknown 'maybe' is not one of "
                                                                  "suspect, fault, ignore"),
    # A long value is cut, so the sentence stays short.
    ("a very long value", entry(action="x" * 5000), "action 'xxxxxxxx"),
]


@pytest.mark.parametrize("overrides, expected", [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED])
def test_malformed_catalog_is_one_sentence_naming_entry_and_field(overrides, expected):
    message = failure(overrides)
    assert expected in message


def test_a_failed_load_leaves_the_default_catalog_as_it_was():
    before = default_catalog()
    failure([{"type": "NT_NPU_NET", "action": "repair"}, {"type": "NT_NPU_NET", "action": "observe"}])
    failure({"defaults": {"nt_unknown": "fault", "uncatalogued": {"action": "bogus"}}})
    assert default_catalog() is before
    assert before.lookup("NT_NPU_NET").action == "reboot_then_repair"
    assert before.nt_unknown == "suspect" and before.uncatalogued.action == "repair"


@pytest.mark.parametrize("overrides", [None, [], {}, {"faults": None, "defaults": None}, {"faults": []},
                                       {"defaults": {"uncatalogued": None}}])
def test_empty_catalogs_change_nothing(overrides):
    assert load_catalog(overrides=overrides) == default_catalog()


def test_the_same_type_in_the_file_and_the_variable_is_an_override_not_a_duplicate(tmp_path):
    path = tmp_path / "site.yml"
    path.write_text("- {type: NT_X, action: isolate, severity: critical}\n")
    entry_ = load_catalog(overrides=[{"type": "NT_X", "action": "repair"}], path=str(path)).lookup("NT_X")
    assert (entry_.action, entry_.severity) == ("repair", "critical")


# -- files ---------------------------------------------------------------------------------------------------

# (what is wrong, file content, what the message must say after "fault catalog file '<path>'")
BAD_FILES = [
    ("not YAML", b"faults: [ {type: NT_X, action: repair\n", "is not valid YAML: "),
    ("tab indentation", b"faults:\n\t- {type: NT_X, action: repair}\n", "is not valid YAML: "),
    ("binary", bytes(range(256)) * 4, "is not valid YAML: "),
    ("invalid UTF-8", "faults: [{type: NT_\u00e9, action: repair}]".encode("latin-1"), "is not valid YAML: "),
    ("a Python tag", b"faults: !!python/object/apply:os.system [true]\n", "is not valid YAML: "),
    ("an impossible date", b"faults:\n  - {type: NT_X, action: repair, min_duration: 2024-13-45}\n",
     "is not valid YAML: month must be in 1..12"),
    ("a bad integer tag", b"faults:\n  - {type: NT_X, action: repair, min_duration: !!int ten}\n",
     "is not valid YAML: "),
    ("nested too deeply", b"[" * 5000 + b"]" * 5000, "is not valid YAML: "),
    ("a string", b"NT_X repair\n", ": must be a list of entries or a mapping with 'faults' (and 'defaults'), not a "
                                    "string"),
    ("a valid date as duration", b"- {type: NT_X, action: repair, min_duration: 2024-01-01}\n",
     "entry 1 (NT_X): min_duration must be a duration (use seconds or a string like 90s, 5m, 1h), not a date"),
    ("a set", b"faults: !!set {NT_X}\n", ": 'faults' must be a list of entries, not a set"),
    ("unquoted status", b"- {type: NT_X, action: repair, fault_status: yes}\n", "entry 1 (NT_X): fault_status must "
                                                                                 "be a list"),
]


@pytest.mark.parametrize("content, expected", [case[1:] for case in BAD_FILES], ids=[case[0] for case in BAD_FILES])
def test_malformed_file_is_one_sentence_naming_the_file(tmp_path, content, expected):
    path = tmp_path / "site catalog.yml"
    path.write_bytes(content)
    message = failure(path=str(path))
    assert f"'{path}'" in message
    assert expected in message


def test_yaml_problem_names_line_and_column(tmp_path):
    path = tmp_path / "catalog.yml"
    path.write_text("faults:\n  - {type: NT_X, action: repair}\n  - {type: NT_Y action: repair}\n")
    message = failure(path=str(path))
    assert message.startswith(f"the fault catalog file '{path}' is not valid YAML: ")
    assert "line 3, column" in message


def test_entry_of_a_file_is_named_with_the_file(tmp_path):
    path = tmp_path / "catalog.yml"
    path.write_text("faults:\n  - {type: NT_X, action: repair}\n  - {type: [NT_Y], action: repair}\n")
    assert failure(path=str(path)) == (f"fault catalog file '{path}' entry 2: field 'type' (the condition type) "
                                       "must be a string, not a list")


def test_unreadable_files(tmp_path):
    assert failure(path=str(tmp_path)) == f"cannot read the fault catalog file '{tmp_path}': Is a directory"
    missing = tmp_path / "missing.yml"
    assert failure(path=str(missing)) == f"cannot read the fault catalog file '{missing}': No such file or directory"
    inside_a_file = tmp_path / "plain"
    inside_a_file.write_text("x")
    assert failure(path=str(inside_a_file / "catalog.yml")).endswith(": Not a directory")


def test_files_that_are_no_catalog_at_all(tmp_path):
    huge = tmp_path / "huge.yml"
    with huge.open("wb") as handle:
        handle.truncate(_catalog.MAX_FILE_BYTES + 1)  # sparse: costs no disk
    assert failure(path=str(huge)) == f"the fault catalog file '{huge}' is larger than 16 MiB, which no catalog is"
    assert failure(path=f"{tmp_path}/a\x00b.yml") == (f"cannot read the fault catalog file '{tmp_path}/a\\x00b.yml': "
                                                     "embedded null byte")


@pytest.mark.parametrize("path, kind", [(3, "a number"), (["a.yml"], "a list"), ("", "an empty string"),
                                        (True, "a boolean")])
def test_catalog_file_that_is_not_a_path(path, kind):
    # A number would otherwise be opened as a file descriptor.
    assert failure(path=path) == f"catalog_file must be the path of a YAML file, not {kind}"


def test_file_with_newline_in_its_name_stays_one_line(tmp_path):
    path = tmp_path / "a\nb.yml"
    path.write_text("- {type: NT_X, action: nope}\n")
    message = failure(path=str(path))
    assert "a\\nb.yml" in message and "entry 1 (NT_X): action 'nope' is not one of" in message


def test_utf16_file_with_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "catalog.yml"
    path.write_bytes("- {type: NT_\u00c9CC, action: repair}\n".encode("utf-16"))
    assert load_catalog(path=str(path)).lookup("NT_\u00c9CC").action == "repair"


def test_empty_file_changes_nothing(tmp_path):
    path = tmp_path / "catalog.yml"
    path.write_text("# nothing yet\n")
    assert load_catalog(path=str(path)) == default_catalog()


# -- every wrong value in every place ------------------------------------------------------------------------

VALID = {
    "defaults": {"nt_unknown": "fault",
                 "uncatalogued": {"action": "isolate", "severity": "critical", "min_duration": "2m",
                                  "category": "node", "fault_status": ["True"], "unknown": "ignore",
                                  "description": "x", "source": "condition"}},
    "faults": [
        {"type": "NT_A", "action": "repair", "category": "npu", "severity": "major", "min_duration": 60,
         "fault_status": ["True", "Unknown"], "description": "a", "unknown": "fault", "source": "condition"},
        {"type": "NT_NPU_NET", "severity": "critical"},  # an override of a default entry
        {"type": "NT_C", "action": "observe"},
    ],
}

HOSTILE = [None, True, False, 0, -1, 1.5, float("nan"), 10 ** 30, "", " ", "x", "a\nb", "True", "5m", "repair",
           "NT_A", "\x00", "x" * 1000, [], [1], ["x"], [None], [[]], [{}], ["True", 1], {}, {"a": 1}, {1: 2},
           {"type": "NT_Z"}, {"type": "NT_Z", "action": "repair"}, dt.date(2024, 1, 1), b"bytes", {"x"}, ("t",)]


def places(document, path=()):
    """Every place in the document: (path, name of the field or section it is)."""
    yield path, path[-1] if path else "top"
    if isinstance(document, dict):
        for key, value in document.items():
            yield from places(value, path + (key,))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from places(value, path + (index,))


def put(document, path, value):
    changed = copy.deepcopy(document)
    if not path:
        return value
    target = changed
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return changed


def drop(document, path):
    changed = copy.deepcopy(document)
    target = changed
    for step in path[:-1]:
        target = target[step]
    del target[path[-1]]
    return changed


def expected_names(path, value) -> list[str | tuple[str, ...]]:
    """What a message about a mistake at path must name: the entry (by its position) and the field (a tuple:
    one of its words)."""
    if path in ((), ("faults",)) and isinstance(value, list):
        return ["entry "] if value else []  # a list of entries: the message is about one of them
    names = []
    if len(path) >= 2 and path[0] == "faults":
        names.append(f"entry {path[1] + 1}")
    if len(path) == 3 and path[2] == "type":  # another type may be a new one, which needs an action
        names.append(("'type'", "type '", "field 'action' is missing"))
    elif len(path) == 3 and (path[0] == "faults" or path[:2] == ("defaults", "uncatalogued")):
        names.append(str(path[2]))  # the field
    elif len(path) == 2 and path[0] == "defaults":
        names.append(str(path[1]))
    elif len(path) == 1:
        names.append(str(path[0]))
    return names


def mutations():
    assert load_catalog(overrides=VALID)  # the walk starts from a valid catalog
    for path, _name in places(VALID):
        for value in HOSTILE:
            yield f"{'.'.join(map(str, path)) or 'top'}={value!r:.20}", path, value, put(VALID, path, value)
        if path:
            yield f"{'.'.join(map(str, path))} removed", path, None, drop(VALID, path)
    for container in (("defaults",), ("defaults", "uncatalogued"), ("faults", 0), ()):
        yield f"{'.'.join(map(str, container))} with an unknown key", container, None, \
            put(VALID, container + ("surplus",), 1)


def test_every_wrong_value_in_every_place_is_one_sentence_naming_the_place():
    tried = failed = 0
    for case, path, value, document in mutations():
        tried += 1
        try:
            load_catalog(overrides=document)
        except CatalogError as err:
            failed += 1
            message = one_sentence(str(err))
            for name in expected_names(path, value):
                words = name if isinstance(name, tuple) else (name,)
                assert any(word in message for word in words), f"{case}: {message!r} does not name {name!r}"
        except Exception as err:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{case}: {type(err).__name__}: {err}")
    assert tried > 1000 and failed > tried * 0.8, (tried, failed)


# -- random documents ----------------------------------------------------------------------------------------

KEYS = ["defaults", "faults", "uncatalogued", "nt_unknown", *ENTRY_FIELDS, "extra", 1, None, True]
WORDS = ["NT_X", "NT_NPU_NET", "Ready", "repair", "observe", "isolate", "npu", "major", "True", "Unknown", "5m",
         "suspect", "condition", "allocatable", "", "x\ny", "1h30m", "-1"]


def random_value(rng: random.Random, depth: int):
    roll = rng.random()
    if depth <= 0 or roll < 0.45:
        return rng.choice([None, True, False, rng.randint(-5, 10 ** 6), rng.random() * 100, rng.choice(WORDS),
                           rng.choice(WORDS), "".join(rng.choice("NT_ax\n\t 0:{[") for _ in range(rng.randint(0, 8)))])
    if roll < 0.7:
        return [random_value(rng, depth - 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(KEYS): random_value(rng, depth - 1) for _ in range(rng.randint(0, 5))}


def random_entry(rng: random.Random) -> dict:
    """An entry that is often nearly right, so the checks behind the first ones are reached."""
    raw = {"type": rng.choice(["NT_X", "NT_Y", "Ready", "NT_NPU_NET"]), "action": rng.choice(["repair", "observe"])}
    for _ in range(rng.randint(0, 4)):
        raw[rng.choice(KEYS)] = random_value(rng, 2) if rng.random() < 0.6 else rng.choice(WORDS)
    return raw


@pytest.mark.parametrize("seed", range(8))
def test_random_documents_are_a_catalog_or_one_sentence(seed):
    rng = random.Random(seed)
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(400):
        shape = rng.random()
        if shape < 0.3:
            document = random_value(rng, 4)
        elif shape < 0.65:
            document = [random_entry(rng) for _ in range(rng.randint(1, 4))]
        else:
            document = {"faults": [random_entry(rng) for _ in range(rng.randint(0, 3))],
                        "defaults": {rng.choice(KEYS): random_value(rng, 2) for _ in range(rng.randint(0, 2))}}
        try:
            load_catalog(overrides=document)
            outcomes["loaded"] += 1
        except CatalogError as err:
            one_sentence(str(err))
            outcomes["refused"] += 1
        except Exception as err:  # noqa: BLE001 - the point of the test
            pytest.fail(f"seed {seed}: {type(err).__name__}: {err} for {document!r:.300}")
    assert outcomes["loaded"] and outcomes["refused"], outcomes


@pytest.mark.parametrize("seed", range(4))
def test_damaged_catalog_files_are_a_catalog_or_one_sentence(tmp_path, seed):
    """The shipped catalog's own text with a few characters deleted, doubled or replaced."""
    rng = random.Random(seed)
    text = DEFAULT_CATALOG.encode()
    path = tmp_path / "catalog.yml"
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(25):
        damaged = bytearray(text)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(damaged))
            how = rng.random()
            if how < 0.4:
                del damaged[at]
            elif how < 0.7:
                damaged.insert(at, damaged[at])
            else:
                damaged[at] = rng.choice(b"{}[]:,-\"'#\t\n 0aT\x00\xff")
        path.write_bytes(bytes(damaged))
        try:
            load_catalog(path=str(path), use_default=False)
            outcomes["loaded"] += 1
        except CatalogError as err:
            one_sentence(str(err))
            outcomes["refused"] += 1
        except Exception as err:  # noqa: BLE001 - the point of the test
            pytest.fail(f"seed {seed}: {type(err).__name__}: {err}")
    assert outcomes["refused"], outcomes


def test_the_shipped_catalog_passes_its_own_checks():
    catalog = _catalog._apply(_catalog._empty(), yaml.safe_load(DEFAULT_CATALOG), "default")
    assert catalog == default_catalog() and len(catalog.entries) == 32
