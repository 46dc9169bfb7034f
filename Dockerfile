# syntax=docker/dockerfile:1
# Tollway's container image: a builder stage compiles the wheel (Rust extension + Python
# package) with maturin; the runtime stage is python:3.11-slim with only that wheel and its
# dependencies, run as a non-root user. `scripts/container-check` runs these same steps
# without Docker (CI runs it); keep the two in step.
#
#   docker build -t tollway .
#   docker run -p 8080:8080 -v $PWD/deploy/gateway.yaml:/etc/tollway/gateway.yaml:ro tollway
#
# The container's contract is its environment: TOLLWAY_CONFIG (file or directory),
# TOLLWAY_WORKERS (default: one per CPU the container may use), TOLLWAY_HOST (0.0.0.0) and
# TOLLWAY_PORT (8080). Host, port and workers given here win over `gateway-settings.server`.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS builder
# A C linker for the extension; rustup for a current stable toolchain (the crate needs 1.80+).
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/opt/rustup CARGO_HOME=/opt/cargo PATH=/opt/cargo/bin:$PATH
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
    | sh -s -- -y --profile minimal --default-toolchain stable --no-modify-path
RUN pip install --no-cache-dir "maturin>=1.7,<2"
WORKDIR /src
COPY Cargo.toml Cargo.lock pyproject.toml README.md ./
COPY rust rust
COPY python python
# Cache mounts keep the crate registry and the build between image builds.
RUN --mount=type=cache,target=/opt/cargo/registry \
    --mount=type=cache,target=/src/target \
    maturin build --release --out /wheels

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
# A fixed numeric uid so Kubernetes' runAsNonRoot can verify it.
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin tollway
# The wheel is bind-mounted from the builder, so it never becomes a layer of this image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv /opt/tollway \
 && /opt/tollway/bin/pip install --no-cache-dir --disable-pip-version-check /wheels/*.whl
ENV PATH=/opt/tollway/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TOLLWAY_CONFIG=/etc/tollway/gateway.yaml \
    TOLLWAY_HOST=0.0.0.0 \
    TOLLWAY_PORT=8080
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
# /healthz says the process answers; /readyz (for load balancers) turns 503 while draining.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('TOLLWAY_PORT', '8080'), timeout=2)"]
# `exec`: tollway's supervisor becomes PID 1 and gets SIGTERM itself; it drains and exits 0.
# nproc counts the CPUs the container may run on (not a CFS quota: set TOLLWAY_WORKERS then).
# Arguments after the image name are appended to `tollway serve`.
ENTRYPOINT ["/bin/sh", "-c", "exec tollway serve --host \"${TOLLWAY_HOST:-0.0.0.0}\" --port \"${TOLLWAY_PORT:-8080}\" --workers \"${TOLLWAY_WORKERS:-$(nproc)}\" \"$@\"", "tollway"]
