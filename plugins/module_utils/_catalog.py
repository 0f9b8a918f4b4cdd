# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

The fault catalog: which node signals are faults, and what each one calls for.
It is data (DEFAULT_CATALOG below, documented in docs/fault_catalog.md); users
extend or override it entry by entry with a YAML file or a variable.
"""

from __future__ import annotations

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
faults:
  # ModelArts node-agent checks (NodeCondition types written on every NPU/GPU node).
  - {type: NT_NPU_DEVICE, category: npu, severity: major, action: reboot_then_repair, min_duration: 1m,
     description: "dcmi reports an important or urgent NPU device alarm; may be sub-health: reboot first, repair if it persists"}
  - {type: NT_NPU_NET, category: npu, severity: major, action: reboot_then_repair, min_duration: 1m,
     description: "NPU network link abnormal; reboot first, repair if it persists"}
  - {type: NT_NPU_CARD_LOSE, category: npu, severity: critical, action: reboot_then_repair, min_duration: 1m,
     description: "the flavor's NPU count differs from the schedulable cards on the node; reboot first, repair if it persists"}
  - {type: NT_NPU_OTHER, category: npu, severity: critical, action: repair, min_duration: 1m,
     description: "other NPU error, usually not self-correctable; repair"}
  - {type: NT_NPU_ECC_COUNT, category: npu, severity: critical, action: repair, min_duration: 1m,
     description: "multi-bit ECC isolated-address records of the NPU HBM reached the repair threshold (64); repair"}
  - {type: NT_NET_NTP_CHECK, category: runtime, severity: major, action: repair, min_duration: 1m,
     description: "ntpd or chronyd abnormal; repair"}
  - {type: NT_KUBE_DISK_READONLY_CHECK, category: storage, severity: critical, action: reboot_then_repair,
     min_duration: 1m, description: "the kubelet directory is read-only; reboot first, repair if it persists"}

  # Device-plugin: fewer allocatable accelerators than expected (card loss before any condition flips).
  - {type: AllocatableCardLoss, source: allocatable, category: npu, severity: critical, action: reboot_then_repair,
     description: "the device-plugin reports fewer usable accelerators than the flavor has; reboot first, repair if it persists"}

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
UNKNOWN_POLICIES = ("suspect", "fault", "ignore")
SOURCES = ("condition", "allocatable")
CONDITION_STATUSES = ("True", "False", "Unknown")
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")


class CatalogError(NodeRecoveryError, ValueError):
    """The catalog is malformed; str() names the entry and the field."""


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
class Catalog:
    entries: dict[str, FaultEntry]
    uncatalogued: FaultEntry
    nt_unknown: str

    def lookup(self, condition_type: str) -> FaultEntry | None:
        return self.entries.get(condition_type)

    def as_list(self) -> list[dict[str, Any]]:
        return [entry.__dict__ | {"fault_status": list(entry.fault_status)} for entry in self.entries.values()]


def parse_duration(value: Any, where: str = "duration") -> int:
    """Seconds from 90, '90', '90s', '5m', '1h30m'; CatalogError otherwise."""
    if isinstance(value, bool):
        raise CatalogError(f"{where}: '{value}' is not a duration (use seconds or a string like 90s, 5m, 1h)")
    if isinstance(value, int) and value >= 0:
        return value
    match = _DURATION.match(str(value).strip()) if isinstance(value, str) and value.strip() else None
    if not match or not any(match.groups()):
        raise CatalogError(f"{where}: '{value}' is not a duration (use seconds or a string like 90s, 5m, 1h)")
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _check_choice(value: Any, choices: tuple[str, ...], where: str, field: str) -> str:
    if value not in choices:
        raise CatalogError(f"{where}: {field} '{value}' is not one of {', '.join(choices)}")
    return value


def _entry(raw: Any, index: int, base: FaultEntry | None, origin: str) -> FaultEntry:
    where = f"fault catalog {origin} entry {index + 1}"
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: must be a mapping with at least 'type' and 'action', not {type(raw).__name__}")
    ctype = raw.get("type")
    if not isinstance(ctype, str) or not ctype.strip():
        raise CatalogError(f"{where}: field 'type' (the condition type) is missing or empty")
    where = f"{where} ({ctype})"
    unknown_fields = sorted(set(raw) - set(ENTRY_FIELDS))
    if unknown_fields:
        raise CatalogError(f"{where}: unknown field '{unknown_fields[0]}' (known: {', '.join(ENTRY_FIELDS)})")
    if base is None and "action" not in raw:
        raise CatalogError(f"{where}: field 'action' is missing (one of {', '.join(ACTIONS)})")
    fields: dict[str, Any] = {}
    for field in ("action", "category", "severity", "unknown", "source"):
        if field in raw:
            choices = {"action": ACTIONS, "category": CATEGORIES, "severity": SEVERITIES,
                       "unknown": UNKNOWN_POLICIES, "source": SOURCES}[field]
            fields[field] = _check_choice(raw[field], choices, where, field)
    if "min_duration" in raw:
        fields["min_duration"] = parse_duration(raw["min_duration"], f"{where}: min_duration")
    if "description" in raw:
        fields["description"] = str(raw["description"])
    if "fault_status" in raw:
        statuses = raw["fault_status"]
        statuses = [statuses] if isinstance(statuses, (str, bool)) else statuses
        if not isinstance(statuses, list) or not statuses:
            raise CatalogError(f"{where}: fault_status must be a list of True, False or Unknown")
        # YAML turns an unquoted True into a boolean; accept it as the status string.
        normalised = tuple(str(s) if not isinstance(s, bool) else ("True" if s else "False") for s in statuses)
        for status in normalised:
            _check_choice(status, CONDITION_STATUSES, where, "fault_status")
        fields["fault_status"] = normalised
    if base is not None:
        return replace(base, **fields)
    return FaultEntry(type=ctype, **fields)


def _sections(document: Any, origin: str) -> tuple[dict, list]:
    if document is None:
        return {}, []
    if isinstance(document, list):
        return {}, document
    if isinstance(document, dict):
        unknown = sorted(set(document) - {"defaults", "faults"})
        if unknown:
            raise CatalogError(f"fault catalog {origin}: unknown top-level key '{unknown[0]}' (known: defaults, faults)")
        defaults = document.get("defaults") or {}
        faults = document.get("faults") or []
        if not isinstance(defaults, dict):
            raise CatalogError(f"fault catalog {origin}: 'defaults' must be a mapping")
        if not isinstance(faults, list):
            raise CatalogError(f"fault catalog {origin}: 'faults' must be a list of entries")
        return defaults, faults
    raise CatalogError(f"fault catalog {origin}: must be a list of entries or a mapping with 'faults'")


def _apply(catalog: Catalog, document: Any, origin: str) -> Catalog:
    defaults, faults = _sections(document, origin)
    entries = dict(catalog.entries)
    for index, raw in enumerate(faults):
        base = entries.get(raw.get("type")) if isinstance(raw, dict) else None
        entry = _entry(raw, index, base, origin)
        entries[entry.type] = entry
    uncatalogued = catalog.uncatalogued
    if "uncatalogued" in defaults:
        raw = dict(defaults["uncatalogued"] or {}, type="*")
        uncatalogued = _entry(raw, 0, uncatalogued, f"{origin} defaults.uncatalogued")
    nt_unknown = catalog.nt_unknown
    if "nt_unknown" in defaults:
        nt_unknown = _check_choice(defaults["nt_unknown"], UNKNOWN_POLICIES, f"fault catalog {origin} defaults",
                                   "nt_unknown")
    unknown_keys = sorted(set(defaults) - {"uncatalogued", "nt_unknown"})
    if unknown_keys:
        raise CatalogError(f"fault catalog {origin} defaults: unknown key '{unknown_keys[0]}'")
    return Catalog(entries=entries, uncatalogued=uncatalogued, nt_unknown=nt_unknown)


_DEFAULT: Catalog | None = None


def default_catalog() -> Catalog:
    global _DEFAULT
    if _DEFAULT is None:
        import yaml

        empty = Catalog(entries={}, uncatalogued=FaultEntry(type="*", action="repair"), nt_unknown="suspect")
        _DEFAULT = _apply(empty, yaml.safe_load(DEFAULT_CATALOG), "default")
    return _DEFAULT


def load_catalog(overrides: Any = None, path: str | None = None, use_default: bool = True) -> Catalog:
    """The default catalog, then the file at path, then the overrides variable (list or mapping)."""
    import yaml

    catalog = default_catalog() if use_default else Catalog(
        entries={}, uncatalogued=FaultEntry(type="*", action="repair"), nt_unknown="suspect")
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                document = yaml.safe_load(handle)
        except OSError as err:
            raise CatalogError(f"cannot read the fault catalog file '{path}': {err.strerror}") from None
        except yaml.YAMLError as err:
            raise CatalogError(f"the fault catalog file '{path}' is not valid YAML: {err}".splitlines()[0]) from None
        catalog = _apply(catalog, document, f"file '{path}'")
    if overrides:
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


__all__ = ["CARD_LOSS_TYPE", "Catalog", "CatalogError", "FaultEntry", "category_for", "default_catalog",
           "load_catalog", "parse_duration"]
