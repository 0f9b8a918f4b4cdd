# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs the recovery_plan module inside the controller's worker when the task runs there, which is also where it
can keep the remediation lock alive while the controller lives."""

from __future__ import annotations

from ansible_collections.ai_infra.node_recovery.plugins.modules.recovery_plan import SPEC
from ansible_collections.ai_infra.node_recovery.plugins.plugin_utils._in_process import InProcessAction


class ActionModule(InProcessAction):
    spec = SPEC
