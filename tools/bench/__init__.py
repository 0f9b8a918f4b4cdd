"""Benchmarks (`make bench`): each compares against a baseline measured in the same
run and writes its figures into its own section of docs/benchmarks.md."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "benchmarks.md"
PYTHON = REPO / ".venv" / "bin" / "python"

HEADER = """# Benchmarks

Figures written by `make bench` (`python -m tools.bench [name ...]`). Every benchmark
compares against a baseline measured in the same run on the same machine, so ratios
matter more than absolute seconds. Nothing here is asserted by the tests.
"""


@dataclass
class Measured:
    seconds: float
    peak_rss_mib: float
    returncode: int
    stdout: str
    stderr: str
    cpu_seconds: float


def run_measured(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> Measured:
    """Wall time, CPU time and peak RSS of one child process, from its own wait4 rusage."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd or REPO, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(elapsed, usage.ru_maxrss / 1024, proc.returncode, out.read(), err.read(),
                        usage.ru_utime + usage.ru_stime)


def machine() -> str:
    cores = os.cpu_count()
    mem = ""
    with contextlib.suppress(OSError):
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f", {kib / 1024 / 1024:.0f} GiB"
    return f"{platform.machine()}, {cores} cores{mem}, Python {platform.python_version()}"


def write_section(key: str, title: str, body: str) -> None:
    """Replace (or append) the section between the markers of `key` in docs/benchmarks.md."""
    text = DOC.read_text() if DOC.exists() else HEADER
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = (f"<!-- bench:{key} -->\n## {title}\n\nMeasured {stamp} on {machine()}.\n\n{body.strip()}\n"
               f"<!-- /bench:{key} -->")
    pattern = re.compile(rf"<!-- bench:{re.escape(key)} -->.*?<!-- /bench:{re.escape(key)} -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    DOC.write_text(text)
    print(f"wrote '{title}' to {DOC.relative_to(REPO)}")


def median_item(items: list, key):
    """The item of the median figure (the lower middle one of an even count): an actual run, so its split is real."""
    return sorted(items, key=key)[(len(items) - 1) // 2]


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


@contextlib.contextmanager
def bench_cluster(name: str, heartbeat_seconds: int = 60, lease_seconds: int = 40):
    """A private cluster (own state directory) so a benchmark never disturbs the shared one."""
    state = REPO / f".localcluster-bench-{name}"
    env = dict(os.environ, LOCALCLUSTER_DIR=str(state))
    cli = [str(PYTHON), "-m", "tools.localcluster"]
    subprocess.run(cli + ["up", "--no-populate", "--heartbeat-seconds", str(heartbeat_seconds),
                          "--node-lease-seconds", str(lease_seconds)], env=env, check=True, cwd=REPO)
    try:
        yield state / "kubeconfig", env
    finally:
        subprocess.run(cli + ["down"], env=env, cwd=REPO, check=False, capture_output=True)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.25):
    """The first truthy value of predicate(), polled until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def running_pods(api, namespace: str) -> list[dict]:
    """The namespace's pods that run and are not being deleted."""
    return [p for p in api.list(f"/api/v1/namespaces/{namespace}/pods")
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)
