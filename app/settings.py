"""Every setting of the service, read from MNIST_* environment variables (PORT is also accepted)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "MNIST_"
# Keys copied from examples: a service started with one of them would accept anyone's forged tokens or calls.
PLACEHOLDER_KEYS = frozenset(
    {"change-me", "changeme", "change_me", "replace-me", "replaceme", "secret", "password", "example", "todo", "xxx"}
)


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

    watch_models: bool = False
    """Reload a model when its folder changes (card.json or the ONNX file, e.g. after `make train`), once its files
    have stopped changing; a failed reload keeps the version serving."""

    watch_interval_s: float = Field(1.0, gt=0)
    """How often the model folders are checked for changes when MNIST_WATCH_MODELS is on, in seconds."""

    max_upload_bytes: int = Field(10_000_000, gt=0)
    """Largest request body accepted, in bytes (larger: 413)."""

    max_image_pixels: int = Field(40_000_000, gt=0)
    """Largest image accepted, in pixels (width x height); guards against decompression bombs."""

    body_budget_bytes: int = Field(128_000_000, gt=0)
    """Most bytes of request bodies in flight per worker; a request beyond waits, then gets 503. At least
    max_upload_bytes."""

    decode_budget_pixels: int = Field(64_000_000, gt=0)
    """Most decoded pixels in flight per worker (1-4 bytes each); a request beyond waits, then gets 503. At least
    max_image_pixels."""

    admission_wait_s: float = Field(2.0, ge=0)
    """Longest a request waits for room in the body or decode budget before it gets 503 `overloaded`."""

    max_batch_images: int = Field(64, gt=0)
    """Most images accepted by one /predict/batch or /read/batch request."""

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

    forwarded_allow_ips: str = "127.0.0.1"
    """Proxies whose X-Forwarded-Proto and X-Forwarded-For are believed (comma-separated addresses or networks, `*`
    for any): the URLs the service returns then carry the client's scheme, e.g. https behind a TLS ingress."""

    keep_alive_s: int = Field(75, gt=0)
    """Seconds an idle HTTP connection is kept open; longer than any load balancer's idle timeout in front (nginx
    here 60, cloud balancers 60), so the balancer, never the service, closes a connection it may be reusing."""

    host: str = "127.0.0.1"
    """Address `python -m app` listens on (0.0.0.0 in the container)."""

    port: int = Field(8000, validation_alias=AliasChoices(f"{ENV_PREFIX}PORT", "PORT"))
    """Port `python -m app` listens on; MNIST_PORT or PORT."""

    grpc_port: int = Field(8001, ge=0, le=65535)
    """Port of the Open Inference Protocol's gRPC service (inference.GRPCInferenceService), served by `python -m app`
    next to HTTP on MNIST_HOST, in every worker; 0: no gRPC."""

    workers: int = Field(1, ge=1)
    """Uvicorn worker processes started by `python -m app`."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level of the service."""

    @model_validator(mode="after")
    def _budgets_fit_the_largest_request(self) -> Settings:
        for budget, limit in (("body_budget_bytes", "max_upload_bytes"), ("decode_budget_pixels", "max_image_pixels")):
            if getattr(self, budget) < getattr(self, limit):
                raise ValueError(
                    f"MNIST_{budget.upper()} ({getattr(self, budget):,}) must be at least MNIST_{limit.upper()}"
                    f" ({getattr(self, limit):,}), or the largest request accepted would wait alone for nothing"
                )
        return self

    @field_validator("token_key", "api_key")
    @classmethod
    def refuse_placeholders(cls, value: str) -> str:
        if value.strip().lower() in PLACEHOLDER_KEYS:
            raise ValueError(f"{value!r} is a placeholder, not a key: set a random one (openssl rand -base64 32)")
        return value
