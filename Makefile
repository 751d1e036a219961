# One entry point for people and CI.
#   make repro   create .venv if missing, install pinned dependencies, run `dvc repro`
#   make test    install as needed, run the test suite (what .ci/run calls)
#   make verify  check that dvc.lock matches the code and that docs/benchmarks.md and the README's
#                headline table are what tools/render_results.py renders from benchmarks/results/,
#                re-run the pipeline, compare metrics/ with the committed ones (CI runs it after the tests)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.busseg-installed
# Stage commands call `python` and `dvc`: make them the virtual environment's.
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: install repro test test-fast verify bench clean-scratch

install: $(STAMP)

# --no-compile: pip would byte-compile every installed module (torch alone has thousands),
# ~40 s of a fresh install on a 2-core machine; Python compiles the few it imports on first use.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -c requirements.lock -e ".[dev]"
	touch $(STAMP)

repro: install
	$(BIN)/dvc repro

# Two workers (pytest-xdist) on the two-core machine; a test file stays on one worker, so the
# end-to-end pipeline tests share their one built project (tests/test_pipeline.py).
test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

verify: install
	$(BIN)/python tools/verify_results.py lock
	$(BIN)/python tools/render_results.py --check
	$(BIN)/dvc repro
	$(BIN)/python tools/verify_results.py metrics

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python benchmarks/pipeline_budget.py

clean-scratch:
	rm -rf .busseg/scratch
