# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

Talking to a node's BMC through Redfish (DMTF DSP0266), with the Python standard library only: where the
system is, which reset it offers, the reset itself. Every failure is one sentence (RedfishError) that
names the BMC and the system, never the credentials. The pure parts come first.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ansible_collections.ai_infra.node_recovery.plugins.module_utils._errors import NodeRecoveryError

SYSTEMS = "/redfish/v1/Systems"
# Reset types that restart a running system, the most thorough first: PowerCycle takes the power away (accelerators
# and their firmware start afresh), ForceRestart resets the host at once; both work on a hung OS.
DEFAULT_RESET_TYPES = ("PowerCycle", "ForceRestart")
# What a system that is off gets instead: it is powered on.
POWER_ON_TYPES = ("On", "ForceOn")
DEFAULT_TIMEOUT = 30


class RedfishError(NodeRecoveryError, ValueError):
    """The BMC could not be reached, refused us, or has no such system; str() is one sentence."""


# ---------------------------------------------------------------------------------------------------------------------
# Pure


def parse_target(address: str, system_id: str | None = None) -> tuple[str, str | None]:
    """(the BMC's base URL, the system's path or None when it is to be found) from an address and a system id.
    The address is a host, host:port or URL; a URL may name the system itself (…/redfish/v1/Systems/<id>)."""
    text = (address or "").strip()
    if not text:
        raise RedfishError("no BMC address is known for the node: give bmc_address (or set the node's BMC annotation)")
    if "://" not in text:
        text = f"https://{text}"
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise RedfishError(f"the BMC address '{address}' is not a host name or an http(s) URL")
    if parsed.username is not None or parsed.password is not None:  # never echo it: it holds a secret
        raise RedfishError("the BMC address must not carry credentials: give them as bmc_user and bmc_password")
    base = f"{parsed.scheme}://{parsed.netloc}"
    path = parsed.path.rstrip("/")
    in_url = None
    if path.startswith(SYSTEMS + "/") and path.count("/") == 4:
        in_url = path.rsplit("/", 1)[1]
    elif path not in ("", "/redfish/v1", SYSTEMS):
        raise RedfishError(f"the BMC address '{address}' names no Redfish system (expected {SYSTEMS}/<id> or no path)")
    if system_id and in_url and system_id != in_url:
        raise RedfishError(f"the BMC address '{address}' names system '{in_url}' but system_id is '{system_id}'")
    chosen = system_id or in_url
    return base, (f"{SYSTEMS}/{urllib.parse.quote(chosen, safe='')}" if chosen else None)


