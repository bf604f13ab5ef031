# Two commands do all the set-up on a fresh machine (see README):
#   make study   install into .venv, then run the default study (python -m study.run)
#   make test    install into .venv, then run the whole test suite
# The CPU build of torch is pinned: an unpinned torch pulls a multi-GB CUDA build. pip installs it
# (it reads pip's configuration, where a machine may keep its torch wheels); uv, installed beside
# it, installs the rest: about 10 s where pip took 75 s on 2 cores. uv reads PyPI or UV_INDEX_URL,
# not pip's configuration: where it fails, pip installs the rest instead.
# The install also puts Debian's chromium on a machine without one (apt-get, as root): the test of
# the MLflow UI drives a real browser, and browsers that Python packages download cannot be fetched
# here. Without apt-get it says so, and that test is skipped.
# On a GPU machine pick the CUDA build instead, e.g. make study TORCH_SPEC='torch==2.13.0'
# with pip configured for the CUDA wheel index.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
STUDY_ARGS ?=
PY := $(VENV)/bin/python

.PHONY: install study test

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 \
		&& apt-get update -q && apt-get install -y -q chromium; } \
		|| echo "chromium not installed (it takes apt-get, as root, and a package mirror): the MLflow UI test is skipped"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet '$(TORCH_SPEC)' uv
	$(VENV)/bin/uv pip install --quiet --python $(PY) -e '.[dev,notebook]' \
		|| { echo "uv could not install the project: pip installs it"; $(PY) -m pip install --quiet -e '.[dev,notebook]'; }
	touch $@

study: install
	$(PY) -m study.run $(STUDY_ARGS)

test: install
	$(PY) -m pytest -ra
