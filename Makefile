# predcache: every command a newcomer needs. `make install` then `make test`.
export UV_PYTHON_DOWNLOADS := never
UV ?= $(shell command -v uv 2>/dev/null || echo .venv-uv/bin/uv)
RUN := $(UV) run --frozen
PAIR ?= ETH-EUR
PORT ?= 8000
CHAOS_SECONDS ?= 600
CHAOS_SEED ?= 1
# llama-cpp-python (dev group, for the LLM gateway's tests) is built from source by `make install`:
# a portable build (no -march=native, so a wheel uv cached on one machine runs on another) without
# the multimodal tool. uv caches the wheel: only the first install pays the ~3 minutes.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF

.PHONY: install run api-without-cache api-with-cache requests loadtest test lint docker-up compose-smoke bench chaos

install: ## create .venv from uv.lock (bootstraps uv with pip if it is missing)
	@command -v uv >/dev/null 2>&1 || [ -x .venv-uv/bin/uv ] || \
		(python3 -m venv .venv-uv && .venv-uv/bin/pip install --quiet uv)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(UV) sync --frozen --all-extras

run: ## the API with the settings from the environment (embedded cache unless REDIS_URL is set)
	$(RUN) python -m service --port $(PORT)

api-without-cache: ## the baseline: every request calls the model
	$(RUN) python -m service --port $(PORT) --no-cache

api-with-cache: ## the API over the local Redis
	$(RUN) python -m service --port $(PORT) --redis-url $${REDIS_URL:-redis://127.0.0.1:6379/0}

requests: ## 100 sequential requests, one "Time taken" line each, then a summary
	$(RUN) python -m loadtest --url http://127.0.0.1:$(PORT)/predict --pair $(PAIR) --n 100 --concurrency 1 --verbose --no-progress

loadtest: ## 100 requests, 10 at a time, with the per-class report
	$(RUN) python -m loadtest --url http://127.0.0.1:$(PORT)/predict --pair $(PAIR) --n 100 --concurrency 10

test: ## the whole suite (needs a Redis at REDIS_URL or redis-server on PATH)
	$(RUN) pytest -q

lint: ## ruff, mypy --strict, import layers of service/, and the dependency audit (says plainly when it could not audit; PREDCACHE_REQUIRE_AUDIT=1 fails then)
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	$(RUN) lint-imports --no-cache
	$(RUN) python -m tools.audit

bench: ## every benchmark, side by side: writes benchmarks/results/bench.{md,json}
	$(RUN) python -m benchmarks.run

chaos: ## a seeded random schedule of faults, checking the invariants after each step
	$(RUN) python -m tests.faults.chaos --seconds $(CHAOS_SECONDS) --seed $(CHAOS_SEED)

docker-up: ## the API with Redis in containers
	docker compose up --build

compose-smoke: ## build the image and run the compose stack for real under podman (needs root; see deploy/compose-checks)
	../shared/tools/compose-smoke .
