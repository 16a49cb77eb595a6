"""Every setting of the service, read from MNIST_* environment variables (PORT is also accepted)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "MNIST_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    models_dir: Path = Path("models")
    """Folder holding manifest.json and one sub-folder per model (model.onnx + card.json)."""

    default_model: str = "cnn"
    """Model used when a request names none."""

    provider: Literal["auto", "cpu", "cuda"] = "auto"
    """ONNX Runtime execution provider: auto = CUDA when onnxruntime offers it, else CPU."""

    intra_op_threads: int = Field(0, ge=0)
    """Threads ONNX Runtime may use inside one model call; 0 lets it use every core."""

    inter_op_threads: int = Field(1, ge=0)
    """Threads ONNX Runtime may use across independent graph nodes."""

    batching: bool = True
    """Gather concurrent requests for a model into one ONNX Runtime call."""

    max_batch_size: int = Field(64, ge=1)
    """Most images in one batched model call."""

    model_process: bool = True
    """Run the models in a child process of each worker that has two cores or more (CPU only): its event loop and
    ONNX Runtime then work side by side instead of taking turns for Python's GIL. false: in worker threads."""

    batch_delay_ms: float = Field(0.0, ge=0)
    """Longest a request waits for others to join its batch, in ms; 0 = take what is queued when the model is free."""

    max_upload_bytes: int = Field(10_000_000, gt=0)
    """Largest request body accepted, in bytes (larger: 413)."""

    max_image_pixels: int = Field(40_000_000, gt=0)
    """Largest image accepted, in pixels (width x height); guards against decompression bombs."""

    max_batch_images: int = Field(64, gt=0)
    """Most images accepted by one /predict/batch request."""

    api_key: str = ""
    """When set, every endpoint but health, metrics and docs requires it (header X-API-Key or Bearer)."""

    cors_origins: list[str] = []
    """Origins allowed to call the API from a browser (JSON list); none by default."""

    request_timeout_s: float = Field(30.0, gt=0)
    """A request not answered within this many seconds gets a 504."""

    header_timeout_s: float = Field(10.0, gt=0)
    """A request's line and headers must arrive within this many seconds of its first byte (or of the connection's
    start); else 408 and the connection is closed. Cuts off slow-header (slowloris) clients."""

    body_timeout_s: float = Field(20.0, gt=0)
    """A request's whole body must arrive within this many seconds of its headers; else 408 and the connection is
    closed. 20 s takes the largest upload (MNIST_MAX_UPLOAD_BYTES) at 4 Mbit/s; a digit image in well under 1 s."""

    max_header_bytes: int = Field(16_384, ge=1024)
    """Largest request line plus headers accepted, in bytes (larger: 431, and the connection is closed)."""

    strict_provider: bool = False
    """Refuse to start when MNIST_PROVIDER=cuda but CUDA is not available (instead of falling back to CPU)."""

    token_key: str = ""
    """Key for the activation tokens' integrity check; replicas behind one address must share it."""

    host: str = "127.0.0.1"
    """Address `python -m app` listens on (0.0.0.0 in the container)."""

    port: int = Field(8000, validation_alias=AliasChoices(f"{ENV_PREFIX}PORT", "PORT"))
    """Port `python -m app` listens on; MNIST_PORT or PORT."""

    workers: int = Field(1, ge=1)
    """Uvicorn worker processes started by `python -m app`."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level of the service."""
