# syntax=docker/dockerfile:1
# One image for both halves of Respawn:
#   respawn-operator   the kopf operator (default command)
#   pipeline-runtime   what the operator runs in every attempt's pod
#
#   docker build -t respawn:dev .
#
# The runtime stage runs as uid 10001, writes only to /tmp (mount an emptyDir there
# when readOnlyRootFilesystem is on) and has tini as PID 1, so the SIGTERM of a
# preemption reaches the runtime and it can commit a checkpoint before it exits 143.

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: turn the project and every dependency into wheels ----------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# .dockerignore lets in only what `pip install .` needs (pyproject.toml, README.md,
# pipeline_runtime/, operator/), so tests and local state never reach the image.
COPY . /src
RUN pip wheel --wheel-dir /wheels /src

# --- runtime: slim base, wheels only, no compiler, no source tree --------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 respawn \
 && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin respawn
# Bind-mount the wheels instead of COPYing them: they never become a layer of the image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels respawn \
 && pip check
# Nothing writes outside /tmp: HOME and TMPDIR point there, and no .pyc is written at run time.
ENV HOME=/tmp \
    TMPDIR=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
USER 10001:10001
# Metrics (RESPAWN_METRICS_PORT) and the kopf liveness endpoint the chart configures.
EXPOSE 8080 8081
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["respawn-operator"]
