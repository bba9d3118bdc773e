# syntax=docker/dockerfile:1
# museflow image: `museflow` is the entrypoint, `worker` the default command, so
#   docker run IMAGE                                   -> every role in one process
#   docker run IMAGE worker --roles scorer --models m  -> one role
#   docker run IMAGE topics create                     -> any other CLI command
# Runtime deps only: the wheels of confluent-kafka, xgboost (libgomp bundled), numpy and
# datasketches are manylinux builds, so the runtime stage needs no compiler and no apt packages.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/museflow
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY agents ./agents
COPY museflow ./museflow
# `pip install .`, not '.[dev]': pytest, ruff, mypy and friends stay out of the image.
RUN /opt/museflow/bin/pip install . \
 && /opt/museflow/bin/museflow --help >/dev/null

FROM ${PYTHON_IMAGE}
ARG MUSEFLOW_UID=10001
RUN groupadd --system --gid "${MUSEFLOW_UID}" museflow \
 && useradd --system --uid "${MUSEFLOW_UID}" --gid museflow --home-dir /var/lib/museflow \
      --shell /usr/sbin/nologin museflow \
 && mkdir -p /var/lib/museflow/data /var/lib/museflow/models \
 && chown -R museflow:museflow /var/lib/museflow
COPY --from=build /opt/museflow /opt/museflow
ENV PATH=/opt/museflow/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MUSEFLOW_DATA_DIR=/var/lib/museflow/data \
    MUSEFLOW_MODEL_DIR=/var/lib/museflow/models \
    MUSEFLOW_METRICS_PORT=9108
WORKDIR /var/lib/museflow
USER 10001:10001
EXPOSE 9108
# Liveness only (200 while the event loop runs); readiness is /readyz, probed by compose and k8s.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MUSEFLOW_METRICS_PORT', '9108'), timeout=4)"]
ENTRYPOINT ["museflow"]
CMD ["worker"]
