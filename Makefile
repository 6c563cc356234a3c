# hrtemflow: the README's two commands.
#   make demo   create .venv if needed, install, run the default campaign (config/config.yaml) end to end
#   make test   create .venv if needed, install, lint (make lint), run the tests
#   make lint   ruff (check and format), the import-layers contract (each stage imports only the ones before it),
#               the config reference is current, snakemake --lint
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2
PYTEST_ARGS ?=

.PHONY: demo test test-backend install bench bench-learning lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install --only-binary=zarrs -e ".[test,lint,fast-read]" || { \
	  echo "make: install with zarrs (wheel only) failed; installing without it: the learning feed then streams with zarr-python's own reader (2-3x slower)"; \
	  $(BIN)/python -m pip install -e ".[test,lint]"; }
	touch $@

install: $(VENV)/.installed

demo: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml
	@echo "demo done: see results/summary/campaign.json, results/figures/ and results/reports/"

test: lint
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

# the learning tests (models, feed, train, evaluate, predict) under another Keras backend:
#   make test-backend KERAS_BACKEND=jax     (jax is a test dependency)
#   make test-backend KERAS_BACKEND=torch   (after `.venv/bin/pip install torch`: PyPI's torch brings the
#                                            CUDA libraries, about 5 GB, so it is not a test dependency)
LEARN_TESTS := tests/test_learn_models.py tests/test_learn_data.py tests/test_learn_train.py tests/test_apply.py
test-backend: install
	@test -n "$(KERAS_BACKEND)" || { echo "make test-backend: set KERAS_BACKEND=jax or KERAS_BACKEND=torch" >&2; exit 2; }
	@$(BIN)/python -c "import $(KERAS_BACKEND)" 2>/dev/null || { echo "make test-backend: $(KERAS_BACKEND) is not installed in $(VENV); run $(BIN)/pip install $(KERAS_BACKEND)" >&2; exit 2; }
	KERAS_BACKEND=$(KERAS_BACKEND) PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest $(LEARN_TESTS) $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks studies
	$(BIN)/ruff format --check --quiet src tests benchmarks studies
	$(BIN)/lint-imports
	$(BIN)/hrtemflow config-doc --check
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --lint --configfile config/config.yaml

bench: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/run_all.py

# the learning stage's accuracy targets: five bench campaigns (config/bench-*.yaml), ~3.5 h on 2 cores
bench-learning: install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/learning_accuracy.py

clean:
	rm -rf results .snakemake
