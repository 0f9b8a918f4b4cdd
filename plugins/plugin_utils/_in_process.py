# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

The action plugin behind every module of the collection. Where the task runs on the
controller (delegate_to localhost, as the runbook runs every step), the module's spec
runs inside this Ansible worker: the controller imported the collection and the
`kubernetes` package once, and each worker is a fork of it, so a step costs
milliseconds instead of a Python process that imports everything again (about a second
on two cores). Anywhere else (another host, become, async) the module runs as a process,
as any module does. The results are the same either way (module_utils._runner).
"""

from __future__ import annotations

import gc
import os
import threading
import time

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.parameters import remove_values
from ansible.module_utils.errors import UnsupportedError
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import (
    HAS_KUBERNETES,
    forget_certificate_files,
    remove_certificate_files,
)
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._runner import (
    CONTROLLER_PID,
    ModuleSpec,
    execute,
    secret_values,
)

display = Display()
PARENT_CHECK_SECONDS = 0.5
# NODE_RECOVERY_IN_PROCESS=false runs every module as a process of its own, as any module does (a way out, and the
# baseline the benchmark compares with).
IN_PROCESS_SWITCH = "NODE_RECOVERY_IN_PROCESS"


def stop_with_controller() -> None:
    """A worker whose controller died (SIGKILL, OOM) stops at once instead of acting on without it:
    a run is over when its controller is, and the remediation lock is no longer kept for it."""
    controller = os.getppid()

    def watch() -> None:
        while os.getppid() == controller:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="stop-with-controller", daemon=True).start()


def execute_in_worker(spec: ModuleSpec, params: dict, check_mode: bool, diff: bool,
                      environ: dict) -> tuple[dict, list[str]]:
    """The module's work inside an Ansible worker, a fork of the controller."""
    # A garbage collection here would walk every object inherited from the controller and so copy the memory pages
    # they live on (copy-on-write): the plan over 1,000 nodes spent 0.2 s of its 0.6 s on that. Frozen, they are left
    # out; they are the controller's to free (a worker ends with os._exit). The worker's own garbage is still collected.
    gc.freeze()
    stop_with_controller()
    # The certificate files the controller wrote (reading an inventory, say) are its own: a worker that reused and
    # then removed them would pull them from under a worker of another host running at the same time.
    forget_certificate_files()
    try:
        return execute(spec, params, check_mode=check_mode, diff=diff, environ=environ, controller_pid=os.getppid())
    finally:
        remove_certificate_files()  # this worker ends with os._exit, past the library's own clean-up


class InProcessAction(ActionBase):
    spec: ModuleSpec
    _supports_check_mode = True
    _supports_async = True

    def _on_controller(self) -> bool:
        return (self._connection.transport == "local" and not self._play_context.become
                and not self._task.async_val and (HAS_KUBERNETES or not self.spec.connects)
                and boolean(os.environ.get(IN_PROCESS_SWITCH, "true"), strict=False))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if not self._on_controller():
            if self._connection.transport == "local":  # still this machine: the module may watch the run's life
                self._task.environment = [*(self._task.environment or []), {CONTROLLER_PID: str(os.getppid())}]
            result.update(self._execute_module(module_name=self._task.resolved_action, module_args=self._task.args,
                                               task_vars=task_vars, wrap_async=self._task.async_val))
            return result
        validated = ArgumentSpecValidator(self.spec.full_argument_spec(), **self.spec.checks()).validate(
            self._task.args)
        for alias in validated._warnings:
            display.warning(f"Both option {alias['option']} and its alias {alias['alias']} are set.")
        if validated.error_messages:
            error = validated.errors.errors[0]  # the first, as AnsibleModule reports it
            message = error.msg
            if isinstance(error, UnsupportedError):
                message = f"Unsupported parameters for ({self._task.resolved_action}) module: {message}"
            result.update(failed=True, changed=False, msg=message)
            return result
        params = validated.validated_parameters
        task_environment: dict = {}
        self._compute_environment_string(task_environment)
        outcome, warnings = execute_in_worker(self.spec, params, check_mode=bool(self._task.check_mode),
                                              diff=bool(self._task.diff), environ={**os.environ, **task_environment})
        for warning in warnings:
            display.warning(warning)
        hidden = validated._no_log_values | secret_values(params)
        if hidden:  # walking a large result costs; most calls have no secret to hide
            outcome, params = remove_values(outcome, hidden), remove_values(params, hidden)
        result.update(outcome)
        result["invocation"] = {"module_args": params}
        return result
