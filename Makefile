# videojobs: two commands on a fresh machine -- `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
PIP         := $(VENV)/bin/pip
SHARED      ?= $(abspath ../shared)
MODEL       ?= $(SHARED)/models/yolov8n.pt
SAMPLE      ?= $(SHARED)/media/bottle-detection.mp4
TOOLS       := .tools
BUF         := $(TOOLS)/node_modules/.bin/buf
APT_PACKAGES := tesseract-ocr tesseract-ocr-eng libtesseract-dev libleptonica-dev pkg-config curl prometheus \
                chromium chromium-driver faketime

export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := 0
export OMP_THREAD_LIMIT := 1
export VIDEOJOBS_MODEL ?= $(MODEL)

# Fragments in mk/ add targets and may append checks to TEST_CHECKS.
TEST_CHECKS := proto-check lint-proto lint scan
-include mk/*.mk

WORKERS     ?= 2

.PHONY: help install run serve test unit lint integration e2e proto proto-check lint-proto scan schemas clean up down stack-status bench-throughput bench-observability chaos bench-viewer bench-pipeline bench-pipeline-avx2 bench-rates bench-results bench-frame-memory

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-14s %s\n", $$1, $$2}'

install: $(VENV)/.installed $(BUF) .env ## Install apt packages, the Python env in .venv and the tools
	@true

# Settings for `videojobs` commands run from this checkout (the environment still wins).
.env:
	@echo "VIDEOJOBS_MODEL=$(MODEL)" > $@
	@echo "wrote .env: VIDEOJOBS_MODEL=$(MODEL)"

$(VENV)/.installed: pyproject.toml
	@command -v tesseract >/dev/null && dpkg -s $(APT_PACKAGES) >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); }
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# CPU inference only; these two come from the machine's local wheel store.
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q --no-binary tesserocr -e '.[worker,dev]'
	@touch $@

$(BUF):
	@mkdir -p $(TOOLS)
	cd $(TOOLS) && npm install --silent --no-audit --no-fund --prefix . @bufbuild/buf@1 >/dev/null

run: install ## Install everything, then serve on embedded defaults (REST :8080, gRPC :50051, one worker)
	$(VENV)/bin/videojobs serve

serve: ## Serve without the install step
	$(VENV)/bin/videojobs serve

proto: $(VENV)/.installed ## Regenerate the gRPC code from protos/
	$(PY) -m grpc_tools.protoc -I protos --python_out=libs/common --pyi_out=libs/common \
	  --grpc_python_out=libs/common protos/videojobs/v1/jobs.proto

schemas: $(VENV)/.installed ## Regenerate the contract's JSON Schemas from its types
	$(PY) -m videojobs.common.schemas

proto-check: $(VENV)/.installed ## Fail if regenerating the gRPC code changes it
	@tmp=$$(mktemp -d); $(PY) -m grpc_tools.protoc -I protos --python_out=$$tmp --pyi_out=$$tmp \
	  --grpc_python_out=$$tmp protos/videojobs/v1/jobs.proto && \
	  diff -r -x __pycache__ -x __init__.py $$tmp/videojobs/v1 libs/common/videojobs/v1 && echo "proto: generated code up to date"; \
	  rc=$$?; rm -rf $$tmp; exit $$rc

lint-proto: $(BUF) ## buf lint (STANDARD)
	$(BUF) lint

lint: $(VENV)/.installed ## ruff: pyflakes-level errors in the Python code
	$(VENV)/bin/ruff check libs services tests scripts deploy

scan: ## Governance scanner: forbidden vocabulary and phase-named files
	$(PY) scripts/governance_scan.py

test: install $(TEST_CHECKS) ## Install if needed, then run every test
	$(PY) -m pytest tests

unit: ## Unit tests only
	$(PY) -m pytest tests/unit

up: install ## Production shape as separate processes: Postgres, NATS, S3 server, api, gateway, WORKERS=N workers
	$(PY) scripts/stack.py up --workers $(WORKERS)

down: ## Stop what `make up` started
	$(PY) scripts/stack.py down

stack-status: ## Each `make up` process: alive, pid, metrics URL, log file
	$(PY) scripts/stack.py status

chaos: install ## Chaos scenarios (outages, kills, stalled uploads) on private Postgres/NATS/S3; JSON in var/chaos.json
	$(PY) scripts/chaos.py --json var/chaos.json

bench-observability: install ## Overhead of metrics + tracing on the yolo pipeline per frame; JSON in var/bench-observability.json
	$(PY) scripts/bench_observability.py

bench-pipeline: install ## Frames/s of the pipeline vs YOLO.predict+pytesseract, Ultralytics' OpenVINO stream and the bare forward; JSON in var/bench-pipeline.json
	$(PY) scripts/bench_pipeline.py --long-factor 3 --out var/bench-pipeline.json

bench-pipeline-avx2: install ## The same with every library capped at AVX2 (an AVX2-only CPU's stand-in); var/bench-pipeline-avx2.json
	$(PY) scripts/bench_pipeline.py --isa avx2 --long-factor 3 --out var/bench-pipeline-avx2.json

bench-rates: install ## Cost of the tenant request-rate check per call (process window; + shared Postgres counters) and a race of two limiters; JSON in var/bench-rates.json
	$(PY) scripts/bench_rates.py

bench-frame-memory: install ## Peak memory of one job by frame size (720p to 8K), against the worker's Kubernetes memory limit; JSON in var/bench-frame-memory.json
	$(PY) scripts/bench_frame_memory.py

bench-results: install ## Memory of a long job's results (worker merge, api document, unpaged REST answer), 10k and 100k frames; JSON in var/bench-results.json
	$(PY) scripts/bench_results.py

bench-throughput: install ## Jobs/s through submit -> queue -> worker -> COMPLETED with 1 and 4 workers
	$(PY) scripts/bench_throughput.py

bench-viewer: install ## Viewer page and frame endpoint timings (embedded and stack, in chromium) on the sample
	$(PY) scripts/bench_viewer.py --shape both --browser

clean: ## Remove local state (var/) and caches
	rm -rf var .pytest_cache
