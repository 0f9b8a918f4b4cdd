# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

The fault catalog: which node signals are faults, and what each one calls for.
It is data (DEFAULT_CATALOG below, documented in docs/fault_catalog.md); users
extend or override it entry by entry with a YAML file or a variable.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import Any

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._errors import NodeRecoveryError
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._vocabulary import (
    ACTIONS,
    CARD_LOSS_TYPE,
    CATEGORIES,
    SEVERITIES,
)

DEFAULT_CATALOG = r"""
defaults:
  # An NT_* condition that is True but not listed below is still a fault.
  uncatalogued: {action: repair, severity: major, min_duration: 1m}
  # How an Unknown NT_* condition counts when its entry does not say: suspect | fault | ignore.
  nt_unknown: suspect
  # Faults whose action is restart_workloads are handled card by card (the node stays in service) while the node has
  # lost at most max_lost_cards of its cards (a count, or a share like 25%) and has had at most max_card_losses card
  # losses within card_loss_window (this one included); beyond either, the node gets escalate_to instead.
  card_level: {max_lost_cards: 2, max_card_losses: 2, card_loss_window: 168h, escalate_to: reboot_then_repair}
faults:
  # ModelArts node-agent checks (NodeCondition types written on every NPU/GPU node).
  - {type: NT_NPU_DEVICE, category: npu, severity: major, action: reboot_then_repair, min_duration: 1m,
     description: "dcmi reports an important or urgent NPU device alarm; may be sub-health: reboot first, repair if it persists"}
  - {type: NT_NPU_NET, category: npu, severity: major, action: reboot_then_repair, min_duration: 1m,
     description: "NPU network link abnormal; reboot first, repair if it persists"}
  - {type: NT_NPU_CARD_LOSE, category: npu, severity: critical, action: restart_workloads, min_duration: 1m,
     description: "the flavor's NPU count differs from the schedulable cards on the node; the node keeps serving on its
       other cards, the work that used the lost one is restarted"}
  - {type: NT_NPU_OTHER, category: npu, severity: critical, action: repair, min_duration: 1m,
     description: "other NPU error, usually not self-correctable; repair"}
  - {type: NT_NPU_ECC_COUNT, category: npu, severity: critical, action: repair, min_duration: 1m,
     description: "multi-bit ECC isolated-address records of the NPU HBM reached the repair threshold (64); repair"}
  - {type: NT_NET_NTP_CHECK, category: runtime, severity: major, action: repair, min_duration: 1m,
     description: "ntpd or chronyd abnormal; repair"}
  - {type: NT_KUBE_DISK_READONLY_CHECK, category: storage, severity: critical, action: reboot_then_repair,
     min_duration: 1m, description: "the kubelet directory is read-only; reboot first, repair if it persists"}

  # Device-plugin: fewer allocatable accelerators than expected (card loss before any condition flips).
  - {type: AllocatableCardLoss, source: allocatable, category: npu, severity: critical, action: restart_workloads,
     description: "the device-plugin reports fewer usable accelerators than the flavor has; the node keeps serving on
       its other cards, the work that used the lost ones is restarted"}

  # DRA: a driver's taint (NoSchedule or NoExecute) on devices of the node in its ResourceSlice.
  - {type: DRADeviceTaint, source: dra, category: node, severity: critical, action: restart_workloads,
     description: "a DRA driver tainted devices of the node in its ResourceSlice; the node keeps serving on its other
       devices, each tainted device is isolated with a DeviceTaintRule and the work that held it is restarted"}

  # Kubernetes standard conditions.
  - {type: Ready, fault_status: ["False", "Unknown"], category: node, severity: critical, action: reboot_then_repair,
     min_duration: 5m, description: "the kubelet reports NotReady or stopped posting status"}
  - {type: MemoryPressure, category: node, severity: warning, action: observe, min_duration: 5m,
     description: "memory pressure; the kubelet evicts pods by itself"}
  - {type: DiskPressure, category: storage, severity: warning, action: observe, min_duration: 5m,
     description: "disk pressure; the kubelet evicts pods by itself"}
  - {type: PIDPressure, category: node, severity: warning, action: observe, min_duration: 5m,
     description: "process ID pressure; the kubelet evicts pods by itself"}
  - {type: NetworkUnavailable, category: network, severity: major, action: isolate, min_duration: 2m,
     description: "the node's network is not configured"}

  # Node Problem Detector.
  - {type: KernelDeadlock, category: node, severity: critical, action: reboot_then_repair, min_duration: 1m,
     description: "kernel deadlock (task hung); reboot first, repair if it persists"}
  - {type: ReadonlyFilesystem, category: storage, severity: critical, action: reboot_then_repair, min_duration: 1m,
     description: "a filesystem was remounted read-only"}
  - {type: FrequentKubeletRestart, category: runtime, severity: major, action: isolate, min_duration: 5m,
     description: "the kubelet restarts frequently"}
  - {type: FrequentContainerdRestart, category: runtime, severity: major, action: isolate, min_duration: 5m,
     description: "containerd restarts frequently"}
  - {type: FrequentDockerRestart, category: runtime, severity: major, action: isolate, min_duration: 5m,
     description: "docker restarts frequently"}
  - {type: CorruptDockerOverlay2, category: storage, severity: major, action: isolate, min_duration: 1m,
     description: "corrupt overlay2 storage"}

  # GPU health checks (Node Problem Detector GPU plugins of managed Kubernetes services).
  - {type: GPUDeviceLost, category: gpu, severity: critical, action: reboot_then_repair, min_duration: 1m,
     description: "a GPU fell off the bus or cannot be found"}
  - {type: GPUDoubleBitEccError, category: gpu, severity: critical, action: repair, min_duration: 1m,
     description: "uncorrectable (double-bit) ECC error in GPU memory"}
  - {type: GPUHighSingleBitEccError, category: gpu, severity: major, action: repair, min_duration: 1m,
     description: "single-bit ECC errors above the threshold"}
  - {type: GPURemappingRowsError, category: gpu, severity: critical, action: repair, min_duration: 1m,
     description: "GPU memory row remapping failed"}
  - {type: GPUPendingRetiredPages, category: gpu, severity: major, action: reboot_then_repair, min_duration: 1m,
     description: "GPU pages pending retirement; a reset applies them"}
  - {type: GPUXIDFatalError, category: gpu, severity: critical, action: repair, min_duration: 1m,
     description: "fatal XID error reported by the NVIDIA driver"}
  - {type: GPUXIDWarningError, category: gpu, severity: warning, action: reboot_then_repair, min_duration: 1m,
     description: "XID error that a reset usually clears"}
  - {type: GPUNvlinkError, category: gpu, severity: major, action: reboot_then_repair, min_duration: 1m,
     description: "NVLink errors between GPUs"}
  - {type: GPUPCIeError, category: gpu, severity: major, action: reboot_then_repair, min_duration: 1m,
     description: "PCIe errors on a GPU link"}
  - {type: GPUInfoROMCorrupted, category: gpu, severity: major, action: repair, min_duration: 1m,
     description: "GPU InfoROM corrupted"}
  - {type: GPUPowerError, category: gpu, severity: critical, action: repair, min_duration: 1m,
     description: "GPU power fault"}
  - {type: GPUTempError, category: gpu, severity: major, action: isolate, min_duration: 1m,
     description: "GPU over temperature"}
"""

