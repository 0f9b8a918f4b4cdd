# Copyright: contributors to ai_infra.node_recovery
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private to the ai_infra.node_recovery collection: not a public API.

POSTing JSON to a webhook (repair tickets, run summaries): retried on 5xx, 429 and
connection errors with backoff; the URL is treated as a secret (only scheme, host and
port ever appear in a message).
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable
from urllib.parse import urlsplit

from ansible_collections.ai_infra.node_recovery.plugins.module_utils import _vocabulary as v
from ansible_collections.ai_infra.node_recovery.plugins.module_utils._errors import NodeRecoveryError


class WebhookError(NodeRecoveryError, ValueError):
    """The webhook refused or never took the payload; str() is one sentence without secrets."""


def public_endpoint(url: str) -> str:
    """scheme://host[:port] of a URL: never the path, query or credentials, which may hold a secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")


def url_problem(option: str, url: str | None) -> str | None:
    """One sentence if the URL cannot be a webhook, else None; never echoes the URL (it may hold a secret)."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        usable = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:  # e.g. an unbalanced [ in the host
        usable = False
    if not usable:
        return f"{option} must be an http:// or https:// URL"
    return None


# The webhook options of the modules that deliver to one (node_repair, node_return): one spec, one reading.
WEBHOOK_ARG_SPEC = {
    "webhook_url": {"type": "str", "no_log": True},
    "webhook_headers": {"type": "dict", "no_log": True},
    "webhook_timeout": {"type": "int", "default": 10},
    "webhook_retries": {"type": "int", "default": 3},
    "webhook_validate_certs": {"type": "bool", "default": True},
}
WEBHOOK_RANGES = {"webhook_timeout": (1, None), "webhook_retries": (0, None)}


def webhook_from(params: dict) -> dict | None:
    """The delivery settings of a module's webhook options (as post_json takes them), or None without a URL."""
    if not params.get("webhook_url"):
        return None
    return {"url": params["webhook_url"], "headers": params["webhook_headers"], "timeout": params["webhook_timeout"],
            "retries": params["webhook_retries"], "validate_certs": params["webhook_validate_certs"]}


def post_json(url: str, payload: Any, *, what: str, headers: dict | None = None, timeout: int = 10, retries: int = 3,
              validate_certs: bool = True, sleep: Callable[[float], None] = time.sleep) -> dict:
    """POST payload as JSON; other 4xx fail at once. Returns the endpoint, status and attempts."""
    from urllib.error import HTTPError, URLError

    from ansible.module_utils.urls import open_url

    body = json.dumps(payload).encode()
    send_headers = {"Content-Type": "application/json", "User-Agent": v.COLLECTION}
    send_headers.update({str(k): str(val) for k, val in (headers or {}).items()})
    endpoint = public_endpoint(url)
    attempts = 0
    last = ""
    while attempts <= retries:
        attempts += 1
        try:
            response = open_url(url, data=body, headers=send_headers, method="POST", timeout=timeout,
                                validate_certs=validate_certs, follow_redirects="safe")
            return {"endpoint": endpoint, "status": response.getcode(), "attempts": attempts}
        except HTTPError as err:
            last = f"HTTP {err.code} {err.reason}"
            if err.code < 500 and err.code != 429:
                raise WebhookError(f"the webhook at {endpoint} refused {what}: {last}") from None
        except (URLError, OSError) as err:
            last = str(getattr(err, "reason", None) or err)
        if attempts <= retries:
            sleep(min(2 ** (attempts - 1), 10))
    raise WebhookError(f"the webhook at {endpoint} did not take {what} after {attempts} attempt(s): {last}")
