# The two commands a newcomer needs: `make demo` and `make test`.
# Each sets up what it needs (virtualenv, pip, npm) and is fast the second time.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
NODE_STAMP := node_modules/.package-lock.json

.PHONY: setup web-assets demo test lint typecheck unit contracts clean bench-verify bench-outbox bench-rpc bench-overhead ipfs-node browser bench-api bench-big bench-data bench-replay screenshots bytecode

setup: $(STAMP) $(NODE_STAMP) web-assets

## web-assets: the page's chart library, from npm into the package's static files (no CDN)
# Built, not committed: ledger/api/web/vendor/ is gitignored and goes into the wheel.
VENDOR := ledger/api/web/vendor
web-assets: $(VENDOR)/chart.umd.min.js $(VENDOR)/chart.js.LICENSE.md

# The copy needs only the file npm put there: it never runs `npm ci` by itself (a
# worktree whose node_modules links to a shared one must not empty it); setup
# installs npm's packages first.
CHART_JS := node_modules/chart.js/dist/chart.umd.min.js
$(CHART_JS):
	@echo "$@ is missing: run make setup (npm ci installs chart.js)" >&2; exit 1

$(VENDOR)/chart.umd.min.js: $(CHART_JS) package-lock.json
	mkdir -p $(VENDOR)
	cp $(CHART_JS) $@

$(VENDOR)/chart.js.LICENSE.md: $(CHART_JS) package-lock.json
	mkdir -p $(VENDOR)
	cp node_modules/chart.js/LICENSE.md $@

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch is installed first, pinned, so that no resolver ever pulls another build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,lightning,hf]'
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

## demo: train the price-forecast example with the hook on a local chain, then verify its model
demo: setup
	$(PY) -m examples.demo

## test: ruff (check and format), mypy and the whole test suite against a real Anvil and a real IPFS node
test: setup ipfs-node browser lint typecheck
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check ledger training tests bench examples
	$(VENV)/bin/ruff format --check ledger training tests bench examples

typecheck: setup
	$(VENV)/bin/mypy

# Benches time the package as an install has it: with its bytecode written
# (pip compiles what it installs; an editable checkout compiles on first import,
# and not at all where PYTHONDONTWRITEBYTECODE is set, as it is in many images).
bytecode: setup
	$(PY) -m compileall -q ledger

## bench-verify: time `ledger verify` against model_signing, hashlib and sha256sum (BENCH_ARGS=--big for 4 GiB)
# The peers live in their own virtualenv, never in the project's dependencies.
# model-signing 1.1.1 needs pyopenssl without declaring it.
PEERS       := bench/.peers
PEERS_STAMP := $(PEERS)/.installed-stamp
BENCH_ARGS  ?=

$(PEERS_STAMP):
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --quiet model-signing==1.1.1 pyopenssl
	touch $@

bench-verify: setup $(PEERS_STAMP) bytecode
	$(PY) bench/verify.py $(BENCH_ARGS)

## bench-outbox: what a checkpoint costs the training loop, and checkpoints confirmed per second
bench-outbox: setup bytecode
	PYTHONPATH=. $(PY) bench/outbox.py $(BENCH_ARGS)

## bench-rpc: JSON-RPC requests and wall time of one outbox transaction, before and after batching
bench-rpc: setup bytecode
	PYTHONPATH=. $(PY) bench/rpc.py $(BENCH_ARGS)

## bench-overhead: training wall time with the ledger hook and with MLflow, each over plain training
# MLflow lives in its own virtualenv (with the same torch wheel), never in the project's.
MLFLOW       := bench/.mlflow
MLFLOW_STAMP := $(MLFLOW)/.installed-stamp

$(MLFLOW_STAMP):
	$(PYTHON) -m venv $(MLFLOW)
	$(MLFLOW)/bin/python -m pip install --quiet torch==2.13.0
	$(MLFLOW)/bin/python -m pip install --quiet mlflow==3.17.2
	touch $@

bench-overhead: setup $(MLFLOW_STAMP) bytecode
	PYTHONPATH=. $(PY) bench/hook_overhead.py $(BENCH_ARGS)

## contracts: rebuild the committed registry artifact from contracts/
contracts: setup
	$(PY) -m ledger.chain.compiler

## ipfs-node: the IPFS node the tests run (js-ipfs on Node 22, about 470 MB, 2 min the first time)
# Its own npm project, so `make setup` and `make demo` do not pay for it.
IPFS_NODE       := tools/ipfs-node
IPFS_NODE_STAMP := $(IPFS_NODE)/node_modules/.package-lock.json

ipfs-node: $(IPFS_NODE_STAMP)

$(IPFS_NODE_STAMP): $(IPFS_NODE)/package.json $(IPFS_NODE)/package-lock.json
	cd $(IPFS_NODE) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf $(VENV) $(VENDOR) $(PEERS) $(MLFLOW) $(SIGNING) $(DVC) node_modules $(IPFS_NODE)/node_modules demo-out .pytest_cache .mypy_cache .ruff_cache

## browser: Debian's chromium for the web page's browser test (nothing to do when present)
# Playwright drives this system chromium; it never downloads a browser.
browser:
	@test -x /usr/bin/chromium || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

## bench-big: 4 checkpoints of a 1 GiB state dict: plain torch.save vs the hook (copy and reference store modes) vs MLflow, and model_signing of the final file (BENCH_ARGS=--big for 4 GiB, --small for CPU per run and per checkpoint)
# model_signing (sigstore's model transparency) lives in its own virtualenv too; its
# signing module imports OpenSSL without requiring it, hence pyOpenSSL beside it.
SIGNING       := bench/.model_signing
SIGNING_STAMP := $(SIGNING)/.installed-stamp

$(SIGNING_STAMP):
	$(PYTHON) -m venv $(SIGNING)
	$(SIGNING)/bin/python -m pip install --quiet model-signing==1.1.1 pyopenssl==26.4.0
	touch $@

bench-big: setup $(MLFLOW_STAMP) $(SIGNING_STAMP) bytecode
	PYTHONPATH=. $(PY) bench/big_checkpoint.py $(BENCH_ARGS)

## bench-data: fingerprint a 10,000-file, 2 GiB folder cold and warm, against `dvc add` (BENCH_ARGS=--small)
# DVC lives in its own virtualenv, never in the project's dependencies.
DVC       := bench/.dvc
DVC_STAMP := $(DVC)/.installed-stamp

$(DVC_STAMP):
	$(PYTHON) -m venv $(DVC)
	$(DVC)/bin/python -m pip install --quiet dvc==3.67.1
	touch $@

bench-data: setup $(DVC_STAMP) bytecode
	PYTHONPATH=. $(PY) bench/data.py $(BENCH_ARGS)

## screenshots: the page tests, writing the README's screenshots into docs/images
screenshots: setup browser
	LEDGER_SCREENSHOT_DIR=docs/images $(PY) -m pytest tests/api/test_web_pages.py -q

## bench-replay: record a small CPU run of N intervals, replay K of them; ratio to K/N of the training's wall time
bench-replay: setup bytecode
	PYTHONPATH=. $(PY) bench/replay.py $(BENCH_ARGS)

## bench-api: index 100,000 run events, then 50 clients for 60 s on the API (BENCH_ARGS=--quick)
bench-api: setup
	$(PY) bench/api_load.py $(BENCH_ARGS)