ENTRY_FIELDS = ("type", "fault_status", "category", "severity", "action", "min_duration", "description",
                "unknown", "source")
UNCATALOGUED_FIELDS = tuple(field for field in ENTRY_FIELDS if field != "type")
TOP_LEVEL_KEYS = ("defaults", "faults")
DEFAULTS_KEYS = ("uncatalogued", "nt_unknown", "card_level")
CARD_LEVEL_KEYS = ("max_lost_cards", "max_card_losses", "card_loss_window", "escalate_to")
CARD_LEVEL_ACTION = "restart_workloads"
UNKNOWN_POLICIES = ("suspect", "fault", "ignore")
SOURCES = ("condition", "allocatable", "dra")
CONDITION_STATUSES = ("True", "False", "Unknown")
# A week: a longer wait before a fault counts is a typo (and a wait past ~292 years overflows a timer).
MAX_MIN_DURATION = 7 * 24 * 3600
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")
_CHOICES = {"action": ACTIONS, "category": CATEGORIES, "severity": SEVERITIES, "unknown": UNKNOWN_POLICIES,
            "source": SOURCES}
_SHOWN = 60  # characters of a value quoted in a message
MAX_FILE_BYTES = 16 * 2 ** 20


class CatalogError(NodeRecoveryError, ValueError):
    """The catalog is malformed; str() is one sentence naming the entry and the field."""


