# tensortap developer commands. Two venvs (see README "Development"):
#   all-frameworks: numpy 1.23.5, torch 2.13.0, tensorflow-cpu 2.17.1, mxnet 1.9.1, gluonnlp 0.10.0
#   current-numpy:  numpy 2.x, torch 2.13.0, tensorflow-cpu 2.21.0 (no mxnet)
# They live outside the checkout (VENV_ROOT) so every clone reuses them; tools/venv.sh
# creates them when missing, reinstalls when requirements/ changes, and always reinstalls
# this workspace's packages (editable, no deps).

VENV_ROOT ?= $(HOME)/.cache/tensortap/venvs
VENV_ALL := $(VENV_ROOT)/all
VENV_NP2 := $(VENV_ROOT)/np2
PY_ALL := $(VENV_ALL)/bin/python
PY_NP2 := $(VENV_NP2)/bin/python
PYTEST_ARGS ?=

.PHONY: help venvs venv-all venv-np2 test test-all test-np2 demo bench lint dist

help:
	@echo "make demo   - set up the venv if needed, run the quick demo, print where the run and report are"
	@echo "make test   - set up both venvs if needed, run make lint, then the whole suite in each"
	@echo "make lint   - ruff, mypy and the import contracts (config in pyproject.toml; seconds with mypy's cache warm)"
	@echo "make bench  - overhead and throughput benchmarks (prints ratios)"
	@echo "make dist   - build every distribution's sdist and wheel into dist/ and check them"

venv-all:
	@tools/venv.sh $(VENV_ALL) requirements/all-frameworks.txt

venv-np2:
	@tools/venv.sh $(VENV_NP2) requirements/current-numpy.txt

venvs: venv-all venv-np2

# The code checks itself: ruff (style and likely bugs), mypy (types of the core; strict for the
# store, the capture interface and the plugin contract) and import-linter (the import contracts:
# no framework in the core, the store a leaf, no import cycle, ...), all configured in
# pyproject.toml and run from the all-frameworks venv. lint-imports reads this checkout's packages.
LINT_PATH := $(subst $(eval) ,:,$(wildcard core plugins/* contrib/*))

lint: venv-all
	$(VENV_ALL)/bin/ruff check .
	$(VENV_ALL)/bin/mypy
	PYTHONPATH=$(LINT_PATH) $(VENV_ALL)/bin/lint-imports

test: venvs lint
	@tools/system-deps.sh
	$(PY_ALL) -m pytest $(PYTEST_ARGS)
	$(PY_NP2) -m pytest $(PYTEST_ARGS)

test-all: venv-all
	$(PY_ALL) -m pytest $(PYTEST_ARGS)

test-np2: venv-np2
	$(PY_NP2) -m pytest $(PYTEST_ARGS)

demo: venv-all
	$(PY_ALL) examples/quickstart.py --out runs/demo

# Every distribution's sdist and wheel into dist/, built offline with the venv's hatchling, then
# checked: twine check --strict, each wheel's package, py.typed, README, LICENSE and entry points,
# one version for all and matching pins (tools/versions.py; `--set X.Y.Z` moves them together).
dist: venv-all
	$(PY_ALL) tools/dist.py --outdir dist

# Every benchmark prints ratios measured side by side in one run (medians of several runs).
# smdebug 1.0.34, the peer, needs its own numpy<2 venv: tools/smdebug-venv.sh builds it.
bench: venv-all
	tools/smdebug-venv.sh $(VENV_ROOT)/smdebug || echo "smdebug venv unavailable: its columns will say skipped"
	$(PY_ALL) benchmarks/overhead_torch.py --runs 5   # MLP and ResNet, 4 configs x 3 tools (~30 min: smdebug is slow)
	$(PY_ALL) benchmarks/unsaved_step_torch.py        # a hook on steps it does not save, against an A/A control (~1 min)
	$(PY_ALL) benchmarks/overhead_tensorflow.py
	$(PY_ALL) benchmarks/overhead_mxnet.py
	$(PY_ALL) benchmarks/store_throughput.py
	$(PY_ALL) benchmarks/bytes_per_step.py --quick
	$(PY_ALL) benchmarks/rules_throughput.py
	$(PY_ALL) benchmarks/big_run.py --steps 1000,3000
	$(PY_ALL) benchmarks/dask_rules.py
