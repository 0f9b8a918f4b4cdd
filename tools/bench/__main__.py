"""python -m tools.bench [name ...]: run the named benchmarks (default: all)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                  if m.name.startswith("bench_"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all: {', '.join(available())})")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for trying a benchmark out")
    args = parser.parse_args(argv)
    names = args.names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        print(f"bench: unknown benchmark '{unknown[0]}' (known: {', '.join(available())})", file=sys.stderr)
        return 2
    for name in names:
        print(f"== benchmark {name}", flush=True)
        importlib.import_module(f"tools.bench.bench_{name}").run(quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
