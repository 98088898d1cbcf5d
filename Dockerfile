# vitrine worker image: the Celery worker runtime, the `vitrine` CLI and the shipped model.
#
#   docker build -t vitrine .
#   docker run --rm -e DATABASE_URL=... -e REDIS_URL=... vitrine worker --concurrency 2
#
# The build context should exclude .venv/, caches and local data (see .dockerignore, if
# present): only the paths copied below are used.

# ---------------------------------------------------------------------------- build
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# A compiler only for dependencies without a wheel for this platform; none of it reaches
# the runtime image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
# The package `vitrine` (its folder links to the rooms copied beside it) with its model
# and data as package data.
COPY vitrine ./vitrine
COPY models ./models
COPY pipeline ./pipeline
COPY sources ./sources
COPY db ./db
COPY worker ./worker
COPY ops ./ops
COPY bench ./bench
COPY cli ./cli
COPY api ./api
# Not embedded/ (its link in vitrine/ dangles, so the wheel leaves it out): the image talks
# to the PostgreSQL and Redis named by DATABASE_URL and REDIS_URL, and carries no server
# manager (nor the `embedded` extra's binaries).
RUN pip install --upgrade pip setuptools wheel \
    && pip install . \
    && vitrine --help > /dev/null

# ---------------------------------------------------------------------------- runtime
FROM python:3.11-slim

# The default model is package data in site-packages (read-only for the worker user): no
# VITRINE_MODEL_DIR to set.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    TF_CPP_MIN_LOG_LEVEL=2 \
    VITRINE_DATA_DIR=/data

RUN groupadd --system --gid 10001 vitrine \
    && useradd --system --uid 10001 --gid vitrine --create-home --home-dir /home/vitrine \
        --shell /usr/sbin/nologin vitrine \
    && mkdir -p /data /uploads /app \
    && chown vitrine:vitrine /data /uploads

COPY --from=build /opt/venv /opt/venv
WORKDIR /app

USER vitrine:vitrine

# Documentation only (publishing is the orchestrator's business, see docs/deploy.md):
# 8000 `vitrine serve` (HTTP API, /healthz, /readyz), 9809 the API's /metrics
# (VITRINE_API_METRICS_PORT), 9808 a worker's /metrics (VITRINE_METRICS_PORT).
EXPOSE 8000 9808 9809

ENTRYPOINT ["vitrine"]
CMD ["--help"]