def parse_annotation(value: str | None) -> dict[str, str | None]:
    """The node's BMC annotation: a URL (https://bmc/redfish/v1/Systems/1), or JSON {"address", "system"}."""
    text = (value or "").strip()
    if not text:
        return {"address": None, "system": None}
    if text.startswith(("{", "[")):
        try:
            data = json.loads(text)
        except ValueError:
            raise RedfishError("the node's BMC annotation is neither a URL nor valid JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("address"), str):
            raise RedfishError('the node\'s BMC annotation must be a URL or JSON {"address": ..., "system": ...}')
        system = data.get("system")
        return {"address": data["address"], "system": str(system) if system not in (None, "") else None}
    return {"address": text, "system": None}


def reset_action(system: dict) -> tuple[str, list[str] | None]:
    """(the target of the system's ComputerSystem.Reset, its allowable reset types or None when it lists none)."""
    action = ((system.get("Actions") or {}).get("#ComputerSystem.Reset")) or {}
    target = action.get("target")
    if not target:
        raise RedfishError(f"system {system.get('@odata.id') or system.get('Id')} offers no ComputerSystem.Reset action")
    allowed = action.get("ResetType@Redfish.AllowableValues")
    return target, ([str(a) for a in allowed] if isinstance(allowed, list) else None)


def choose_reset_type(allowed: list[str] | None, preferred: list[str] | tuple[str, ...], power_state: str | None
                      ) -> str:
    """The reset to send: for a system that is off, a power-on; else the first preferred type the system offers
    (a system that lists none is taken to offer all)."""
    wanted = POWER_ON_TYPES if power_state == "Off" else tuple(preferred)
    for reset_type in wanted:
        if allowed is None or reset_type in allowed:
            return reset_type
    raise RedfishError(f"the system offers none of the reset types {', '.join(wanted)} "
                       f"(it offers {', '.join(allowed or []) or 'none'})")


# ---------------------------------------------------------------------------------------------------------------------
# HTTP


class Redfish:
    """A Redfish service with HTTP basic authentication. The password is kept here only, in the header."""

    def __init__(self, base: str, user: str | None, password: str | None, validate_certs: bool = True,
                 ca_cert: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.base = base
        self.user = user
        self.timeout = timeout
        self._headers = {"Accept": "application/json", "OData-Version": "4.0"}
        if user or password:
            token = base64.b64encode(f"{user or ''}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        context = None
        if base.startswith("https://"):
            context = ssl.create_default_context(cafile=ca_cert) if ca_cert else ssl.create_default_context()
            if not validate_certs:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))

    def request(self, method: str, path: str, what: str, body: dict | None = None) -> tuple[int, Any]:
        url = path if path.startswith(("http://", "https://")) else self.base + path
        data = json.dumps(body).encode() if body is not None else None
        headers = dict(self._headers, **({"Content-Type": "application/json"} if data is not None else {}))
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(req, timeout=self.timeout) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as err:
            raise self._refused(err, what) from None
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, ssl.SSLError, OSError) as err:
            reason = getattr(err, "reason", err)
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise RedfishError(f"{what}: the certificate of the BMC at {self.base} cannot be verified "
                                   f"({reason.verify_message}): give bmc_ca_cert, or set bmc_validate_certs to false",
                                   bmc=self.base) from None
            raise RedfishError(f"{what}: the BMC at {self.base} cannot be reached ({reason})",
                               bmc=self.base) from None
        try:
            return status, (json.loads(raw) if raw.strip() else None)
        except ValueError:
            raise RedfishError(f"{what}: the BMC at {self.base} did not answer with JSON (HTTP {status})",
                               bmc=self.base, status=status) from None

    def _refused(self, err: urllib.error.HTTPError, what: str) -> RedfishError:
        status = err.code
        try:
            detail = json.loads(err.read() or b"{}")
            error = detail.get("error") or {}
            extended = error.get("@Message.ExtendedInfo") or [{}]
            message = (extended[0] or {}).get("Message") or error.get("message") or ""
        except (ValueError, AttributeError, OSError):
            message = ""
        if status == 401:
            text = f"the BMC at {self.base} refused the credentials of user '{self.user or ''}' (HTTP 401)"
        elif status == 403:
            text = f"the BMC at {self.base} does not allow user '{self.user or ''}' this (HTTP 403)"
        elif status == 404:
            text = f"the BMC at {self.base} has no such resource (HTTP 404)"
        else:
            text = f"the BMC at {self.base} answered HTTP {status}"
        if message:
            text += f": {message.rstrip('.')}"
        return RedfishError(f"{what}: {text}", bmc=self.base, status=status)

    def get(self, path: str, what: str) -> dict:
        return self.request("GET", path, what)[1] or {}

    def post(self, path: str, body: dict, what: str) -> int:
        return self.request("POST", path, what, body)[0]


def find_system(bmc: Redfish, system_path: str | None) -> dict:
    """The system's resource: the one named, or the BMC's only system."""
    if system_path:
        try:
            return bmc.get(system_path, f"reading system {system_path.rsplit('/', 1)[1]}")
        except RedfishError as err:
            if err.fields.get("status") == 404:
                raise RedfishError(f"the BMC at {bmc.base} has no system '{system_path.rsplit('/', 1)[1]}' "
                                   f"(HTTP 404)", bmc=bmc.base, status=404) from None
            raise
    members = bmc.get(SYSTEMS, "listing the BMC's systems").get("Members") or []
    if len(members) != 1:
        raise RedfishError(f"the BMC at {bmc.base} has {len(members)} systems: give bmc_system_id "
                           "(or name the system in the BMC address)", bmc=bmc.base)
    return bmc.get(members[0]["@odata.id"], "reading the BMC's system")
