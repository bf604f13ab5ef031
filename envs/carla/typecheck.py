"""Type-check envs/carla against the stubs inside the installed `carla` wheel.

The wheel ships `libcarla.pyi` and `command.pyi` but no `py.typed` marker, so mypy treats the
installed package as untyped and checks nothing against it. Putting a link to the installed
package on MYPYPATH makes mypy read it as a stub source instead (mypy refuses site-packages
itself on MYPYPATH, hence the link):

    python -m envs.carla.typecheck          # exits with mypy's status
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import carla

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG = PACKAGE_DIR / "mypy.ini"


def run_mypy(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    """mypy (envs/carla/mypy.ini) on `paths`, with the carla wheel's stubs visible."""
    with tempfile.TemporaryDirectory() as stub_root:
        (Path(stub_root) / "carla").symlink_to(Path(carla.__file__).parent, target_is_directory=True)
        env = {**os.environ, "MYPYPATH": stub_root}
        argv = [sys.executable, "-m", "mypy", "--config-file", str(CONFIG), *map(str, paths)]
        return subprocess.run(argv, env=env, capture_output=True, text=True, cwd=PACKAGE_DIR.parents[1], check=False)


if __name__ == "__main__":
    result = run_mypy([PACKAGE_DIR])
    print(result.stdout + result.stderr, end="")
    sys.exit(result.returncode)