@dataclass(frozen=True)
class FaultEntry:
    type: str
    action: str
    category: str = "node"
    severity: str = "major"
    fault_status: tuple[str, ...] = ("True",)
    min_duration: int = 0  # seconds since lastTransitionTime before the fault counts
    description: str = ""
    unknown: str | None = None  # None: the catalog's nt_unknown for NT_*, otherwise ignore
    source: str = "condition"


@dataclass(frozen=True)
class CardLevel:
    """When card-level handling (restart_workloads) gives way to a node-level action."""

    max_lost_cards: str = "2"  # a count or a share of the node's cards ("25%")
    max_card_losses: int = 2
    card_loss_window: int = 7 * 86400
    escalate_to: str = "reboot_then_repair"

    def allowed_lost(self, expected: int) -> int:
        text = self.max_lost_cards
        return expected * int(text[:-1]) // 100 if text.endswith("%") else int(text)


@dataclass(frozen=True)
class Catalog:
    entries: dict[str, FaultEntry]
    uncatalogued: FaultEntry
    nt_unknown: str
    card_level: CardLevel = CardLevel()

    def lookup(self, condition_type: str) -> FaultEntry | None:
        return self.entries.get(condition_type)

    def as_list(self) -> list[dict[str, Any]]:
        return [entry.__dict__ | {"fault_status": list(entry.fault_status)} for entry in self.entries.values()]


def _kind(value: Any) -> str:
    """What a value is, in the words of YAML: 'a list', 'a number', 'null'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def _show(value: Any, limit: int | None = _SHOWN) -> str:
    """A value quoted for a message: one line (control characters escaped), at most limit characters."""
    text = value if isinstance(value, str) else repr(value)
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    if limit is not None and len(text) > limit:
        text = text[:limit - 3] + "..."
    return f"'{text}'"


def _show_path(path: Any) -> str:
    """A file's path for a message: whole, on one line."""
    return _show(os.fsdecode(path), limit=None)


def parse_duration(value: Any, where: str = "duration") -> int:
    """Seconds from 90, '90', '90s', '5m', '1h30m'; CatalogError otherwise."""
    hint = "use seconds or a string like 90s, 5m, 1h"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise CatalogError(f"{where} must be a duration ({hint}), not {_kind(value)}")
    if isinstance(value, int) and value >= 0:
        return value
    match = _DURATION.match(value.strip()) if isinstance(value, str) and value.strip() else None
    if not match or not any(match.groups()):
        raise CatalogError(f"{where}: {_show(value)} is not a duration ({hint})")
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _check_choice(value: Any, choices: tuple[str, ...], where: str, field: str) -> str:
    if not isinstance(value, str):
        raise CatalogError(f"{where}: {field} must be one of {', '.join(choices)}, not {_kind(value)}")
    if value not in choices:
        raise CatalogError(f"{where}: {field} {_show(value)} is not one of {', '.join(choices)}")
    return value


