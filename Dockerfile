# mnist-serve: the inference service only (no TensorFlow), with the bundled models.
#   CPU: docker build -t mnist-serve .
#   GPU: docker build --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#                     --build-arg ONNXRUNTIME=onnxruntime-gpu -t mnist-serve:gpu .
# A base image without Python (the CUDA ones) gets the distribution's python3.
ARG BASE_IMAGE=python:3.11-slim

# --- build: a virtual environment holding the service and its runtime dependencies
FROM ${BASE_IMAGE} AS build
ARG ONNXRUNTIME=onnxruntime
RUN command -v python3 >/dev/null || (apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*)
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install --no-cache-dir --upgrade pip \
    && pip install --no-cache-dir . \
    && if [ "$ONNXRUNTIME" != onnxruntime ]; then pip uninstall -y onnxruntime && pip install --no-cache-dir "$ONNXRUNTIME"; fi \
    && find /opt/venv -name __pycache__ -prune -exec rm -rf {} + \
    && pip uninstall -y pip

# --- runtime: the environment, the models, a non-root user
FROM ${BASE_IMAGE}
RUN command -v python3 >/dev/null || (apt-get update && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*) \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MNIST_HOST=0.0.0.0 \
    MNIST_PORT=8000 \
    MNIST_MODELS_DIR=/app/models
WORKDIR /app
COPY models ./models
USER 10001
EXPOSE 8000
# The slim image has no curl: the service ships its own probe.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["python3", "-m", "app.healthcheck"]
STOPSIGNAL SIGTERM
CMD ["python3", "-m", "app"]
