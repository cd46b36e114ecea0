# syntax=docker/dockerfile:1
# leadrelay image: one image, three roles (see helm/leadrelay and docs/deploy.md).
#   web         gunicorn -c python:service.web.gunicorn_conf 'service.cli.serve:create_web_app()'   (default CMD)
#   dispatcher  leadrelay kafka-dispatch        (embedded mode: leadrelay dispatch)
#   consumers   leadrelay consume-sources
ARG PYTHON_VERSION=3.11

# ---- build: a virtualenv with leadrelay and its dependencies, nothing else ------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/leadrelay
WORKDIR /src
# Dependencies in their own layer, from pyproject.toml alone: a code change does not
# reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && /opt/leadrelay/bin/pip install -r /tmp/requirements.txt
# README.m[d]: pyproject's readme, copied when present.
COPY README.m[d] ./
COPY service ./service
COPY consumers ./consumers
COPY handlers ./handlers
# A regular (not editable) install: the runtime image needs no source tree, no tests.
RUN /opt/leadrelay/bin/pip install --no-deps . \
 && /opt/leadrelay/bin/pip uninstall --yes pip setuptools wheel

# ---- runtime: slim base, the venv, the default config, a non-root user -------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ARG UID=10001
RUN groupadd --system --gid ${UID} leadrelay \
 && useradd --system --uid ${UID} --gid ${UID} --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin leadrelay \
 && mkdir -p /var/lib/leadrelay \
 && chown ${UID}:${UID} /var/lib/leadrelay
COPY --from=build /opt/leadrelay /opt/leadrelay
# The bundled default; Kubernetes mounts its ConfigMap over this path.
COPY config/leadrelay.yaml /etc/leadrelay/leadrelay.yaml
ENV PATH=/opt/leadrelay/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LEADRELAY_CONFIG=/etc/leadrelay/leadrelay.yaml \
    GUNICORN_BIND=0.0.0.0:8080
# The default config's relative `storage.path` (var/leadrelay.db) lands on this writable dir.
# PROMETHEUS_MULTIPROC_DIR is set per role, not here: the web gets one from the chart (or
# gunicorn_conf makes one); the dispatcher must not have it, it serves its own port.
WORKDIR /var/lib/leadrelay
USER ${UID}:${UID}
EXPOSE 8080 9100
# Exec form: gunicorn is PID 1 and gets SIGTERM directly (graceful shutdown).
CMD ["gunicorn", "-c", "python:service.web.gunicorn_conf", "service.cli.serve:create_web_app()"]