def _unknown_key(mapping: dict, known: tuple[str, ...]) -> Any:
    """The first key of mapping that is not known (keys of any type, in a stable order), or None."""
    unknown = sorted((key for key in mapping if key not in known), key=lambda key: (str(type(key)), str(key)))
    return unknown[0] if unknown else None


def _condition_type(raw: dict, where: str) -> str:
    ctype = raw.get("type")
    if ctype is None:
        raise CatalogError(f"{where}: field 'type' (the condition type) is missing")
    if not isinstance(ctype, str):
        raise CatalogError(f"{where}: field 'type' (the condition type) must be a string, not {_kind(ctype)}")
    if not ctype.strip():
        raise CatalogError(f"{where}: field 'type' (the condition type) is empty")
    if any(ch.isspace() or not ch.isprintable() for ch in ctype):
        raise CatalogError(f"{where}: field 'type' {_show(ctype)} is not a condition type "
                           "(it has spaces or control characters)")
    return ctype


def _fields(raw: dict, where: str, known: tuple[str, ...]) -> dict[str, Any]:
    """The fields of one entry (or of defaults.uncatalogued), each checked; CatalogError names the first wrong one."""
    unknown = _unknown_key(raw, known)
    if unknown is not None:
        raise CatalogError(f"{where}: unknown field {_show(unknown)} (known: {', '.join(known)})")
    fields: dict[str, Any] = {}
    for field, choices in _CHOICES.items():
        if field in raw:
            fields[field] = _check_choice(raw[field], choices, where, field)
    if "min_duration" in raw:
        seconds = parse_duration(raw["min_duration"], f"{where}: min_duration")
        if seconds > MAX_MIN_DURATION:
            raise CatalogError(f"{where}: min_duration {_show(raw['min_duration'])} is longer than a week "
                               f"(at most {MAX_MIN_DURATION // 3600}h)")
        fields["min_duration"] = seconds
    if "description" in raw:
        if not isinstance(raw["description"], str):
            raise CatalogError(f"{where}: description must be a string, not {_kind(raw['description'])}")
        fields["description"] = raw["description"]
    if "fault_status" in raw:
        fields["fault_status"] = _statuses(raw["fault_status"], where)
    return fields


def _statuses(statuses: Any, where: str) -> tuple[str, ...]:
    expected = "a list of True, False or Unknown (for example [\"True\"])"
    if not isinstance(statuses, list):
        raise CatalogError(f"{where}: fault_status must be {expected}, not {_kind(statuses)}")
    if not statuses:
        raise CatalogError(f"{where}: fault_status must be {expected}, not an empty list")
    normalised = []
    for number, status in enumerate(statuses, 1):
        if isinstance(status, bool):  # YAML reads an unquoted True as a boolean: take it as the status
            status = "True" if status else "False"
        if not isinstance(status, str):
            raise CatalogError(f"{where}: fault_status item {number} must be one of "
                               f"{', '.join(CONDITION_STATUSES)}, not {_kind(status)}")
        normalised.append(_check_choice(status, CONDITION_STATUSES, where, "fault_status"))
    return tuple(normalised)


def _sections(document: Any, origin: str) -> tuple[dict, list]:
    where = f"fault catalog {origin}"
    if document is None:
        return {}, []
    if isinstance(document, list):
        return {}, document
    if not isinstance(document, dict):
        raise CatalogError(f"{where}: must be a list of entries or a mapping with 'faults' (and 'defaults'), "
                           f"not {_kind(document)}")
    unknown = _unknown_key(document, TOP_LEVEL_KEYS)
    if unknown is not None:
        raise CatalogError(f"{where}: unknown top-level key {_show(unknown)} (known: {', '.join(TOP_LEVEL_KEYS)})")
    defaults = document.get("defaults")
    faults = document.get("faults")
    if defaults is not None and not isinstance(defaults, dict):
        raise CatalogError(f"{where}: 'defaults' must be a mapping (with {', '.join(DEFAULTS_KEYS)}), "
                           f"not {_kind(defaults)}")
    if faults is not None and not isinstance(faults, list):
        raise CatalogError(f"{where}: 'faults' must be a list of entries, not {_kind(faults)}")
    return defaults or {}, faults or []


