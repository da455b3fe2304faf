# ganlab: `make demo` runs the whole study on embedded defaults; `make test` runs the test suite.
# Both set everything up themselves on a fresh machine: venv, install, data.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ganlab-installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist
PYTEST_ARGS ?=

.PHONY: install data browser lint test test-slow demo benchmarks ui clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Fashion-MNIST from Debian's dataset-fashion-mnist when no copy is around and we may install it.
data:
	@if [ -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz ] || [ -n "$$GANLAB_DATA_DIR" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's dataset-fashion-mnist"; \
	  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null)); \
	else echo "no Fashion-MNIST found: run 'sudo apt-get install dataset-fashion-mnist' or set GANLAB_DATA_DIR"; fi

# Chromium renders the analysis report in a test; installed like the data when we may, and a
# missing browser stops `make test` here, saying what to install, instead of skipping that test.
browser:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium (for the report rendering test)"; \
	  apt-get install -y -q chromium >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null) || \
	   { echo "make browser: could not install chromium; run 'apt-get install chromium' (the report test needs it)" >&2; exit 1; }; \
	else echo "make browser: no chromium; run 'sudo apt-get install chromium' (the report test needs it)" >&2; exit 1; fi

lint: install
	$(BIN)/ruff check .

test: install data browser
	$(BIN)/python -m pytest -m "not slow" --durations=15 $(PYTEST_ARGS)

test-slow: install data browser
	$(BIN)/python -m pytest -m slow --durations=15 $(PYTEST_ARGS)

demo: install data
	$(BIN)/ganlab demo

benchmarks: install data
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/quality_speed.py
	$(BIN)/python benchmarks/sweep_overhead.py
	$(BIN)/python benchmarks/compression.py --load both

ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf $(VENV) mlflow.db mlartifacts ray_results demo_out .cache
