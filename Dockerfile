# syntax=docker/dockerfile:1
# predcache API image: `docker compose up --build` runs three of these behind nginx, sharing one Redis.
FROM python:3.11-slim

# Never let uv fetch its own Python: the image's interpreter is the one the lock was made for.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/app/.venv

ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"

WORKDIR /app

# Optional extras of pyproject.toml, space-separated: `--build-arg EXTRAS=examples` adds scikit-learn and
# numpy for MODEL=examples.price_forecaster:PriceForecaster. Empty: the slim service image.
ARG EXTRAS=""

# Dependencies first, from the lock alone, so editing the code does not reinstall them.
# Same command as `make install` (uv sync --frozen), minus the dev group; extras only when asked for.
# EXTRAS is unquoted on purpose: each word becomes one --extra.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project $(for e in ${EXTRAS}; do printf -- '--extra %s ' "$e"; done)

COPY README.md ./
COPY service ./service
COPY loadtest ./loadtest
# The example plug-ins and their data files, the whole folder: MODEL=examples.linear_model:LinearTrendModel
# (the working directory is on sys.path); with EXTRAS=examples, examples.price_forecaster:PriceForecaster.
COPY examples ./examples
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev $(for e in ${EXTRAS}; do printf -- '--extra %s ' "$e"; done)

# Fixed ids, so Kubernetes' runAsUser/runAsGroup (deploy/kubernetes) name this user without a lookup.
RUN groupadd --system --gid 10001 predcache \
    && useradd --system --uid 10001 --gid predcache --no-create-home --shell /usr/sbin/nologin predcache
USER predcache

ENV PATH="/app/.venv/bin:${PATH}"
EXPOSE 8000

# slim has no curl; urlopen raises on anything but 2xx, which exits non-zero.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]

# python is PID 1 and receives SIGTERM itself: in-flight requests finish before it exits.
CMD ["python", "-m", "service", "--host", "0.0.0.0"]