def _apply(catalog: Catalog, document: Any, origin: str) -> Catalog:
    """The catalog with one document (a file's or the variable's) applied: every entry checked before any is used."""
    defaults, faults = _sections(document, origin)
    entries = dict(catalog.entries)
    first_index: dict[str, int] = {}
    for index, raw in enumerate(faults, 1):
        where = f"fault catalog {origin} entry {index}"
        if not isinstance(raw, dict):
            raise CatalogError(f"{where}: must be a mapping with at least 'type' and 'action', not {_kind(raw)}")
        ctype = _condition_type(raw, where)
        where = f"{where} ({_show(ctype)[1:-1]})"
        if ctype in first_index:
            raise CatalogError(f"{where}: type {_show(ctype)} is already given by entry {first_index[ctype]} "
                               "(give each type once)")
        first_index[ctype] = index
        fields = _fields(raw, where, ENTRY_FIELDS)
        base = entries.get(ctype)
        if base is None and "action" not in fields:
            raise CatalogError(f"{where}: field 'action' is missing (one of {', '.join(ACTIONS)})")
        entries[ctype] = replace(base, **fields) if base is not None else FaultEntry(type=ctype, **fields)
    where = f"fault catalog {origin} defaults"
    unknown = _unknown_key(defaults, DEFAULTS_KEYS)
    if unknown is not None:
        raise CatalogError(f"{where}: unknown key {_show(unknown)} (known: {', '.join(DEFAULTS_KEYS)})")
    uncatalogued = catalog.uncatalogued
    raw = defaults.get("uncatalogued")
    if raw is not None:
        if not isinstance(raw, dict):
            raise CatalogError(f"{where}.uncatalogued must be a mapping of entry fields (such as action, severity, "
                               f"min_duration), not {_kind(raw)}")
        uncatalogued = replace(uncatalogued, **_fields(raw, f"{where}.uncatalogued", UNCATALOGUED_FIELDS))
    nt_unknown = catalog.nt_unknown
    if "nt_unknown" in defaults:
        nt_unknown = _check_choice(defaults["nt_unknown"], UNKNOWN_POLICIES, where, "nt_unknown")
    card_level = catalog.card_level
    if defaults.get("card_level") is not None:
        card_level = _card_level(card_level, defaults["card_level"], f"{where}.card_level")
    return Catalog(entries=entries, uncatalogued=uncatalogued, nt_unknown=nt_unknown, card_level=card_level)


