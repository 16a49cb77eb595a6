"""Dependencies shared by the routes: settings, registry, the core (app.dataplane), and the uploaded image bytes."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.exceptions import RequestValidationError

from app.dataplane import DataPlane
from app.errors import EmptyBody, MissingFile, TooManyFiles, UnsupportedMediaType
from app.forms import form_parts
from app.runtime.registry import Registry
from app.settings import Settings


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def registry_of(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


# Async on purpose: FastAPI runs plain `def` dependencies in the thread pool, a costly hop for an attribute read.
# The hottest route, /predict, calls settings_of/registry_of directly: dependency solving measurably cost it
# throughput.
async def get_settings(request: Request) -> Settings:
    return settings_of(request)


async def get_registry(request: Request) -> Registry:
    return registry_of(request)


async def get_dataplane(request: Request) -> DataPlane:
    return dataplane_of(request)


SettingsDep = Annotated[Settings, Depends(get_settings)]
DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
MAX_MODEL_NAME = 64
MODEL_DESCRIPTION = "model name (default: the service's default model)"
ModelQuery = Annotated[str | None, Query(max_length=MAX_MODEL_NAME, description=MODEL_DESCRIPTION)]


def model_query(request: Request) -> str | None:
    """The `model` query parameter, validated as ModelQuery is, for routes that skip FastAPI's parameter machinery
    (predict.DirectRoute); they document it with MODEL_PARAMETER."""
    name = request.query_params.get("model")
    if name is not None and len(name) > MAX_MODEL_NAME:
        message = f"String should have at most {MAX_MODEL_NAME} characters"
        raise RequestValidationError([{"loc": ("query", "model"), "msg": message, "type": "string_too_long"}])
    return name


@lru_cache(maxsize=256)  # keyed by what the client sends: bounded
def _base_url(scheme: str, server: tuple[str, int | None] | None, host: str | None, root_path: str) -> str:
    headers = [] if host is None else [(b"host", host.encode("latin-1"))]
    scope = {
        "type": "http",
        "scheme": scheme,
        "server": server,
        "headers": headers,
        "root_path": root_path,
        "path": "/",
    }
    return str(Request(scope).base_url)


def base_url(request: Request) -> str:
    """str(request.base_url), remembered for each scheme, server address, Host header and root path: Starlette
    rebuilds it from the whole scope on every call, ~5% of /predict's time."""
    scope = request.scope
    host = request.headers.get("host")
    server = tuple(scope["server"]) if scope.get("server") else None
    root_path = scope.get("app_root_path", scope.get("root_path", ""))
    return _base_url(scope.get("scheme", "http"), server, host, root_path)


IMAGE_TYPES = ("image/", "application/octet-stream")
MAX_FORM_PARTS = 100  # files and text fields a form may hold beyond the images it carries


def dataplane_of(request: Request) -> DataPlane:
    """The transport-free core (app.dataplane) the routes call."""
    dataplane: DataPlane = request.app.state.dataplane
    return dataplane


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_image(request: Request) -> bytes:
    """One image: multipart field `file`, or the whole body when it is sent as image/*."""
    content_type = _content_type(request)
    if content_type == "multipart/form-data":
        files = await _form_files(request, "file", max_parts=MAX_FORM_PARTS)
        if len(files) > 1:
            raise TooManyFiles("Send one image in field 'file'; for several, use POST /predict/batch with 'files'.")
        return files[0][1]
    if content_type.startswith(IMAGE_TYPES):
        return await request.body()
    if not content_type and not await request.body():
        raise EmptyBody()
    raise UnsupportedMediaType(
        f"Content-Type {content_type or '(none)'!r} is not accepted: send multipart/form-data with field 'file', "
        "or the image itself with an image/* Content-Type."
    )


async def read_images(request: Request, max_files: int) -> list[tuple[str | None, bytes]]:
    """Several images from multipart field `files` (field `file` is accepted too)."""
    if _content_type(request) != "multipart/form-data":
        raise UnsupportedMediaType("Send the images as multipart/form-data, one field 'files' per image.")
    files = await _form_files(request, "files", max_parts=max_files + MAX_FORM_PARTS, also="file")
    if len(files) > max_files:
        raise TooManyFiles(f"{len(files)} images sent; at most {max_files} are accepted per request.")
    return files


async def _form_files(
    request: Request, field: str, *, max_parts: int, also: str | None = None
) -> list[tuple[str | None, bytes]]:
    """(filename, content) of each file in the form field."""
    parts = form_parts(await request.body(), request.headers["content-type"], max_parts)
    values = [part for part in parts if part.name in (field, also)]
    if not values:
        raise MissingFile(f"The multipart form has no field {field!r}: send the image as -F {field}=@digit.png.")
    if any(part.filename is None for part in values):
        raise MissingFile(f"Field {field!r} must be a file upload, not text: use -F {field}=@digit.png.")
    return [(part.filename, part.data) for part in values]
