# The commands the README names. Each sets up what it needs in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MNIST_DIR ?= ../shared/data/mnist
export MNIST_DIR

.PHONY: install install-dev install-train run test check format train evaluate bench soak slowloris docker clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# One stamp per extra, redone when pyproject.toml changes.
$(VENV)/.service: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@
$(VENV)/.dev: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[train,dev]'
	touch $@ $(VENV)/.service $(VENV)/.train
$(VENV)/.train: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[train]'
	touch $@ $(VENV)/.service

install: $(VENV)/.service          ## the service only (no TensorFlow)
install-dev: $(VENV)/.dev          ## service + training + test tools
install-train: $(VENV)/.train      ## service + training

run: install                       ## serve models/ on http://127.0.0.1:$PORT (default 8000)
	$(PY) -m app

test: install-dev                  ## the whole test suite
	$(PY) -m pytest

check: install-dev                 ## formatting and lint
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

format: install-dev
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

train: install-train               ## retrain every model from $MNIST_DIR into models/
	$(PY) -m training train --model all --data-dir $(MNIST_DIR)

evaluate: install-train            ## re-measure the committed models on the MNIST test set
	$(PY) -m training evaluate --data-dir $(MNIST_DIR)

bench: install-dev                 ## load-test the service against its ceiling and peers (needs wrk)
	command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	$(PY) -m benchmarks.bench

soak: install-dev                  ## two minutes of mixed valid and invalid load; checks statuses and memory
	command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	$(PY) -m benchmarks.soak

slowloris: install-dev             ## p99 at c=16 with 200 slow clients vs without; recovery after kill -9 of the model
	command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	$(PY) -m benchmarks.slowloris

docker:                            ## build the CPU image
	docker build --network host -t mnist-serve:latest .

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
