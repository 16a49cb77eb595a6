"""Request helpers without a server."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request

from app.deps import base_url


def scope(**overrides: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "path": "/predict",
        "headers": [],
    } | overrides


@pytest.mark.parametrize(
    "request_scope",
    [
        scope(headers=[(b"host", b"digits.example.com")]),
        scope(headers=[(b"host", b"digits.example.com:8443")], scheme="https"),
        scope(headers=[(b"host", b"bad host:port")]),  # Starlette falls back to the server address
        scope(),
        scope(scheme="https", server=("10.0.0.5", 443)),
        scope(server=("::1", 8000)),
        scope(server=None),
        scope(root_path="/mnist", headers=[(b"host", b"proxy")]),
        scope(root_path="/inner", app_root_path="/outer"),
    ],
)
def test_base_url_is_starlettes(request_scope: dict[str, Any]) -> None:
    expected = str(Request(request_scope).base_url)
    assert base_url(Request(request_scope)) == expected
    assert base_url(Request(request_scope)) == expected  # and again, from the cache
