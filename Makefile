# vad-edge developer entry points. `make test` and `make demo` set everything up on a fresh Linux machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU wheel of torch lies on this project's machines; a Jetson keeps its system torch (see firmware_config).
TORCH  ?= torch==2.13.0
# AUTO builds the CUDA kernels when nvcc is found; ON requires it; OFF skips it.
VAD_EDGE_CUDA ?= AUTO
export VAD_EDGE_CUDA
# The development build also compiles the CUDA kernels for the CPU (vad_edge._cuda_emulated), so the tests
# run every CUDA kernel on machines without a GPU.
VAD_EDGE_CUDA_EMULATION ?= ON
export VAD_EDGE_CUDA_EMULATION

SOURCES := pyproject.toml CMakeLists.txt $(shell find csrc -type f 2>/dev/null)

.PHONY: setup test test-aarch64 system-packages demo bench gpu-session gpu-session-tiny gpu-wheels clean

setup: $(VENV)/.installed

$(VENV)/.installed: $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e '.[test,demo,export]'
	$(BIN)/python -c "import vad_edge, json; print(json.dumps(vad_edge.ops.backend()))"
	touch $@

# The tests also run system tools (a real mosquitto, shellcheck, systemd-analyze, openssl, kill): say in one
# line what to install before building anything, rather than fail one test at the end. First the package's
# layers (pyproject.toml, [tool.importlinter]): an upward import fails here.
test: system-packages setup
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest

# The kernels, the model's scores, the agent and the installer's Jetson branch on aarch64 (a Jetson's CPU),
# under qemu in an arm64 Debian root cached in /var/cache/vad-edge/aarch64. Needs root and the network;
# .ci/aarch64/run lists its stages, and `make test-aarch64 STAGES="build install kernels"` runs some.
STAGES ?=
test-aarch64:
	.ci/aarch64/run $(STAGES)

system-packages:
	@missing="$$(sh .ci/missing-packages)"; if [ -n "$$missing" ]; then \
	  echo "make test needs these system packages: sudo apt-get install -y $$missing"; exit 1; fi

demo: setup
	$(BIN)/vad-edge demo

bench: setup
	$(BIN)/python benchmarks/ops.py

# The prepared run for a borrowed GPU machine (torch, nvcc, pybind11, scikit-build-core, OpenCV; no network):
# build with CUDA (sm_90), kernel tests, compute-sanitizer, kernel and model benchmarks, then train and
# evaluate `paper` on Ped2 in the minutes left; <= 8 files in OUT. Ped2 travels as data/ped2-video (its
# video files, docs/development.md). The dependencies that machine's Python lacks travel as wheels in .whl:
# `make gpu-wheels` downloads them here (for its CPython 3.12 on x86-64) and the session installs them.
# `make gpu-session-tiny` runs the same steps on a CPU in a minute (CI).
OUT ?= gpu-out
gpu-session:
	$(PYTHON) benchmarks/gpu_session.py --out $(OUT)

# What the H100 of 2026-12-05 lacked (gpu-session's `dependencies` step names what else is missing).
GPU_WHEELS ?= paho-mqtt==2.2.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
gpu-wheels:
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)

gpu-session-tiny: setup
	$(BIN)/python benchmarks/gpu_session.py --tiny --out $(OUT)

clean:
	rm -rf build $(VENV)
