# syntax=docker/dockerfile:1
# Multi-stage: build the locked virtual environment, then copy it into a slim runtime that runs as non-root.

FROM python:3.11-slim AS build
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
RUN pip install --no-cache-dir "uv>=0.13,<0.14"
WORKDIR /app
COPY pyproject.toml uv.lock ./
# Exactly what uv.lock pins for the app: no dependency groups (tests, linters, the benchmark). For tracing
# (OTEL_EXPORTER_OTLP_ENDPOINT): docker build --build-arg UV_GROUPS="--group tracing" .
ARG UV_GROUPS=""
RUN uv sync --frozen --no-default-groups --no-install-project ${UV_GROUPS}

FROM python:3.11-slim AS runtime
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    APP_ENV=production \
    DATA_DIR=/app/data
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin app \
    && mkdir -p /app/data && chown app:app /app/data
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY pyproject.toml manage.py ./
COPY app ./app
COPY config ./config
COPY db ./db
USER app
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]
# Run migrations as a separate step (docker run IMAGE python manage.py migrate) before starting new versions.
CMD ["python", "manage.py", "serve", "--host", "0.0.0.0", "--port", "8000"]
