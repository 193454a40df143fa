# vad-edge developer entry points. `make test` and `make demo` set everything up on a fresh Linux machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU wheel of torch lies on this project's machines; a Jetson keeps its system torch (see firmware_config).
TORCH  ?= torch==2.13.0
# AUTO builds the CUDA kernels when nvcc is found; ON requires it; OFF skips it.
VAD_EDGE_CUDA ?= AUTO
export VAD_EDGE_CUDA

SOURCES := pyproject.toml CMakeLists.txt $(shell find csrc -type f 2>/dev/null)

.PHONY: setup test demo bench gpu-check clean

setup: $(VENV)/.installed

$(VENV)/.installed: $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e '.[test,demo]'
	$(BIN)/python -c "import vad_edge, json; print(json.dumps(vad_edge.ops.backend()))"
	touch $@

test: setup
	$(BIN)/python -m pytest

demo: setup
	$(BIN)/vad-edge demo

bench: setup
	$(BIN)/python benchmarks/ops.py

# On a GPU machine with torch, nvcc, pybind11 and scikit-build-core already installed and no network (the
# lent device machine, a Jetson): build with the CUDA kernels required, then run the kernel tests (CUDA ones
# included) and the kernel benchmark with that machine's own Python.
gpu-check:
	VAD_EDGE_CUDA=ON $(PYTHON) -m pip install --quiet --no-build-isolation --no-deps -e .
	$(PYTHON) -c "import vad_edge, sys; b = vad_edge.ops.backend(); print(b); sys.exit(b['cuda_device'] is None)"
	$(PYTHON) -m pytest -ra tests/test_ops.py
	$(PYTHON) benchmarks/ops.py

clean:
	rm -rf build $(VENV)
