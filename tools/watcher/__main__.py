"""python -m tools.watcher --data-dir DIR [options]: run the recover playbook as node faults happen.

The connection comes from --kubeconfig/--context or the K8S_AUTH_* environment (as for
every module of the collection); the playbook runs get the same environment.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

import yaml


def _extra_var(text: str) -> dict:
    """KEY=VALUE (the value read as YAML) or @FILE (a YAML mapping), like ansible-playbook -e."""
    if text.startswith("@"):
        try:
            loaded = yaml.safe_load(Path(text[1:]).read_text())
        except (OSError, yaml.YAMLError) as err:
            raise argparse.ArgumentTypeError(f"cannot read extra vars from {text[1:]}: {err}") from None
        if not isinstance(loaded, dict):
            raise argparse.ArgumentTypeError(f"{text[1:]} must hold a mapping of variables")
        return loaded
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"'{text}' is neither KEY=VALUE nor @FILE")
    return {key: yaml.safe_load(value) if value else ""}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m tools.watcher", description=__doc__.split("\n\n")[0])
    top.add_argument("--data-dir", type=Path, required=True,
                     help="where runs (artifacts), episodes.json and status.json are kept")
    top.add_argument("--playbook", default="ai_infra.node_recovery.recover",
                     help="playbook file or FQCN run for the faulty nodes (default: %(default)s)")
    top.add_argument("-e", "--extra-vars", type=_extra_var, action="append", default=[],
                     help="KEY=VALUE or @FILE passed to every run (repeatable)")
    conn = top.add_argument_group("connection and classification (as the node_faults event source)")
    conn.add_argument("--kubeconfig", help="kubeconfig file (default: K8S_AUTH_KUBECONFIG, in-cluster, ~/.kube/config)")
    conn.add_argument("--context", help="kubeconfig context")
    conn.add_argument("--label-selector", help="only nodes matching this selector")
    conn.add_argument("--catalog-file", help="fault catalog extending the default one")
    conn.add_argument("--source-args", type=Path,
                      help="YAML mapping of further node_faults source options (see its schema)")
    limits = top.add_argument_group("rate limits and safety")
    limits.add_argument("--max-parallel", type=int, default=32,
                        help="nodes in remediation at once, and so at most in one run (default 32: a rack)")
    limits.add_argument("--max-runs", type=int, default=1,
                        help="playbook runs at once (default 1: the recover playbook holds one lock)")
    limits.add_argument("--coalesce-seconds", type=float, default=1,
                        help="a run starts this long after its first node became ready and takes every node "
                             "ready by then, so a burst of faults is one run; nodes that became ready during "
                             "a run start at once when it ends (default 1; 0: no wait)")
    limits.add_argument("--max-unhealthy", default="20%",
                        help="storm brake: faulty nodes a pool may have, a count or a percentage (default 20%%)")
    limits.add_argument("--stop-timeout", type=float, default=900,
                        help="seconds running playbooks may take to finish after SIGTERM before being interrupted")
    limits.add_argument("--retry-delay", type=float, default=300, help="seconds before a failed run is tried again")
    limits.add_argument("--max-attempts", type=int, default=3, help="runs per node and fault episode")
    limits.add_argument("--keep-runs", type=int, default=500, help="run directories kept")
    metrics = top.add_argument_group("Prometheus metrics (docs/metrics.md)")
    metrics.add_argument("--metrics-port", type=int,
                         help="serve metrics at http://ADDRESS:PORT/metrics (default: no metrics)")
    metrics.add_argument("--metrics-address",
                         help="IP address the metrics are served on (default 127.0.0.1: this machine only; "
                              "0.0.0.0 or :: for every interface)")
    top.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    from ansible_collections.ai_infra.node_recovery.extensions.eda.plugins.event_source.node_faults import (
        SourceError,
    )

    from . import Settings, Watcher, WatcherError, ensure_ansible_on_path, playbook_path

    source_args: dict = {}
    if args.source_args:
        try:
            source_args = yaml.safe_load(args.source_args.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            print(f"watcher: cannot read --source-args {args.source_args}: {err}", file=sys.stderr)
            return 2
        if not isinstance(source_args, dict):
            print(f"watcher: --source-args {args.source_args} must hold a mapping of options", file=sys.stderr)
            return 2
    for option in ("kubeconfig", "context", "label_selector", "catalog_file"):
        if getattr(args, option):
            source_args[option] = getattr(args, option)
    extra_vars: dict = {}
    for chunk in args.extra_vars:
        extra_vars.update(chunk)
    settings = Settings(data_dir=args.data_dir.resolve(), playbook=playbook_path(args.playbook),
                        source_args=source_args, extra_vars=extra_vars, max_parallel=args.max_parallel,
                        max_runs=args.max_runs, coalesce_seconds=args.coalesce_seconds,
                        max_unhealthy=args.max_unhealthy, stop_timeout=args.stop_timeout,
                        retry_delay=args.retry_delay, max_attempts=args.max_attempts, keep_runs=args.keep_runs,
                        metrics_port=args.metrics_port, metrics_address=args.metrics_address)
    ensure_ansible_on_path()
    try:
        watcher = Watcher(settings)
        return asyncio.run(watcher.run())
    except (SourceError, WatcherError) as err:
        print(f"watcher: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
