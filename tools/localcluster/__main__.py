"""localcluster: a real, disposable Kubernetes control plane with KWOK accelerator nodes.

    python -m tools.localcluster up [--no-populate] [--heartbeat-seconds N]
    python -m tools.localcluster down | status | build | stop COMPONENT | restart COMPONENT
    python -m tools.localcluster populate [--pool NAME:KIND:SIZE ...] [--prefix P]
    python -m tools.localcluster inject NODE [NODE ...] --condition TYPE --status True|False|Unknown [--reason R]
                                        [--message M] [--since 10m]
    python -m tools.localcluster inject NODE --allocatable N [--resource RES]
    python -m tools.localcluster clear NODE [NODE ...]
    python -m tools.localcluster dra publish|unpublish|fault|heal ...   play a DRA driver (tools/localcluster/dra.py)

Every command takes --dir DIR first (default .localcluster, or $LOCALCLUSTER_DIR): a second, independent cluster
lives in a directory of its own, on free ports picked when it starts, from the same cached binaries, e.g.
    python -m tools.localcluster --dir .localcluster-second up --no-populate
"""

from __future__ import annotations

import argparse
import json
import sys

from . import build, cluster, dra


def _pool(text: str):
    from .nodes import Pool

    try:
        name, kind, size = text.split(":")
        if kind not in ("npu", "gpu"):
            raise ValueError
        return Pool(name, kind, int(size))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not NAME:npu|gpu:SIZE") from None


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="localcluster", description=__doc__.split("\n\n")[0])
    top.add_argument("--dir", help="state directory of the cluster (default: .localcluster or $LOCALCLUSTER_DIR); "
                                   "another directory is another, independent cluster on ports of its own")
    sub = top.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the control plane and kwok (idempotent) and populate the default pools")
    up.add_argument("--no-populate", action="store_true", help="start with no nodes")
    up.add_argument("--heartbeat-seconds", type=int, default=20, help="kwok node status heartbeat period")
    up.add_argument("--node-lease-seconds", type=int, default=40,
                    help="node lease duration (and grace period before a silent node turns Unknown)")
    sub.add_parser("down", help="stop the processes we started and remove their data")
    sub.add_parser("status", help="print what runs")
    sub.add_parser("build", help="build the binaries into the cache (done by 'up' when missing)")
    rst = sub.add_parser("restart", help="stop and start one component with the same flags (data kept)")
    rst.add_argument("component", choices=cluster.COMPONENTS)
    stp = sub.add_parser("stop", help="stop one component, data kept (kube-apiserver: an unreachable cluster)")
    stp.add_argument("component", choices=cluster.COMPONENTS)
    pop = sub.add_parser("populate", help="create accelerator nodes")
    pop.add_argument("--pool", type=_pool, action="append", help="NAME:npu|gpu:SIZE, repeatable")
    pop.add_argument("--prefix", default="", help="node name prefix")
    inj = sub.add_parser("inject", help="play node-agent (a condition) or device-plugin (allocatable)")
    inj.add_argument("nodes", nargs="+", metavar="NODE")
    what = inj.add_mutually_exclusive_group(required=True)
    what.add_argument("--condition", help="condition type, e.g. NT_NPU_CARD_LOSE or Ready")
    what.add_argument("--allocatable", type=int, help="usable accelerator count")
    inj.add_argument("--status", help="True, False or Unknown (with --condition)")
    inj.add_argument("--reason")
    inj.add_argument("--message")
    inj.add_argument("--since", default="0s", help="backdate lastTransitionTime, e.g. 10m")
    inj.add_argument("--resource", help="accelerator resource name (default: the node's)")
    clr = sub.add_parser("clear", help="undo every injected fault on nodes")
    clr.add_argument("nodes", nargs="+")
    dra.add_parser(sub)
    return top


def run(args: argparse.Namespace) -> int:
    if args.command == "build":
        build.ensure_binaries()
        return 0
    if args.command == "up":
        cluster.up(heartbeat_seconds=args.heartbeat_seconds, lease_seconds=args.node_lease_seconds)
        if not args.no_populate:
            from . import nodes

            names = nodes.populate()
            nodes.wait_ready(names)
            print(f"{len(names)} accelerator nodes Ready in pools "
                  f"{', '.join(f'{p.name} ({p.kind}, {p.size})' for p in nodes.DEFAULT_POOLS)}")
        return 0
    if args.command == "down":
        cluster.down()
        return 0
    if args.command == "restart":
        cluster.restart(args.component)
        return 0
    if args.command == "stop":
        cluster.stop(args.component)
        return 0
    if args.command == "status":
        print(json.dumps(cluster.status(), indent=2))
        return 0 if cluster.is_up() else 3
    if args.command == "dra":
        return dra.run(args)
    from . import nodes

    if args.command == "populate":
        pools = tuple(args.pool) if args.pool else nodes.DEFAULT_POOLS
        names = nodes.populate(pools, args.prefix)
        nodes.wait_ready(names)
        print(f"{len(names)} nodes Ready")
    elif args.command == "inject":
        if args.condition:
            if args.status is None:
                raise cluster.ClusterError("--condition needs --status True, False or Unknown")
            cond = nodes.set_condition(args.nodes, args.condition, args.status, args.reason, args.message,
                                       nodes.parse_duration(args.since))
            for name in args.nodes:
                print(f"{name}: {cond['type']}={cond['status']} since {cond['lastTransitionTime']} ({cond['reason']})")
        else:
            for name in args.nodes:
                result = nodes.set_allocatable(name, args.allocatable, args.resource)
                print(f"{name}: allocatable {result['resource']}={result['allocatable']} (capacity {result['capacity']})")
    elif args.command == "clear":
        for name in args.nodes:
            changed = nodes.clear(name)
            print(f"{name}: cleared {', '.join(changed) if changed else 'nothing (no injected fault)'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.dir:
        cluster.use_state_dir(args.dir)
    from ansible_collections.ai_infra.node_recovery.plugins.module_utils._client import KubernetesError

    try:
        return run(args)
    except (cluster.ClusterError, build.BuildError, KubernetesError) as err:
        print(f"localcluster {args.command}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
