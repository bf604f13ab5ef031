"""Test support: helpers, constants and test-only programs shared by the test modules.

Nothing here is part of the shipped packages (pyproject.toml's package discovery includes only
agents*, envs*, study* and analysis*): this code exists for the tests alone. Shared pytest
fixtures live in tests/conftest.py; plain helpers that take arguments, and constants, live here,
so that no test module imports another.

    analysis_store   a small study in the results-contract layout (MLflow store, Tune folder)
    notebook         the report's expected files, running the analysis notebook, child env
    study_cli        running ``python -m study.run`` as a subprocess and reading its MLflow runs
    browser          ``mlflow ui`` and headless chromium over the DevTools protocol
    carla            a CarlaUE4.sh that launches the stand-in server, free port ranges
    carla_standin    the stand-in CARLA server (``python -m tests.support.carla_standin``)
"""
