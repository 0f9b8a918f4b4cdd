# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs the fleet_history module inside the controller's worker when the task runs there."""

from __future__ import annotations

from ansible_collections.ai_infra.node_recovery.plugins.modules.fleet_history import SPEC
from ansible_collections.ai_infra.node_recovery.plugins.plugin_utils._in_process import InProcessAction


class ActionModule(InProcessAction):
    spec = SPEC
