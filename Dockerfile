# The gateway's image: the web server, the Celery worker and beat all run it
# (see compose.yaml). Build with `docker compose build`.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN useradd --system --uid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin gateway

# Requirements first: the layer is rebuilt only when the pins change.
COPY requirements/base.txt requirements/base.txt
RUN pip install -r requirements/base.txt

# Only the code: never .env, .venv, var/ or a local database.
COPY manage.py ./
COPY gateway gateway
COPY accounts accounts
COPY billing billing
COPY proxy proxy
COPY cachestore cachestore
COPY templates templates

# Settings need a secret to load; this one exists only during the build.
RUN SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput -v 0 \
    && mkdir -p var/usage-spool \
    && chown -R gateway:gateway var

USER gateway
EXPOSE 8000
# Several processes on one port: uvicorn's supervisor forks the workers onto
# one listening socket; the ASGI lifespan starts and drains each one's usage meter.
CMD ["uvicorn", "gateway.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--workers", "4", \
     "--lifespan", "on", "--timeout-graceful-shutdown", "20", "--no-server-header", "--no-access-log"]
