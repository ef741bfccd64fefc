# The Fast-Flow application image (web + worker). Run containers use WORKER_IMAGE instead.
FROM python:3.11-slim-bookworm

COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV UV_PROJECT_ENVIRONMENT=/venv UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy \
    PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1

# pg_dump/pg_restore for `manage.py backup` (the compose stack's PostgreSQL is 15 too).
RUN apt-get update && apt-get install -y --no-install-recommends postgresql-client git \
    openssh-client && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project
COPY . .

RUN useradd --create-home --uid 1000 fastflow && mkdir -p /data /logs \
    && chown fastflow /data /logs
USER fastflow
ENV DATA_DIR=/data LOGS_DIR=/logs PIPELINES_DIR=/pipelines STATIC_ROOT=/data/static DEBUG=false

EXPOSE 8000
CMD ["python", "manage.py", "up", "--host", "0.0.0.0", "--port", "8000"]
