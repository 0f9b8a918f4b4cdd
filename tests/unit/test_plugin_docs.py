"""Every plugin's documentation renders with ansible-doc (no cluster needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"


PLUGIN_DIRS = {"module": "modules", "inventory": "inventory", "filter": "filter"}


@pytest.mark.parametrize("kind, name", [(kind, path.stem) for kind, folder in PLUGIN_DIRS.items()
                                        for path in sorted((REPO / "plugins" / folder).glob("*.py"))
                                        if not path.stem.startswith("_")])
def test_ansible_doc_renders_every_plugin(kind, name):
    proc = subprocess.run([str(VENV_BIN / "ansible-doc"), "-t", kind, f"ai_infra.node_recovery.{name}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ERROR" not in proc.stderr, proc.stderr
