"""Unit tests import the collection the way Ansible does: its collection finder goes in first, so a test can
also load a plugin by its name through Ansible's plugin loader (with its configuration definitions)."""

from __future__ import annotations

from ansible.plugins.loader import init_plugin_loader

init_plugin_loader()
