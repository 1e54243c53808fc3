# syntax=docker/dockerfile:1
# stt-service, slim image: the flux and nova backends (Deepgram on SageMaker or Deepgram's API) and
# whisper-http (an OpenAI-compatible Whisper server elsewhere). No CTranslate2 or faster-whisper:
# for in-process Whisper on a GPU build Dockerfile.local instead.
#
#   docker build -t stt-service .
#   docker run --rm -e NATS_URL=nats://nats:4222 -e WHISPER_URL=http://whisper:8000 stt-service

# uv at the version that wrote uv.lock; only its binary is copied into the build stage.
FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# --- build: a virtual environment in /app/.venv, from the lock ------------------------------------
FROM python:3.12.12-slim-trixie AS build
COPY --from=uv /uv /usr/local/bin/uv
# UV_COMPILE_BYTECODE: the unprivileged runtime user cannot write __pycache__, so compile now
#   rather than on every start. UV_LINK_MODE=copy: the cache mount is another file system.
# UV_PYTHON_DOWNLOADS=never: the venv must use this image's Python, which the runtime stage shares.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never
WORKDIR /app
# Dependencies first, from the lock alone, so this layer is rebuilt only when they change.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --no-install-project --extra sagemaker
# Then the project itself, installed as a wheel (not editable): the runtime copies only the venv.
COPY README.md ./
COPY stt_service ./stt_service
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --extra sagemaker

# --- runtime ----------------------------------------------------------------------------------------
FROM python:3.12.12-slim-trixie
# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it; the venv stays root-owned.
RUN groupadd --system --gid 10001 stt \
 && useradd --system --uid 10001 --gid stt --no-create-home --shell /usr/sbin/nologin stt
COPY --from=build /app/.venv /app/.venv
ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    STT_LOG_FORMAT=json \
    STT_BACKEND=whisper-http \
    STT_HEALTH_PORT=8080
WORKDIR /app
USER 10001:10001
# /healthz and /readyz
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["stt-service", "healthcheck"]
# Exec form, no shell in between: SIGTERM reaches the worker, which drains its sessions within
# STT_DRAIN_TIMEOUT (20 s by default; keep the pod's terminationGracePeriodSeconds above it).
STOPSIGNAL SIGTERM
ENTRYPOINT ["stt-service"]
CMD ["serve"]
