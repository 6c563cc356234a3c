# hrtemflow: the README's two commands.
#   make demo   create .venv if needed, install, run the default campaign (config/config.yaml) end to end
#   make test   create .venv if needed, install, run the tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2
PYTEST_ARGS ?=

.PHONY: demo test install bench bench-learning lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml
	@echo "demo done: see results/summary/campaign.json, results/figures/ and results/reports/"

test: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --lint --configfile config/config.yaml

bench: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/run_all.py

# the learning stage's accuracy targets: three bench campaigns (config/bench-*.yaml), ~1 h on 2 cores
bench-learning: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/learning_accuracy.py

clean:
	rm -rf results .snakemake
