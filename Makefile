# One-command entry points (see README.md). Each target builds .venv from nothing when missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.paddle_kure-installed
FMNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz

.PHONY: venv data test test-gpu demo bench check-cuda mutate clean

venv: $(STAMP)

$(STAMP): requirements.lock requirements-nodeps.txt setup.py pyproject.toml $(wildcard csrc/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip==26.3 setuptools==80.9.0 wheel==0.48.0
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

# Fashion-MNIST from Debian's package (offline); without root or apt, the library
# falls back to Paddle's downloader and says so.
data:
	@test -f $(FMNIST) || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    (apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null; \
	  else echo "note: Fashion-MNIST package not installed (needs root apt-get); data falls back to download"; fi; }

# Compiles the CUDA kernels with nvcc without a GPU: against Paddle's headers,
# and the standalone test program without Paddle, which then checks the moment
# math on the host (a compile error or a wrong result fails `make test`).
check-cuda: venv
	$(PY) tools/check_cuda_sources.py

# The standalone CUDA test (tests/cuda/, no Paddle): built here, run where a
# GPU is present; without one it says it skipped the run. tests/cuda/run_gpu_checks.sh
# adds compute-sanitizer and writes docs/results/gpu.md.
NVCC       ?= nvcc
CUDA_ARCH  ?= native
CUDA_TEST  := build/test_kurtosis_cuda

$(CUDA_TEST): tests/cuda/test_kurtosis_cuda.cu csrc/kurtosis_cuda.cuh
	@mkdir -p build
	$(NVCC) -O2 -std=c++17 -arch=$(CUDA_ARCH) -Xcompiler -fopenmp -Icsrc $< -o $@

test-gpu:
	@if ! command -v $(NVCC) >/dev/null; then echo "test-gpu: SKIPPED, nvcc not found: nothing built or run"; \
	else $(MAKE) --no-print-directory $(CUDA_TEST) && ./$(CUDA_TEST); fi

test: venv data check-cuda
	$(PY) -m pytest -q tests

demo: venv data
	$(VENV)/bin/paddle-kure run

# bench_inference times the models that `paddle-kure run` exports (runs/default).
bench: venv data
	$(PY) benchmarks/bench_kurtosis.py
	test -f runs/default/export/qat_w8a8.pdmodel || $(VENV)/bin/paddle-kure run --no-progress
	$(PY) benchmarks/bench_inference.py runs/default

# Mutation testing of the core (tools/mutate.py): not part of `make test`; about 30 min on 2 cores.
# Writes docs/results/mutation.md. MUTATE_ARGS="--only prune,nn --no-cpp" runs a subset.
MUTATE_STAMP := $(VENV)/.mutate-installed

$(MUTATE_STAMP): requirements-mutate.txt $(STAMP)
	$(PY) -m pip install -q -r requirements-mutate.txt
	touch $@

mutate: venv $(MUTATE_STAMP)
	nice -n 10 $(PY) tools/mutate.py $(MUTATE_ARGS)

clean:
	rm -rf build dist *.egg-info paddle_kure/*.so
