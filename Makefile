# Two commands do all the set-up on a fresh machine (see README):
#   make study   install into .venv, then run the default study (python -m study.run)
#   make test    install into .venv, then run the whole test suite
# The CPU build of torch is pinned: an unpinned torch pulls a multi-GB CUDA build. pip installs it
# (it reads pip's configuration, where a machine may keep its torch wheels); uv installs the rest,
# several times faster than pip. uv reads PyPI (or UV_DEFAULT_INDEX), not pip's configuration:
# where pip cannot install uv, or uv fails, pip installs the rest. Both hold torch to TORCH_SPEC
# (a constraint file), so no dependency swaps it for another build. uv does not compile bytecode
# at install (compiling every package took a minute here, all uv saves): Python writes it on first
# import, as it does by default, so these recipes unexport PYTHONDONTWRITEBYTECODE, which would
# make every process compile torch, Ray and MLflow from source again (twice the import time here).
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
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install study test

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 \
		&& apt-get update -q && apt-get install -y -q chromium; } \
		|| echo "chromium not installed (it takes apt-get, as root, and a package mirror): the MLflow UI test is skipped"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet '$(TORCH_SPEC)'
	echo '$(TORCH_SPEC)' > $(VENV)/torch-constraint.txt
	$(PY) -m pip install --quiet uv || echo "uv not installed (pip's index has none)"
	if [ -x $(VENV)/bin/uv ] && $(VENV)/bin/uv pip install --quiet --python $(PY) \
		-c $(VENV)/torch-constraint.txt -e '.[dev,notebook]'; then :; else \
		echo "pip installs the project instead of uv (see above)"; \
		$(PY) -m pip install --quiet -c $(VENV)/torch-constraint.txt -e '.[dev,notebook]'; fi
	touch $@

study: install
	$(PY) -m study.run $(STUDY_ARGS)

test: install
	$(PY) -m pytest -ra
