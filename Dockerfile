# One image definition for the seven services and the console; the build argument names which:
#   docker build --build-arg SERVICE=serving -t conveyor-serving .
# The build stage installs the locked dependencies of that service only (a cached layer), then
# its code and libraries as wheels; the runtime stage carries the virtual environment alone: no
# uv, no sources, no embedded broker or database (those are the CLI's `local` extra).
# tests/integration/test_images.py replays the build stage's steps for every service.

ARG UV_VERSION=0.13
FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

FROM python:3.11-slim AS build
COPY --from=uv /uv /bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /app
ARG SERVICE
COPY pyproject.toml uv.lock ./
COPY libs/contracts/pyproject.toml libs/contracts/
COPY libs/auth/pyproject.toml libs/auth/
COPY libs/bus/pyproject.toml libs/bus/
COPY libs/db/pyproject.toml libs/db/
COPY libs/telemetry/pyproject.toml libs/telemetry/
COPY libs/runtime/pyproject.toml libs/runtime/
COPY libs/cli/pyproject.toml libs/cli/
COPY libs/client/pyproject.toml libs/client/
COPY examples/pyproject.toml examples/
COPY services/ingest/pyproject.toml services/ingest/
COPY services/feature/pyproject.toml services/feature/
COPY services/trainer/pyproject.toml services/trainer/
COPY services/registry/pyproject.toml services/registry/
COPY services/serving/pyproject.toml services/serving/
COPY services/monitor/pyproject.toml services/monitor/
COPY services/feedback/pyproject.toml services/feedback/
COPY services/console/pyproject.toml services/console/
# A name that is not one of services/*: a failed build that lists the names, before any install.
RUN case "$SERVICE" in ""|*[!a-z]*) false ;; esac && test -d "services/$SERVICE" \
    || { printf 'SERVICE="%s" names no service; one of:' "$SERVICE" >&2; \
         for d in services/*; do printf ' %s' "${d#services/}" >&2; done; echo >&2; exit 1; }
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --no-install-workspace --package "conveyor-$SERVICE"
COPY libs libs
COPY services/${SERVICE} services/${SERVICE}
# Wheels, not editable installs: the runtime stage copies the environment without the sources.
# Then one name for the entry point (CMD cannot expand a variable), and the port the service
# listens on unless HTTP_PORT says otherwise, read from its own settings for the health check;
# importing them fails the build of a service that does not import.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package "conveyor-$SERVICE" \
    && ln -s "conveyor-$SERVICE" .venv/bin/conveyor-service \
    && .venv/bin/python -c "import importlib, sys; s = sys.argv[1]; \
m = importlib.import_module(f'conveyor_{s}.bootstrap'); \
print(getattr(m, s.capitalize() + 'Settings').model_fields['http_port'].default)" \
    "$SERVICE" > .venv/http-port

FROM python:3.11-slim
ARG SERVICE
LABEL org.opencontainers.image.title="conveyor-${SERVICE}"
# The uid the Kubernetes manifests run as (runAsUser); the files stay root's, world-readable.
RUN useradd --system --uid 10001 --no-create-home conveyor
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 HTTP_HOST=0.0.0.0
USER 10001
WORKDIR /app
# /healthz answers once the service has started (its schema migrated, its broker and database
# reached): as long as Kubernetes' startup probe allows (36 × 5 s), then 3 misses 10 s apart.
HEALTHCHECK --interval=10s --timeout=3s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('HTTP_PORT') or open('/app/.venv/http-port').read().strip(); urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2)"]
CMD ["/app/.venv/bin/conveyor-service"]
