# The Flow Retail code location: one image for the code server, the webserver, the daemon and every run
# (deploy/compose.yaml, deploy/helm/values.yaml). Not built on the development machine (no Docker
# there); deploy/dagster.yaml, the same processes and PostgreSQL are tested by tests/deploy.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home

# An unprivileged user owns nothing but DAGSTER_HOME (local compute logs, artifacts).
RUN useradd --create-home --uid 10001 flowretail \
    && mkdir -p "$DAGSTER_HOME" \
    && chown flowretail "$DAGSTER_HOME"

WORKDIR /opt/flowretail
# Dependencies first, so code changes do not reinstall them. The package is installed editable
# because the SQL models (dbt_like_sql/) are read from beside the pipelines package.
COPY pyproject.toml ./
COPY pipelines/__init__.py pipelines/
RUN pip install -e '.[deploy]'
COPY pipelines/ pipelines/
COPY dbt_like_sql/ dbt_like_sql/
COPY workspace.yaml ./
COPY deploy/dagster.yaml "$DAGSTER_HOME/dagster.yaml"

USER flowretail
EXPOSE 4000
# The code server; compose and the Helm chart start the webserver and the daemon from the same image.
# Secrets (FLOWRETAIL_TOKEN, DATABASE_URL, DAGSTER_POSTGRES_URL) come from the environment at run time only.
CMD ["dagster", "api", "grpc", "-m", "pipelines.definitions", "-h", "0.0.0.0", "-p", "4000"]
