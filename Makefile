# ganlab: `make demo` runs the whole study on embedded defaults; `make test` runs the test suite.
# Both set everything up themselves on a fresh machine: venv, install, data.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ganlab-installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist
PYTEST_ARGS ?=

.PHONY: install data browser postgres lint test test-slow test-servers demo benchmarks ui server docs clean

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

# $(call debian_package,TARGET,CHECK,PACKAGE,WHY): nothing when CHECK succeeds; else, as root with apt-get,
# install Debian's PACKAGE; else stop, saying what to install (a missing tool fails here, no test skips).
define debian_package
	@if $(2); then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's $(3) ($(4))"; \
	  apt-get install -y -q $(3) >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null && apt-get install -y -q $(3) >/dev/null) || \
	   { echo "make $(1): could not install $(3); run 'apt-get install $(3)' ($(4))" >&2; exit 1; }; \
	else echo "make $(1): no $(3); run 'sudo apt-get install $(3)' ($(4))" >&2; exit 1; fi
endef

# Chromium renders the analysis report in a test, installed like the data when we may.
browser:
	$(call debian_package,browser,command -v chromium >/dev/null || command -v chromium-browser >/dev/null,chromium,the report rendering test needs it)

# PostgreSQL for the cluster tests: they start a throwaway server of their own on 127.0.0.1.
postgres:
	$(call debian_package,postgres,ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v postgres >/dev/null,postgresql,the cluster tests need it)

lint: install
	$(BIN)/ruff check .

test: install data browser
	$(BIN)/python -m pytest -m "not slow and not servers" --durations=15 $(PYTEST_ARGS)

test-slow: install data browser
	$(BIN)/python -m pytest -m "slow and not servers" --durations=15 $(PYTEST_ARGS)

# PostgreSQL + an S3 server (moto) + `ganlab server` + `ray start` nodes, all on 127.0.0.1 (a few minutes)
test-servers: install data postgres
	$(BIN)/python -m pytest -m servers --durations=15 $(PYTEST_ARGS)

demo: install data
	$(BIN)/ganlab demo

benchmarks: install data
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/quality_speed.py
	$(BIN)/python benchmarks/sweep_overhead.py
	$(BIN)/python benchmarks/compression.py --load both

# the MLflow UI on ./mlflow.db; it prints the link that opens the runs table (MLflow 3.17 opens GenAI otherwise)
ui: install
	$(BIN)/ganlab server --port 5000

# a tracking server for a cluster: BACKEND=postgresql://USER@HOST/DB ARTIFACTS=s3://BUCKET/mlflow make server
server: install
	$(BIN)/ganlab server $(if $(BACKEND),--backend-store-uri $(BACKEND)) $(if $(ARTIFACTS),--artifacts-destination $(ARTIFACTS))

clean:
	rm -rf $(VENV) mlflow.db mlartifacts ray_results demo_out .cache site

# the docs site (MkDocs) into site/, warnings as errors: a broken link fails
docs: install
	$(BIN)/mkdocs build --strict --site-dir site
