"""envs/carla type-checks (mypy --strict) against the stubs inside the installed carla wheel."""

import pytest

from envs.carla.typecheck import PACKAGE_DIR, run_mypy


@pytest.mark.slow  # about a minute on a cold cache on two busy cores, seconds once cached
def test_envs_carla_passes_mypy_against_the_carla_stubs(tmp_path):
    result = run_mypy([PACKAGE_DIR])
    assert result.returncode == 0, result.stdout + result.stderr

    # The check has teeth: a misuse of the client is caught through the stubs, not typed as Any.
    misuse = tmp_path / "misuse.py"
    misuse.write_text("import carla\n\nworld: int = carla.Client('localhost', 2000).get_world()\n")
    result = run_mypy([misuse])
    assert result.returncode == 1
    assert 'expression has type "World", variable has type "int"' in result.stdout
