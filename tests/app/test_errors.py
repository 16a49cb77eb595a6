"""Every ServiceError code has its status in every front end's table (REST and V2 gRPC), and the statuses the REST
API documents stay what they are."""

from __future__ import annotations

import grpc
import pytest

import app.main  # noqa: F401 - every module that defines a ServiceError, loaded
from app.errors import ServiceError
from app.grpc_v2 import GRPC_STATUS, grpc_status
from app.handlers import HTTP_STATUS, http_status


def service_errors(root: type[ServiceError] = ServiceError) -> list[type[ServiceError]]:
    found = [root]
    for subclass in root.__subclasses__():
        found += service_errors(subclass)
    return found


CODES = sorted({error.code for error in service_errors()})


@pytest.mark.parametrize("code", CODES)
def test_every_code_has_a_status_in_every_table(code: str) -> None:
    assert code in HTTP_STATUS
    assert code in GRPC_STATUS


def test_no_table_has_a_code_that_no_error_carries() -> None:
    assert set(HTTP_STATUS) == set(CODES)
    assert set(GRPC_STATUS) == set(CODES)


@pytest.mark.parametrize(
    ("code", "status", "grpc_code"),
    [
        ("empty_body", 400, grpc.StatusCode.INVALID_ARGUMENT),
        ("invalid_inference_request", 400, grpc.StatusCode.INVALID_ARGUMENT),
        ("unauthorized", 401, grpc.StatusCode.UNAUTHENTICATED),
        ("unknown_model", 404, grpc.StatusCode.NOT_FOUND),
        ("payload_too_large", 413, grpc.StatusCode.RESOURCE_EXHAUSTED),
        ("not_an_image", 415, grpc.StatusCode.INVALID_ARGUMENT),
        ("blank_image", 422, grpc.StatusCode.INVALID_ARGUMENT),
        ("headers_too_large", 431, grpc.StatusCode.RESOURCE_EXHAUSTED),
        ("unimplemented", 501, grpc.StatusCode.UNIMPLEMENTED),
        ("model_unavailable", 503, grpc.StatusCode.UNAVAILABLE),
        ("overloaded", 503, grpc.StatusCode.UNAVAILABLE),
        ("timeout", 504, grpc.StatusCode.DEADLINE_EXCEEDED),
    ],
)
def test_statuses(code: str, status: int, grpc_code: grpc.StatusCode) -> None:
    error = ServiceError("message")
    error.code = code
    assert (http_status(error), grpc_status(error)) == (status, grpc_code)


def test_a_code_without_a_row_is_a_server_error() -> None:
    class Unlisted(ServiceError):
        code = "unlisted"

    assert (http_status(Unlisted("x")), grpc_status(Unlisted("x"))) == (500, grpc.StatusCode.INTERNAL)
