"""How errors reach REST clients: every ServiceError, HTTP error and validation error as `{"detail", "code"}` (V2
REST: `{"error"}`), with the HTTP status of its code from HTTP_STATUS, the one table of them."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from app.errors import ServiceError

log = logging.getLogger(__name__)


V2_PREFIX = "/v2"

# Every ServiceError code's HTTP status (tests/app/test_errors.py checks that each code has a row).
HTTP_STATUS: dict[str, int] = {
    "bad_request": 400,
    "empty_body": 400,
    "missing_file": 400,
    "too_many_files": 400,
    "malformed_form": 400,
    "truncated_image": 400,
    "bad_token": 400,
    "invalid_inference_request": 400,
    "model_load_failed": 400,
    "unauthorized": 401,
    "unknown_model": 404,
    "unknown_layer": 404,
    "no_templates": 404,
    "unknown_method": 404,
    "request_timeout": 408,
    "default_model_required": 409,
    "payload_too_large": 413,
    "image_too_large": 413,
    "unsupported_media_type": 415,
    "not_an_image": 415,
    "unsupported_format": 415,
    "blank_image": 422,
    "no_digits": 422,
    "too_many_digits": 422,
    "bad_target": 422,
    "bad_setting": 422,
    "headers_too_large": 431,
    "model_unavailable": 503,
    "unimplemented": 501,
    "overloaded": 503,
    "timeout": 504,
}


def http_status(error: ServiceError) -> int:
    """The error's HTTP status; a code without a row is the service's bug, answered as one (500)."""
    return HTTP_STATUS.get(error.code, 500)


def error_body(detail: str, code: str) -> dict[str, str]:
    return {"detail": detail, "code": code}


def render(
    request: Request, status_code: int, detail: str, code: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """REST errors as {"detail", "code"}; the Open Inference Protocol's as {"error"}, as it defines them."""
    body = {"error": detail} if request.url.path.startswith(V2_PREFIX) else error_body(detail, code)
    return JSONResponse(body, status_code=status_code, headers=headers)


def render_error(request: Request, error: ServiceError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The service's own error as its response; middleware, which runs outside the handlers, answers with it too."""
    if error.retry_after_s is not None:
        headers = {**(headers or {}), "Retry-After": str(error.retry_after_s)}
    return render(request, http_status(error), error.detail, error.code, headers)


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return render_error(request, exc)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
    return render(request, exc.status_code, str(exc.detail), code, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in error.get('loc', ()))}: {error.get('msg', 'invalid')}" for error in exc.errors()
    )
    return render(request, 422, f"Invalid request: {problems}", "invalid_request")


async def _client_disconnected(request: Request, exc: Exception) -> Response:
    # The client went away mid-request (a load generator stopping, a closed tab): nobody is left to answer.
    log.debug("client disconnected during %s %s", request.method, request.url.path)
    return Response(status_code=499)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # A bug, not bad input: log it with its trace, and never show the trace or internal paths to the client.
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return render(request, 500, "Internal server error.", "internal_error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnected)
    app.add_exception_handler(Exception, _unexpected_error)
