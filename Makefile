# Two commands do all the setup: `make demo` and `make test`. Both create .venv and install into it.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# torch and a torchvision built for it (Qwen-Image-Edit's Qwen2VLProcessor needs torchvision; PyPI's torchvision
# does not import beside every torch). Both wheels of this pair lie on the development machines; elsewhere pip
# fetches them from PyPI. Override for your machine, e.g. `make test TORCH="torch torchvision"` to keep the CUDA
# builds you already have.
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test install browser clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Core only: Pillow, pandas, tqdm. Seconds to install; enough for the classic backend.
$(VENV)/.core: $(PY) pyproject.toml
	$(PY) -m pip install -q -e .
	touch $@

# Test extras: torch and torchvision first and pinned (unpinned, pip would pick its own pair), then diffusers.
$(VENV)/.test: $(VENV)/.core
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[diffusers,test]"
	touch $@

install: $(VENV)/.core

# The classic backend on the bundled photos: CPU only, offline. Unsupported rows (object-level edits) end as
# error rows, so exit code 1 (some rows failed) is expected here; the last line printed is the output JSONL.
DEMO_OUT ?= demo_output
demo: $(VENV)/.core
	@$(VENV)/bin/dataflow-edit run dataflow/example/image_edit/demo.jsonl --backend classic --out $(DEMO_OUT); \
	 code=$$?; [ $$code -le 1 ] || exit $$code

# Debian's chromium for the gallery's browser test (skipped cleanly where it cannot be installed).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	 { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	   apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	 echo "note: chromium is not installed; the gallery's browser test will be skipped"

test: $(VENV)/.test browser
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

clean:
	rm -rf $(VENV) cache_local .pytest_cache $(DEMO_OUT)
