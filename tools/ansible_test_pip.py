"""ansible-test bootstraps pip in its virtual environments with a get-pip script it downloads
from a host this machine cannot reach. This stand-in does the same with what can be reached:
the pip bundled with Python (ensurepip), upgraded from the package index to the version asked.

    python tools/ansible_test_pip.py install   # put the stand-in where ansible-test looks first
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CACHE = Path.home() / ".ansible" / "test" / "cache"
GET_PIP_ONLY_OPTIONS = ("--no-setuptools", "--no-wheel")  # get-pip's own flags, not pip install's


def bootstrap(pip_args: list[str]) -> None:
    """What ansible-test runs: `python get_pip.py <pip install arguments>`."""
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
    subprocess.check_call([sys.executable, "-m", "pip", "install",
                           *[arg for arg in pip_args if arg not in GET_PIP_ONLY_OPTIONS]])


def install() -> Path:
    from ansible_test._internal.python_requirements import get_venv_packages

    class Python:  # get_venv_packages only reads .version
        version = f"{sys.version_info.major}.{sys.version_info.minor}"

    version = get_venv_packages(Python())["pip"]
    target = CACHE / f"get_pip_{version.replace('.', '_')}.py"
    CACHE.mkdir(parents=True, exist_ok=True)
    target.write_text(Path(__file__).read_text())
    return target


if __name__ == "__main__":
    if sys.argv[1:] == ["install"]:
        print(f"ansible-test pip bootstrap: {install()}")
    else:
        bootstrap(sys.argv[1:])
