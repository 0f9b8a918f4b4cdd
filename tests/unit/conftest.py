"""Unit tests import the collection the way Ansible does: its collection finder goes in first, so a test can
also load a plugin by its name through Ansible's plugin loader (with its configuration definitions)."""

from __future__ import annotations

import http.server
import json
import threading

import pytest
from ansible.plugins.loader import init_plugin_loader

init_plugin_loader()


# A webhook endpoint on the loopback: what it received, and the statuses it answers with (200 once they run out).
class Receiver(http.server.BaseHTTPRequestHandler):
    statuses: list = []
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), json.loads(body)))
        status = type(self).statuses.pop(0) if type(self).statuses else 200
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    Receiver.statuses, Receiver.received = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook/SECRET-PATH", Receiver
    server.shutdown()
    server.server_close()
