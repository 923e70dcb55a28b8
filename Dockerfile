# The detector image: `detector worker` by default; the same image runs
# `detector produce` and `detector responses` (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 detector \
    && mkdir -p /var/lib/detector \
    && chown detector /var/lib/detector

WORKDIR /app
# README.md* : pyproject.toml names it as the package readme.
COPY pyproject.toml constraints.txt README.md* ./
COPY detector ./detector
COPY models ./models
RUN pip install -c constraints.txt .

USER detector
ENV DETECTOR_MODEL_DIR=/app/models/default \
    DETECTOR_STATE_DIR=/var/lib/detector
VOLUME ["/var/lib/detector"]
# /metrics and /health
EXPOSE 6066
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:6066/health', timeout=3)"]
ENTRYPOINT ["detector"]
CMD ["worker"]
