# syntax=docker/dockerfile:1
# Two images from one builder, one per half of Respawn:
#   pipeline   what the operator runs in every attempt's pod: pipeline-runtime with the
#              [gcs] and [dataprep] extras; no kopf, aiohttp or kubernetes
#   operator   respawn-operator (its command) and kubectl-respawn: the [operator] extra
#              only; no numpy, no opencv (the last stage: `docker build .` builds it)
#
#   docker build --target pipeline -t respawn-pipeline:dev .
#   docker build --target operator -t respawn-operator:dev .
#
# Both run as uid 10001, write only to /tmp (mount an emptyDir there when
# readOnlyRootFilesystem is on) and have tini as PID 1, so the SIGTERM of a
# preemption reaches the runtime and it can commit a checkpoint before it exits 143.

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: turn the project and every dependency of both images into wheels ------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# .dockerignore lets in only what `pip install .` needs (pyproject.toml, README.md,
# pipeline_runtime/, operator/), so tests and local state never reach the image.
COPY . /src
# operator.txt: the [operator] extra's requirements, which the operator image installs in
# place of respawn's core dependencies (numpy, xxhash, rich are the runtime's, not the operator's).
RUN pip wheel --wheel-dir /wheels "/src[gcs,dataprep,operator]" \
 && python -c "import tomllib; extras = tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']; open('/wheels/operator.txt', 'w').write('\n'.join(extras['operator']) + '\n')"

# --- base: slim Python, tini, the uid 10001 user; no compiler, no source tree --------
# Each image installs its wheels as root, then switches to 10001 (USER, in each target).
FROM ${PYTHON_IMAGE} AS base
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 respawn \
 && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin respawn
# Nothing writes outside /tmp: HOME and TMPDIR point there, and no .pyc is written at run
# time (pip still compiles the installed modules at build time: it does not ask this).
ENV HOME=/tmp \
    TMPDIR=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
ENTRYPOINT ["/usr/bin/tini", "--"]

# --- pipeline: the runtime, gs:// checkpoints and the dataprep pipeline ---------------
FROM base AS pipeline
# Bind-mount the wheels instead of COPYing them: they never become a layer of the image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels "respawn[gcs,dataprep]" \
 && pip check
USER 10001:10001
# The operator gives every pod its command (pipeline-runtime run ...); alone it says what it holds.
CMD ["pipeline-runtime", "pipelines"]

# --- operator: respawn-operator and kubectl-respawn ----------------------------------
FROM base AS operator
# The [operator] requirements (checked as a set), then respawn without its core
# dependencies, then the operator's modules imported once to prove nothing is missing.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels -r /wheels/operator.txt \
 && pip check \
 && pip install --no-cache-dir --no-index --find-links=/wheels --no-deps respawn \
 && python -c "import respawn_operator.cli, respawn_operator.handlers, respawn_operator.kubectl_plugin, respawn_operator.crdgen"
USER 10001:10001
# Metrics (RESPAWN_METRICS_PORT) and the kopf liveness endpoint the chart configures.
EXPOSE 8080 8081
CMD ["respawn-operator"]
