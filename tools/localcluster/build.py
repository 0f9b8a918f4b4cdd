"""Build the local cluster's binaries from the Go module proxy, cached by version.

kube-apiserver, kube-controller-manager, kube-scheduler and kubectl come from
k8s.io/kubernetes, whose go.mod replaces its staging modules with local paths; a
wrapper module pins each staging module to its published version instead. etcd
uses the same wrapper trick; kwok installs directly.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.14"
KWOK_VERSION = "v0.8.0"

KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")


class BuildError(Exception):
    """A build step failed; the message names the component and the reason."""


def cache_root() -> Path:
    explicit = os.environ.get("NODE_RECOVERY_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ai-infra-node-recovery"


def bin_dirs() -> dict[str, Path]:
    root = cache_root() / "bin"
    return {
        "kubernetes": root / f"kubernetes-{KUBERNETES_VERSION}",
        "etcd": root / f"etcd-{ETCD_VERSION}",
        "kwok": root / f"kwok-{KWOK_VERSION}",
    }


def binary_paths() -> dict[str, Path]:
    dirs = bin_dirs()
    paths = {name: dirs["kubernetes"] / name for name in KUBERNETES_COMMANDS}
    paths["etcd"] = dirs["etcd"] / "etcd"
    paths["kwok"] = dirs["kwok"] / "kwok"
    return paths


def kwok_stage_dir() -> Path:
    """Stage YAMLs ship inside the kwok module; kwok >= 0.8 has no built-in stages."""
    return go_mod_dir(f"sigs.k8s.io/kwok@{KWOK_VERSION}", "kwok") / "kustomize" / "stage"


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(GOTOOLCHAIN="local", GOWORK="off", GOFLAGS="-mod=mod", CGO_ENABLED="0")
    return env


def _run(component: str, args: list[str], cwd: Path | None = None, quiet: bool = False) -> str:
    if not quiet:
        print(f"[build {component}] $ {' '.join(args)}", flush=True)
    proc = subprocess.run(args, cwd=cwd, env=_go_env(), text=True, capture_output=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise BuildError(f"building {component} failed at '{' '.join(args[:3])}': " + "\n".join(tail))
    return proc.stdout


def go_mod_dir(module_at_version: str, component: str) -> Path:
    out = _run(component, ["go", "mod", "download", "-json", module_at_version], quiet=True)
    return Path(json.loads(out)["Dir"])


def _staging_modules(kubernetes_gomod: Path) -> list[str]:
    """Every `k8s.io/X v0.0.0` requirement of k8s.io/kubernetes is a staging module."""
    return sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+) v0\.0\.0\s*$", kubernetes_gomod.read_text(), re.M)))


def _version_ldflags(version: str) -> str:
    major, minor = version.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return " ".join(flags)


def _wrapper(component: str, workdir: Path) -> None:
    _run(component, ["go", "mod", "init", f"localcluster/{component}"], cwd=workdir)


def build_kubernetes(target: Path) -> None:
    component = "kubernetes"
    out = json.loads(_run(component, ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"]))
    staging = _staging_modules(Path(out["GoMod"]))
    if not staging:
        raise BuildError("building kubernetes failed: no staging modules found in its go.mod")
    published = "v0." + KUBERNETES_VERSION.lstrip("v").split(".", 1)[1]
    with tempfile.TemporaryDirectory(prefix="build-kubernetes-") as tmp:
        work = Path(tmp)
        _wrapper(component, work)
        edits = [f"-replace={mod}={mod}@{published}" for mod in staging]
        _run(component, ["go", "mod", "edit", f"-require=k8s.io/kubernetes@{KUBERNETES_VERSION}", *edits], cwd=work)
        packages = [f"k8s.io/kubernetes/cmd/{name}" for name in KUBERNETES_COMMANDS]
        _run(component, ["go", "get", "-tool", *[f"{p}@{KUBERNETES_VERSION}" for p in packages]], cwd=work)
        target.mkdir(parents=True, exist_ok=True)
        staged = work / "out"
        staged.mkdir()
        _run(
            component,
            ["go", "build", "-trimpath", "-tags", "selinux,notest", "-ldflags", _version_ldflags(KUBERNETES_VERSION),
             "-o", str(staged) + "/", *packages],
            cwd=work,
        )
        for name in KUBERNETES_COMMANDS:
            shutil.move(str(staged / name), target / name)


def build_etcd(target: Path) -> None:
    component = "etcd"
    with tempfile.TemporaryDirectory(prefix="build-etcd-") as tmp:
        work = Path(tmp)
        _wrapper(component, work)
        _run(component, ["go", "get", "-tool", f"go.etcd.io/etcd/server/v3@{ETCD_VERSION}"], cwd=work)
        target.mkdir(parents=True, exist_ok=True)
        _run(component, ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(target / "etcd"),
                         "go.etcd.io/etcd/server/v3"], cwd=work)


def build_kwok(target: Path) -> None:
    component = "kwok"
    with tempfile.TemporaryDirectory(prefix="build-kwok-") as tmp:
        env_bin = Path(tmp) / "bin"
        env_bin.mkdir()
        os.environ["GOBIN"] = str(env_bin)
        try:
            _run(component, ["go", "install", "-trimpath", "-ldflags", "-s -w", f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"])
        finally:
            os.environ.pop("GOBIN", None)
        target.mkdir(parents=True, exist_ok=True)
        shutil.move(str(env_bin / "kwok"), target / "kwok")


BUILDERS = {"etcd": build_etcd, "kwok": build_kwok, "kubernetes": build_kubernetes}


def _missing(component: str) -> bool:
    return any(not p.exists() for name, p in binary_paths().items()
               if (component == "kubernetes" and name in KUBERNETES_COMMANDS) or name == component)


def ensure_binaries(force: bool = False) -> dict[str, float]:
    """Build whatever is not cached; return seconds spent per component built."""
    if not force and not any(_missing(c) for c in BUILDERS):
        return {}
    if shutil.which("go") is None:
        raise BuildError("building the local cluster needs the Go toolchain ('go') on PATH")
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second caller waits, then finds the cache filled
        spent = _build_missing(force)
    record_build_stats(spent)
    return spent


def _build_missing(force: bool) -> dict[str, float]:
    spent: dict[str, float] = {}
    for component, builder in BUILDERS.items():
        target = bin_dirs()[component]
        if not force and not _missing(component):
            continue
        print(f"[build {component}] not cached in {target}; building (a cold kubernetes build takes 10-25 minutes)",
              flush=True)
        started = time.monotonic()
        builder(target)
        spent[component] = time.monotonic() - started
        print(f"[build {component}] done in {spent[component]:.0f}s", flush=True)
    return spent


def peak_child_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def record_build_stats(spent: dict[str, float]) -> None:
    """Kept beside the binaries so `make bench` can report the cold build it did not redo."""
    if not spent:
        return
    stats_file = cache_root() / "build-stats.json"
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    stats.update({name: {"seconds": round(sec), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
                  for name, sec in spent.items()})
    stats["peak_child_rss_mib"] = max(stats.get("peak_child_rss_mib", 0), round(peak_child_rss_mib()))
    stats_file.write_text(json.dumps(stats, indent=2))


def main() -> int:
    try:
        spent = ensure_binaries(force="--force" in sys.argv)
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if spent:
        print(f"built {', '.join(spent)} in {sum(spent.values()):.0f}s, peak child RSS {peak_child_rss_mib():.0f} MiB")
    else:
        print("all binaries cached")
    return 0


if __name__ == "__main__":
    sys.exit(main())
