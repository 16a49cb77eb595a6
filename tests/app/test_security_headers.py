"""Security headers: a strict CSP on the page and its files, none of the page's scripts inline, nosniff everywhere."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from app.routes.pages import STATIC_DIR


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/static/style.css"])
def test_the_page_and_its_files_get_a_strict_policy(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize(
    ("method", "path", "policy"),
    [
        ("GET", "/models", "default-src 'none'"),
        ("GET", "/health/ready", "default-src 'none'"),
        ("GET", "/no-such-route", "default-src 'none'"),
        ("POST", "/predict", "default-src 'none'"),  # an error answer
        ("GET", "/docs", "frame-ancestors 'none'"),  # Swagger UI comes from a CDN, with an inline script
    ],
)
def test_every_other_response_is_nosniff_and_unframeable(
    client: TestClient, method: str, path: str, policy: str
) -> None:
    response = client.request(method, path)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["content-security-policy"].startswith(policy)
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_the_page_has_no_inline_script_or_handler() -> None:
    html = (STATIC_DIR / "index.html").read_text()
    assert all(re.search(r"\bsrc=", tag) for tag in re.findall(r"<script[^>]*>", html))
    assert not re.search(r"\son[a-z]+\s*=", html)  # onclick= and the like
    assert "style=" not in html
