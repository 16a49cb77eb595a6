# The commands the README names. Each sets up what it needs in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MNIST_DIR ?= ../shared/data/mnist
export MNIST_DIR

.PHONY: install install-dev install-train proto run test check format train evaluate evaluate-paper evaluate-read explain evaluate-explain bench soak slowloris fuzz mutate docker lock clean

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

# The V2 gRPC messages and stubs, committed next to their source. Their descriptors go to a pool of their own, not
# protobuf's default one: tritonclient registers the same `inference.*` names there, and both must load in one process.
PROTO := app/protos/grpc_predict_v2.proto
proto: install-dev                 ## regenerate app/protos/*_pb2*.py from $(PROTO)
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. $(PROTO)
	sed -i 's/_descriptor_pool\.Default()\.AddSerializedFile/_descriptor_pool.DescriptorPool().AddSerializedFile/' \
		$(PROTO:.proto=_pb2.py)

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

evaluate: install-train            ## re-measure the committed models: accuracy, calibration, not-a-digit rates
	$(PY) -m training evaluate --data-dir $(MNIST_DIR)

evaluate-paper: install           ## accuracy on photos of digits on paper, before/after the paper stage (issue 20)
	$(PY) -m benchmarks.paper_eval

explain: install-dev               ## write each model's gradient graph (explain.onnx), checked by finite differences, into models/
	$(PY) -m training export-explain --data-dir $(MNIST_DIR)

evaluate-explain: install-dev      ## faithfulness of every explanation method on every model (deletion, randomised weights) -> cards
	$(PY) -m benchmarks.explain_eval --data-dir $(MNIST_DIR)

evaluate-read: install-dev         ## accuracy of POST /read on numbers composed from MNIST test digits (held-out seeds, ~12 min)
	$(PY) -m benchmarks.read_eval --seed 1 2 5 6 7 8 9 --count 1000 --data-dir $(MNIST_DIR)

bench: install-dev                 ## load-test the service against its ceiling and peers (needs wrk, and h2load for gRPC)
	command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	command -v h2load >/dev/null || (apt-get update -q && apt-get install -y -q nghttp2-client)
	$(PY) -m benchmarks.bench
	$(PY) -m benchmarks.read_bench
	$(PY) -m benchmarks.grpc_bench
	$(PY) -m benchmarks.explain_bench --data-dir $(MNIST_DIR)

soak: install-dev                  ## two minutes of mixed valid and invalid load, then bursts of huge images; checks statuses and memory
	command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	$(PY) -m benchmarks.soak
	$(PY) -m benchmarks.burst

fuzz: install-dev                  ## the decoder fuzz test at 20x its CI size, every input through HTTP (~5 min)
	FUZZ_SCALE=20 $(PY) -m pytest -q tests/app/test_decoder_fuzz.py

mutate: install-dev                ## mutation testing, module by module (mutmut; long, not in CI); prints the score per module
	$(PY) -m benchmarks.mutation_report --run $(MODULES)

slowloris: install-dev             ## p99 at c=16 with 200 slow clients vs without; recovery after kill -9 of the model
	command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	$(PY) -m benchmarks.slowloris

docker:                            ## build the CPU image
	docker build --network host -t mnist-serve:0.1.0 .

# The images' Python dependencies, pinned with every file's hash, for Linux x86_64 and the base images' Python: 3.11
# (python:3.11-slim), 3.12 for the GPU image (Ubuntu 24.04's).
# Keeps the current pins; `make lock LOCK_FLAGS=--upgrade` moves them to the newest versions pyproject.toml allows.
uv_compile = $(VENV)/bin/uv pip compile pyproject.toml --generate-hashes --python-version $(1) \
	--python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" -q $(LOCK_FLAGS)
lock: | $(PY)                      ## re-pin deploy/requirements.lock and deploy/requirements-gpu.lock
	$(PY) -m pip install -q uv
	$(call uv_compile,3.11) -o deploy/requirements.lock
	$(call uv_compile,3.12) --extra gpu --no-emit-package onnxruntime -o deploy/requirements-gpu.lock

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
