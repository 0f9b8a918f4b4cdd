"""Unit tests import the collection the way Ansible does: its collection finder goes in first, so a test can
also load a plugin by its name through Ansible's plugin loader (with its configuration definitions)."""

from __future__ import annotations

import pytest
from ansible.plugins.loader import init_plugin_loader

from ..webhook import Receiver, receiving

init_plugin_loader()


# The loopback webhook endpoint and what it received: (its URL with a secret path, Receiver).
@pytest.fixture
def receiver():
    with receiving() as url:
        yield f"{url}/hook/SECRET-PATH", Receiver
