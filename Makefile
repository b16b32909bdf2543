# Two entry points for a fresh machine (see README):
#   make quickstart   install, then run tasks/quickstart.yaml on the local default with fire drills
#   make test         install (with the test servers' system packages), then run the whole suite
# Everything goes into .venv; torch/torchvision are pinned by constraints.txt.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CHAOS  ?= term@30%,kill@60%

.PHONY: quickstart test install system-deps bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/launch up tasks/quickstart.yaml --chaos $(CHAOS)
	$(BIN)/launch status

system-deps:
	bash scripts/install-system-deps.sh

test: $(STAMP) system-deps
	$(BIN)/python -m pytest

# Every benchmark in bench/, its tables written to bench/RESULTS.md (the aws CLI is a peer there).
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
