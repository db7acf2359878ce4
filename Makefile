# Two entry points on a fresh machine: `make run` (the whole study, CPU, offline) and `make test`.
PYTHON ?= python3
VENV ?= .venv
DATA_DIR ?= ../shared/data
RUN_ARGS ?=

.PHONY: run smoke test clean
run: $(VENV)/.installed
	$(VENV)/bin/python run_all.py --data-dir $(DATA_DIR) $(RUN_ARGS)

smoke: $(VENV)/.installed
	$(VENV)/bin/python run_all.py --smoke --data-dir $(DATA_DIR) --out-dir smoke_out $(RUN_ARGS)

test: $(VENV)/.installed
	FINCOMPRESS_DATA_DIR=$(abspath $(DATA_DIR)) $(VENV)/bin/python -m pytest -q tests

# torch goes first and alone: the pinned CPU wheel, so nothing pulls a CUDA build.
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q torch==2.13.0
	$(VENV)/bin/python -m pip install -q -r requirements.txt
	touch $@

clean:
	rm -rf data checkpoints logs results artifacts smoke_out reports/executed
