"""The ports every manifest must expose: the service's own defaults, read from its settings."""

from __future__ import annotations

from app.settings import Settings

# Issue 18's default for MNIST_GRPC_PORT, used until the gRPC front end (branch grpc) adds `grpc_port` to Settings;
# from then on the manifests are checked against Settings' own default.
ISSUE_GRPC_PORT = 8001


def http_port() -> int:
    return int(Settings.model_fields["port"].default)


def grpc_port() -> int:
    field = Settings.model_fields.get("grpc_port")
    return int(field.default) if field is not None else ISSUE_GRPC_PORT
