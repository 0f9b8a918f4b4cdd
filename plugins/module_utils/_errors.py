# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

The one base class of every expected failure in the collection, so each face (module,
in-controller action, inventory, event source, watcher) catches one type and shows one
sentence, never a traceback.
"""

from __future__ import annotations

from typing import Any


class NodeRecoveryError(Exception):
    """An expected failure: str() is one sentence for the operator; `fields` go into a module's result."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.fields = {key: value for key, value in fields.items() if value is not None}
