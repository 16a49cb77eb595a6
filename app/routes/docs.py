"""OpenAPI fragments shared by the routes: the image request bodies and the error responses."""

from __future__ import annotations

from typing import Any

from app.deps import MAX_MODEL_NAME, MODEL_DESCRIPTION
from app.schemas import ErrorBody

_BINARY = {"type": "string", "format": "binary"}

IMAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The image, as multipart field `file` or as the raw body.",
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"], "properties": {"file": _BINARY}},
            },
            "image/png": {"schema": _BINARY},
            "image/jpeg": {"schema": _BINARY},
            "image/*": {"schema": _BINARY},
        },
    }
}

# The `model` query parameter as FastAPI documents ModelQuery, for a route that reads it itself (deps.model_query).
MODEL_PARAMETER: dict[str, Any] = {
    "name": "model",
    "in": "query",
    "required": False,
    "description": MODEL_DESCRIPTION,
    "schema": {"anyOf": [{"type": "string", "maxLength": MAX_MODEL_NAME}, {"type": "null"}], "title": "Model"},
}

MULTI_IMAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One multipart field `files` per image.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {"files": {"type": "array", "items": _BINARY}},
                }
            }
        },
    }
}


def _error(description: str, code: str, detail: str) -> dict[str, Any]:
    return {
        "model": ErrorBody,
        "description": description,
        "content": {"application/json": {"example": {"detail": detail, "code": code}}},
    }


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("Empty body, truncated image, bad token or form", "truncated_image", "The PNG data is truncated."),
    404: _error("Unknown model or layer", "unknown_model", "Unknown model 'foo'; available: cnn, lenet."),
    413: _error("Body or image too large", "payload_too_large", "The request body is 12.0 MB; the limit is 10 MB."),
    415: _error("Not an image, or an unsupported format", "not_an_image", "The upload is not an image."),
    422: _error("Blank image or invalid parameters", "blank_image", "The image is blank."),
    503: _error("The model failed to load", "model_unavailable", "Model 'lenet' is unavailable."),
}

# /read: a blank image, or one with only marks, has no digits to read.
READ_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    422: _error(
        "No digit in the image (`no_digits`), or invalid parameters",
        "no_digits",
        "Nothing in the image looks like a digit: only dots, dashes, lines or specks.",
    ),
}


# Every operation can answer these; documented once for the whole API (replacing FastAPI's 422 schema,
# since validation errors are rendered as {"detail", "code"} too).
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    422: _error("Invalid parameters", "invalid_request", "Invalid request: query.model: String too long"),
    413: _error("Request body too large", "payload_too_large", "The request body is 12.0 MB; the limit is 10 MB."),
    504: _error("The request took too long", "timeout", "The request took longer than 30 s."),
}
