# Two commands do all the setup: `make demo` and `make test`. Both create .venv and install into it.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# The CPU wheel of this version lies on the development machines; elsewhere pip fetches it from PyPI.
# Override for your machine, e.g. `make test TORCH=torch` to keep a CUDA build you already have.
TORCH ?= torch==2.13.0

.PHONY: demo test install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Core only: Pillow, pandas, tqdm. Seconds to install; enough for the classic backend.
$(VENV)/.core: $(PY) pyproject.toml
	$(PY) -m pip install -q -e .
	touch $@

# Test extras: torch first and pinned (an unpinned torch would pull a multi-GB CUDA build), then diffusers.
$(VENV)/.test: $(VENV)/.core
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[diffusers,test]"
	touch $@

install: $(VENV)/.core

test: $(VENV)/.test
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

clean:
	rm -rf $(VENV) cache_local .pytest_cache
