# Dannaya gateway. Build: docker build -t dannaya .
# Run (one server, SQLite):  docker run -p 8000:8000 -v dannaya-data:/data \
#   -v /etc/dannaya/gateway.keys:/data/gateway.keys -e GATEWAY_WEBHOOK_TOKEN=... dannaya
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# libcairo2 and a font for the PNG charts (cairosvg renders the dashboard's SVG ones).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libcairo2 fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*

# Dependencies first, in their own layer: it only changes when pyproject.toml does.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the gateway itself, with its default flows, catalogs and migrations.
COPY gateway ./gateway
COPY flows ./flows
COPY messages ./messages
COPY alembic ./alembic
COPY alembic.ini ./
COPY docker/entrypoint.sh /usr/local/bin/dannaya-entrypoint
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin dannaya \
    && mkdir -p /data && chown dannaya /data

USER dannaya
WORKDIR /data
ENV GATEWAY_ENV=production \
    GATEWAY_DATABASE_URL=sqlite:////data/gateway.db \
    GATEWAY_KEY_FILE=/data/gateway.keys \
    PORT=8000
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request, os; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'))"
ENTRYPOINT ["dannaya-entrypoint"]
