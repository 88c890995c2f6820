# Two commands on a fresh machine:  `make run`  and  `make test`  (see README.md).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The CPU build of torch is installed first so that nothing pulls a multi-GB CUDA build.
# Elsewhere than this machine, point pip at the CPU wheels: make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_VERSION ?= 2.13.0
TORCH_INDEX   ?=
TORCH_ARGS    := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
# llama-cpp-python compiles llama.cpp from source. Not with -march=native: on CPUs that advertise AMX (Intel
# Sapphire Rapids and later), ggml's AMX kernels die with SIGILL inside some virtual machines, and a native build
# does not run on an older CPU that later shares the pip cache. AVX2 runs on every x86-64 CPU of the last decade.
# The wheel is built once into a wheelhouse named after the version and flags (kept outside the repo, so fresh
# clones and CI reuse it); other CPUs: make install LLAMA_CMAKE_ARGS="-DGGML_NATIVE=ON" LLAMA_FLAVOUR=native
LLAMA_CPP_VERSION ?= 0.3.36
LLAMA_FLAVOUR     ?= avx2
LLAMA_CMAKE_ARGS  ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
WHEELHOUSE        ?= $(HOME)/.cache/rag-app/wheels/llama-cpp-$(LLAMA_CPP_VERSION)-$(LLAMA_FLAVOUR)
SAMPLES ?= samples/guide
HOST    ?= localhost
PORT    ?= 8501

.PHONY: install system-deps run ingest-samples app test test-fast bench clean

# Debian packages the browser tests and Chinese rendering need (Chromium, its driver, CJK fonts). Installed when
# missing and we are root with apt (CI is); otherwise the browser tests skip and say why.
SYSTEM_PACKAGES ?= chromium chromium-driver fonts-noto-cjk
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "not installing$$missing (needs root and apt-get): the browser tests will skip"; fi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install $(TORCH_ARGS) torch==$(TORCH_VERSION)
	# llama-cpp-python compiles from source the first time (about 11 minutes on 2 cores), then comes from the wheelhouse.
	ls $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip wheel --no-deps --no-cache-dir \
		--no-binary llama-cpp-python llama-cpp-python==$(LLAMA_CPP_VERSION) -w $(WHEELHOUSE)
	$(BIN)/python -m pip install --find-links $(WHEELHOUSE) -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

ingest-samples: install
	$(BIN)/rag ingest $(SAMPLES) --quiet

app: install
	$(BIN)/streamlit run streamlit_app.py --server.address $(HOST) --server.port $(PORT) \
		--server.headless true --browser.gatherUsageStats false

# The main job on the embedded default: ingest the shipped user guide, then serve the app on localhost.
run: ingest-samples app

test: install system-deps
	$(BIN)/python -m pytest -q -ra

test-fast: install
	$(BIN)/python -m pytest -q -ra -m "not e2e"

# Issue-2 benchmarks (quick); bench/ingest_bench.py and bench/retrieval_latency.py take minutes each.
bench: install
	$(BIN)/python bench/ingest_speed.py
	$(BIN)/python bench/llm_speed.py

clean:
	rm -rf $(VENV) data .pytest_cache
