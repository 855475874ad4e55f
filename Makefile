# ctloop — two commands from a fresh clone: `make demo` and `make test`.
# Both bootstrap uv (from PyPI) and the locked environment themselves.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
UV_VERSION := 0.13.9

# uv: the one on PATH, else a private copy installed from PyPI into .tools/
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
export PATH := $(dir $(UV)):$(PATH)
export UV_PYTHON := 3.11
RUN := $(UV) run --frozen

.PHONY: demo test test-fast bench bench-ingest bench-features bench-train bench-dags bench-serve bench-monitor sync lint stack-down clean help
.DEFAULT_GOAL := help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(CURDIR)/.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	@touch $@

sync: .venv/.synced  ## install the locked environment into .venv

demo: .venv/.synced  ## run the loop end to end on the embedded stack (local runtime)
	$(RUN) ctloop demo

test: .venv/.synced  ## every test: unit, integration (real broker, moto S3), infra (checkov, kustomize)
	$(RUN) pytest

test-fast: .venv/.synced  ## the tests without the SIGKILL chaos loops
	$(RUN) pytest -m "not slow"

bench: bench-ingest bench-features bench-train bench-dags bench-serve bench-monitor  ## every benchmark; each prints one JSON line with its baseline

bench-ingest: .venv/.synced  ## lander events/s against a bare kafka-python consumer
	$(RUN) python -m benchmarks.bench_ingest

bench-features: .venv/.synced  ## the data path raw → training snapshot (1M events, 45 days) vs a bare Spark read+write; materialize and training-set rows/s; online p50/p99
	$(RUN) python -m benchmarks.bench_features

bench-train: .venv/.synced  ## training examples/s and wall time on a 500k-row snapshot vs loading it into memory
	$(RUN) python -m benchmarks.bench_train

bench-dags: .venv/.synced  ## each DAG file's import time vs a one-task DAG file (Airflow re-parses them all day)
	$(RUN) python -m benchmarks.bench_dags

bench-serve: .venv/.synced  ## latency at 200 req/s through the traffic switch vs direct to the slot vs in-process; saturation with/without batching
	$(RUN) python -m benchmarks.bench_serve

bench-monitor: .venv/.synced  ## drift check and GX suite on 100k x 100k rows vs reading those rows (goal: drift < 30 s)
	$(RUN) python -m benchmarks.bench_monitor

lint: .venv/.synced  ## ruff
	$(RUN) ruff check jobs tests benchmarks dags plugins

stack-down: .venv/.synced  ## stop the embedded services that `make demo` started
	$(RUN) ctloop stack down

clean: stack-down  ## stop the stack and remove local state (.state/)
	rm -rf .state
