# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

How every module of the collection runs. A module is its documentation, a ModuleSpec
(argument spec, checks, the function that does the work) and one call to run_module.
The same spec runs in two places with the same results:

- as a module process (run_module, through AnsibleModule), where a task runs remotely;
- inside the controller's Ansible worker (execute, called by the collection's action
  plugins), where the task runs on the controller: no Python process to start and no
  `kubernetes` package to import again for every task, which cost about a second each.

Here, once: the numeric ranges, the kubernetes library check, the client, the one
exception base (NodeRecoveryError, with an API error's status and reason in the result),
check mode, diff and warnings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import (
    AUTH_ARG_SPEC,
    HAS_KUBERNETES,
    KUBERNETES_IMPORT_ERROR,
    Client,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._errors import NodeRecoveryError

Range = tuple[Any, Any]  # (minimum or None, maximum or None)
# Set by the action plugin for a module process on the controller's own machine: the run's ansible-playbook.
CONTROLLER_PID = "NODE_RECOVERY_CONTROLLER_PID"


@dataclass(frozen=True)
class ModuleSpec:
    argument_spec: dict[str, dict[str, Any]]
    run: Callable[[Call], dict]
    ranges: Mapping[str, Range] = field(default_factory=dict)
    check: Callable[[Mapping[str, Any]], str | None] | None = None  # any further check: one sentence or None
    mutually_exclusive: tuple = ()
    required_one_of: tuple = ()
    required_together: tuple = ()
    required_if: tuple = ()
    connects: bool = True  # takes the connection options and needs the kubernetes library

    def full_argument_spec(self) -> dict[str, dict[str, Any]]:
        return {**self.argument_spec, **(AUTH_ARG_SPEC if self.connects else {})}

    def checks(self) -> dict[str, list]:
        """The cross-option checks, as AnsibleModule and ArgumentSpecValidator both take them."""
        return {"mutually_exclusive": list(self.mutually_exclusive), "required_one_of": list(self.required_one_of),
                "required_together": list(self.required_together), "required_if": list(self.required_if)}


@dataclass
class Call:
    """One run of a module: its validated parameters and how it was asked to run."""

    params: dict[str, Any]
    check_mode: bool = False
    diff: bool = False
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    # The ansible-playbook process of the run, when the module runs inside its worker; None in a module process.
    controller_pid: int | None = None
    warnings: list[str] = field(default_factory=list)
    _client: Client | None = None

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.params, environ=self.environ)
        return self._client


def range_problem(ranges: Mapping[str, Range], params: Mapping[str, Any]) -> str | None:
    """One sentence about the first option outside its range, or None."""
    for name, (low, high) in ranges.items():
        value = params.get(name)
        if value is None:
            continue
        if low is not None and value < low:
            return f"{name} must be at least {low}, not {value}"
        if high is not None and value > high:
            return f"{name} must be at most {high}, not {value}"
    return None


# The credential fields of a kubeconfig (as kubernetes.core hides them): only these, so the names of users,
# clusters and servers stay readable in results instead of being masked wherever they appear.
_USER_SECRETS = ("token", "password", "client-key-data", "client-certificate-data")


def secret_values(params: Mapping[str, Any]) -> set[str]:
    """Values to keep out of results and logs beyond the options marked no_log: the credentials of kubeconfig
    content given inline."""
    kubeconfig = params.get("kubeconfig")
    if not isinstance(kubeconfig, dict):
        return set()
    found: list[Any] = []
    for entry in kubeconfig.get("users") or []:
        user = (entry or {}).get("user") or {} if isinstance(entry, dict) else {}
        if not isinstance(user, dict):
            continue
        found += [user.get(key) for key in _USER_SECRETS]
        provider = user.get("auth-provider") or {}
        found += list(((provider.get("config") or {}) if isinstance(provider, dict) else {}).values())
        execution = user.get("exec") or {}
        found += [item.get("value") for item in (execution.get("env") or []) if isinstance(item, dict)] \
            if isinstance(execution, dict) else []
    for entry in kubeconfig.get("clusters") or []:
        cluster = (entry or {}).get("cluster") or {} if isinstance(entry, dict) else {}
        if isinstance(cluster, dict):
            found.append(cluster.get("certificate-authority-data"))
    return {value for value in found if isinstance(value, str) and value}


def execute(spec: ModuleSpec, params: dict[str, Any], *, check_mode: bool = False, diff: bool = False,
            environ: Mapping[str, str] | None = None, controller_pid: int | None = None) -> tuple[dict, list[str]]:
    """Run the module's work on validated parameters: (result, warnings). Expected failures are a
    result with failed and one sentence in msg, never an exception."""
    problem = range_problem(spec.ranges, params) or (spec.check(params) if spec.check else None)
    if problem:
        return {"failed": True, "msg": problem, "changed": False}, []
    if spec.connects and not HAS_KUBERNETES:
        return {"failed": True, "changed": False, "exception": str(KUBERNETES_IMPORT_ERROR),
                "msg": "the 'kubernetes' Python library is required on the host that runs this task "
                       f"(pip install kubernetes): {KUBERNETES_IMPORT_ERROR}"}, []
    call = Call(params, check_mode, diff, environ if environ is not None else os.environ, controller_pid)
    try:
        result = spec.run(call)
    except NodeRecoveryError as err:
        result = {**err.fields, "failed": True, "msg": str(err)}
    result.setdefault("changed", False)
    changes = result.pop("diff", None)
    if diff and changes is not None:
        result["diff"] = changes
    return result, call.warnings


def run_module(spec: ModuleSpec) -> None:
    """The module process: AnsibleModule validates the arguments, execute does the rest."""
    from ansible.module_utils.basic import AnsibleModule

    class Module(AnsibleModule):
        def _log_invocation(self) -> None:  # the invocation is logged from __init__: hide the credentials first
            self.no_log_values.update(secret_values(self.params))
            super()._log_invocation()

    module = Module(argument_spec=spec.full_argument_spec(), supports_check_mode=True, **spec.checks())
    controller = os.environ.get(CONTROLLER_PID, "")
    result, warnings = execute(spec, module.params, check_mode=module.check_mode, diff=module._diff,
                               controller_pid=int(controller) if controller.isdigit() else None)
    for warning in warnings:
        module.warn(warning)
    if result.get("failed"):
        result.pop("failed")
        module.fail_json(**result)
    module.exit_json(**result)
