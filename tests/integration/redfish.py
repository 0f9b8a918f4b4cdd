"""A real Redfish service for the tests: the sushy-tools emulator (its fake driver: systems held in a
state file, power changes applied a few seconds after they are asked, as hardware does) on a free
loopback port, with HTTP basic authentication. Each power change it makes is sent to its external
notifier, a small HTTP server here that records the transitions in order."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from base64 import b64encode
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import bcrypt

from .helpers import VENV_BIN

USER = "redfish-admin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Recorder(ThreadingHTTPServer):
    """The emulator's external notifier: every system it changes, PUT here as JSON."""

    def __init__(self) -> None:
        self.changes: list[dict] = []

        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                recorder.changes.append(json.loads(body or b"{}"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Emulator:
    """sushy-emulator with one fake system (powered on) per name asked for."""

    def __init__(self, workdir: Path, systems: list[str], tls: bool = False) -> None:
        self.password = f"pw-{uuid.uuid4().hex}"  # a string that must never show anywhere but in the request
        self.systems = {name: str(uuid.uuid4()) for name in systems}
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.recorder = Recorder()
        workdir.mkdir(parents=True, exist_ok=True)
        self.certificate = workdir / "bmc.crt" if tls else None
        self._context = None
        tls_config = ""
        if self.certificate:  # a self-signed certificate for 127.0.0.1, as a BMC has out of the box
            key = workdir / "bmc.key"
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                            "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                            "-out", str(self.certificate)], check=True, capture_output=True)
            tls_config = f"SUSHY_EMULATOR_SSL_CERT = {str(self.certificate)!r}\nSUSHY_EMULATOR_SSL_KEY = {str(key)!r}\n"
            self._context = ssl.create_default_context(cafile=str(self.certificate))
        auth = workdir / "htpasswd"
        auth.write_text(f"{USER}:{bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=4)).decode()}\n")
        fake = [{"uuid": uid, "name": name, "power_state": "On", "external_notifier": True, "nics": []}
                for name, uid in self.systems.items()]
        config = workdir / "emulator.conf"
        config.write_text(
            f"SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\nSUSHY_EMULATOR_LISTEN_PORT = {self.port}\n"
            f"SUSHY_EMULATOR_FAKE_DRIVER = True\nSUSHY_EMULATOR_FAKE_SYSTEMS = {fake!r}\n"
            f"SUSHY_EMULATOR_AUTH_FILE = {str(auth)!r}\nSUSHY_EMULATOR_STATE_DIR = {str(workdir / 'state')!r}\n"
            f"EXTERNAL_NOTIFICATION_URL = {self.recorder.url!r}\n{tls_config}")
        self.log = (workdir / "emulator.log").open("w")
        self.proc = subprocess.Popen([str(VENV_BIN / "sushy-emulator"), "--config", str(config)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.get("/redfish/v1/Systems")
                break
            except (urllib.error.URLError, ConnectionError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sushy-emulator did not start: {(workdir / 'emulator.log').read_text()}") from None
                time.sleep(0.2)

    def system_url(self, name: str) -> str:
        return f"{self.url}/redfish/v1/Systems/{self.systems[name]}"

    def get(self, path: str) -> dict:
        request = urllib.request.Request(self.url + path, headers={
            "Authorization": "Basic " + b64encode(f"{USER}:{self.password}".encode()).decode()})
        with urllib.request.urlopen(request, timeout=10, context=self._context) as response:
            return json.loads(response.read())

    def power_state(self, name: str) -> str:
        """The system's power state (reading it is what lets the fake driver apply a pending change)."""
        return self.get(f"/redfish/v1/Systems/{self.systems[name]}")["PowerState"]

    def transitions(self, name: str) -> list[str]:
        """The power states the emulator moved the system through, in order (no repeats)."""
        states: list[str] = []
        for change in self.recorder.changes:
            if change.get("name") == name and (not states or states[-1] != change.get("power_state")):
                states.append(change.get("power_state"))
        return states

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.recorder.shutdown()
        self.recorder.server_close()
        self.log.close()