def _card_level(base: CardLevel, raw: Any, where: str) -> CardLevel:
    if not isinstance(raw, dict):
        raise CatalogError(f"{where} must be a mapping (with {', '.join(CARD_LEVEL_KEYS)}), not {_kind(raw)}")
    unknown = _unknown_key(raw, CARD_LEVEL_KEYS)
    if unknown is not None:
        raise CatalogError(f"{where}: unknown key {_show(unknown)} (known: {', '.join(CARD_LEVEL_KEYS)})")
    fields: dict[str, Any] = {}
    if "max_lost_cards" in raw:
        value = raw["max_lost_cards"]
        text = str(value).strip() if not isinstance(value, bool) and isinstance(value, (int, str)) else ""
        if not re.fullmatch(r"\d+%?", text) or (text.endswith("%") and int(text[:-1]) > 100):
            raise CatalogError(f"{where}: max_lost_cards {_show(value)} is neither a count (like 2) nor a share "
                               "of the node's cards (like 25%)")
        fields["max_lost_cards"] = text
    if "max_card_losses" in raw:
        value = raw["max_card_losses"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CatalogError(f"{where}: max_card_losses must be a whole number of 1 or more, not {_show(value)}")
        fields["max_card_losses"] = value
    if "card_loss_window" in raw:
        fields["card_loss_window"] = parse_duration(raw["card_loss_window"], f"{where}: card_loss_window")
    if "escalate_to" in raw:
        node_level = tuple(a for a in ACTIONS if a not in ("observe", CARD_LEVEL_ACTION))
        fields["escalate_to"] = _check_choice(raw["escalate_to"], node_level, where, "escalate_to")
    return replace(base, **fields)


_DEFAULT: Catalog | None = None


def _empty() -> Catalog:
    return Catalog(entries={}, uncatalogued=FaultEntry(type="*", action="repair"), nt_unknown="suspect")


def default_catalog() -> Catalog:
    global _DEFAULT
    if _DEFAULT is None:
        import yaml

        # Every module task parses it in a fresh worker: libyaml's parser takes 2 ms where Python's takes 40.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        _DEFAULT = _apply(_empty(), yaml.load(DEFAULT_CATALOG, Loader=loader), "default")
    return _DEFAULT


def _yaml_problem(err: Exception) -> str:
    """One line about why a text is not YAML: the parser's problem and where, or the error itself."""
    problem, mark = getattr(err, "problem", None), getattr(err, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(err).split()) or type(err).__name__


def read_catalog_file(path: Any) -> Any:
    """The YAML document of a catalog file; CatalogError (one sentence) for anything that is not one."""
    import yaml

    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        shown = "an empty string" if isinstance(path, str) else _kind(path)
        raise CatalogError(f"catalog_file must be the path of a YAML file, not {shown}")
    try:
        with open(path, "rb") as handle:
            text = handle.read(MAX_FILE_BYTES + 1)  # a catalog is kilobytes, an endless device is not one
    except (OSError, ValueError) as err:  # ValueError: a NUL in the path
        reason = getattr(err, "strerror", None) or " ".join(str(err).split()) or type(err).__name__
        raise CatalogError(f"cannot read the fault catalog file {_show_path(path)}: {reason}") from None
    if len(text) > MAX_FILE_BYTES:
        raise CatalogError(f"the fault catalog file {_show_path(path)} is larger than "
                           f"{MAX_FILE_BYTES // 2 ** 20} MiB, which no catalog is")
    try:
        # Bytes: the parser finds the encoding (UTF-8, or UTF-16 with a byte order mark) and names bad bytes.
        return yaml.safe_load(text)
    except RecursionError:
        raise CatalogError(f"the fault catalog file {_show_path(path)} is not valid YAML: "
                           "it nests too deeply") from None
    except Exception as err:  # the parser fails in many ways (YAMLError, ValueError for a date like 2024-13-45)
        raise CatalogError(f"the fault catalog file {_show_path(path)} is not valid YAML: "
                           f"{_yaml_problem(err)}") from None


def load_catalog(overrides: Any = None, path: Any = None, use_default: bool = True) -> Catalog:
    """The default catalog, then the file at path, then the overrides variable (list or mapping).

    Whatever the data, the only exception is CatalogError, whose message is one sentence naming the
    entry (by position and type) and the field."""
    catalog = default_catalog() if use_default else _empty()
    if path is not None:
        catalog = _apply(catalog, read_catalog_file(path), f"file {_show_path(path)}")
    if overrides is not None:
        catalog = _apply(catalog, overrides, "variable")
    return catalog


def category_for(condition_type: str) -> str:
    """Category of an uncatalogued NT_* condition, from its name."""
    upper = condition_type.upper()
    if "_NPU_" in upper:
        return "npu"
    if "_GPU_" in upper:
        return "gpu"
    if "_NET_" in upper or "_NETWORK" in upper:
        return "network"
    if "DISK" in upper or "_FS_" in upper:
        return "storage"
    return "runtime"


__all__ = ["CARD_LEVEL_ACTION", "CARD_LOSS_TYPE", "CardLevel", "Catalog", "CatalogError", "FaultEntry", "category_for",
           "default_catalog", "load_catalog", "parse_duration"]
