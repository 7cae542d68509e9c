# The bridge as an image, for platforms that build one (Fly.io, Railway, Kubernetes...).
# Point DATABASE_URL at PostgreSQL; the SQLite default lives in /data (mount a volume there).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY bridge ./bridge
RUN pip install -c constraints.txt . \
    && useradd --system --uid 10001 --no-create-home --home-dir /app smsbridge \
    && mkdir /data \
    && chown smsbridge /data
COPY config ./config

ENV PORT=8000 \
    DATABASE_URL=sqlite:////data/smsbridge.db
VOLUME ["/data"]
EXPOSE 8000
USER 10001

# The slim image has no curl: ask the bridge's /healthz with Python itself.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/healthz', timeout=4)"]

CMD ["smsbridge", "serve"]
