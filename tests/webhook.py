"""A webhook endpoint on the loopback, for the tests of what the collection posts (repair tickets, their updates,
run summaries): unit tests of the senders and integration tests of the modules and playbooks share it."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Iterator


class Receiver(http.server.BaseHTTPRequestHandler):
    """Records every POST as it arrives (before answering) as {path, headers, body}; answers with the next of
    `statuses` (200 when none); while `hold` is set, keeps the answer back until it is released (a delivery in
    flight)."""

    statuses: list = []
    received: list = []
    hold: threading.Event | None = None

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Receiver.received.append({"path": self.path, "headers": dict(self.headers), "body": body})
        if Receiver.hold is not None:
            Receiver.hold.wait(60)
        try:
            self.send_response(Receiver.statuses.pop(0) if Receiver.statuses else 200)
            self.end_headers()
            self.wfile.write(b"{}")
        except OSError:  # the sender is gone (killed)
            pass

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def receiving() -> Iterator[str]:
    """The Receiver served on a free loopback port with nothing recorded yet; yields its base URL."""
    Receiver.statuses, Receiver.received, Receiver.hold = [], [], None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        if Receiver.hold is not None:
            Receiver.hold.set()
        server.shutdown()
        server.server_close()
