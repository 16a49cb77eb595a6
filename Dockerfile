# mnist-serve: the inference service only (no TensorFlow), with the bundled models.
#   CPU: docker build -t registry.example.com/mnist-serve:0.1.0 .
#   GPU: docker build --build-arg BASE_IMAGE="$CUDA_IMAGE" --build-arg LOCK=deploy/requirements-gpu.lock \
#                     -t registry.example.com/mnist-serve:0.1.0-gpu .
#        with CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04@sha256:ac55d124da4882b497f732d8dfd9a702d5447a5f29d08d56da6f64f0a1eb34bc
# Base images are pinned by digest: a tag moves, a digest names one image. README, "Updating the pins", says how to
# move them. A base image without Python (the CUDA ones) gets the distribution's python3.
ARG BASE_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

# --- build: a virtual environment holding exactly the locked runtime dependencies
FROM ${BASE_IMAGE} AS build
ARG LOCK=deploy/requirements.lock
RUN command -v python3 >/dev/null || (apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*)
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY ${LOCK} /tmp/requirements.lock
# Every version pinned and every file checked against its hash (make lock): a rebuild installs the same files.
# pip compiles each module's bytecode as it installs; the image is read-only at run time, so that is the only chance.
# pip and the setuptools that venv adds are build tools: nothing imports them at run time (9 MB).
RUN pip install --no-cache-dir --require-hashes --no-deps --only-binary :all: -r /tmp/requirements.lock \
    && pip uninstall -y setuptools pip

# --- runtime: the environment, the service's source compiled, the models, a non-root user
FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title=mnist-serve org.opencontainers.image.version=${VERSION}
RUN command -v python3 >/dev/null || (apt-get update && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*) \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MNIST_HOST=0.0.0.0 \
    MNIST_PORT=8000 \
    MNIST_MODELS_DIR=/app/models
WORKDIR /app
COPY app ./app
# The service runs from its source (not pip-installed: nothing unlocked enters the image). Compiled here, checked by
# hash rather than timestamp, so the bytecode is the same in every build of the same source.
RUN python3 -m compileall -q --invalidation-mode checked-hash app
COPY models ./models
USER 10001:10001
EXPOSE 8000 8001
# The slim image has no curl: the service ships its own probe, which imports only the standard library.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["python3", "-m", "app.healthcheck"]
STOPSIGNAL SIGTERM
CMD ["python3", "-m", "app"]
