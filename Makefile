# Two entry points on a fresh machine: `make run` (the whole study, CPU) and `make test`.
PYTHON ?= python3
VENV ?= .venv
# Data: DATA_DIR if given, else ../shared/data if it is there, else the Hugging Face Hub (`make run DATA_DIR=`).
DATA_DIR ?= $(wildcard ../shared/data)
RUN_ARGS ?=
# Empty: torch from the default index (on Linux PyPI's is the CUDA build, which the GPU study needs).
# CI sets https://download.pytorch.org/whl/cpu for the CPU wheel.
TORCH_INDEX_URL ?=

DATA_ARG = $(if $(DATA_DIR),--data-dir $(DATA_DIR))
# numpy 2.4 and pandas 3.1 ship wheels for Python 3.11 and later only; every pin, torch 2.13.0 included,
# has them up to 3.14. Tested on 3.11.
PY_SUPPORTED = 3.11 3.12 3.13 3.14
py_version = $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
check_python = $(if $(filter $(PY_SUPPORTED),$(py_version)),,$(error $(PYTHON) is $(or $(py_version),not found): FinCompress needs Python 3.11 to 3.14 (tested on 3.11); run make PYTHON=python3.11))

# Before any install: the tests read the real data from a folder, never from the Hub.
ifneq ($(filter test mutation,$(MAKECMDGOALS)),)
ifeq ($(DATA_DIR),)
$(error make test and make mutation need the data in a folder: there is no ../shared/data; pass DATA_DIR=/path (python scripts/hub_data.py fetch DIR writes one from the Hub))
endif
endif

.PHONY: run smoke test mutation bundle install install-dev clean
run: $(VENV)/.installed
	$(VENV)/bin/python run_all.py $(DATA_ARG) $(RUN_ARGS)

smoke: $(VENV)/.installed
	$(VENV)/bin/python run_all.py --smoke $(DATA_ARG) --out-dir smoke_out $(RUN_ARGS)

test: $(VENV)/.installed-dev
	FINCOMPRESS_DATA_DIR=$(abspath $(DATA_DIR)) $(VENV)/bin/python -m pytest -q tests

# Mutation testing of the plumbing (setup.cfg [mutmut]: which modules, which fast tests); not part of `make test`.
# About 18 minutes on the 2-core dev machine (1,730 mutants); the score per module follows (scripts/mutation_score.py).
mutation: $(VENV)/.installed-dev
	rm -rf mutants
	start=$$(date +%s); FINCOMPRESS_DATA_DIR=$(abspath $(DATA_DIR)) $(VENV)/bin/mutmut run --max-children 2; \
	echo "mutation testing took $$(( $$(date +%s) - start )) s"
	$(VENV)/bin/python scripts/mutation_score.py --equivalent scripts/mutation_equivalent.txt

# reports/ + artifacts/model + a manifest in one zip (scripts/bundle.py --help).
bundle: $(VENV)/.installed
	$(VENV)/bin/python scripts/bundle.py $(BUNDLE_ARGS)

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# torch goes first and alone, pinned, so that no other package picks its build.
$(VENV)/.installed: requirements.txt
	$(check_python)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(VENV)/bin/python -m pip install -q -r requirements.txt
	touch $@

# Test-only tools on top: `make test` installs them, `make run` does not.
$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(VENV)/bin/python -m pip install -q -r requirements-dev.txt
	touch $@

clean:
	rm -rf data checkpoints logs results artifacts smoke_out reports/executed
