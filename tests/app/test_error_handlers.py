"""The error tree and its one renderer, on a small app of its own: each kind of failure gets its status, its stable
code and its message, REST as {"detail", "code"}, the Open Inference Protocol as {"error"}; bugs stay 500s that
show nothing of the service's insides."""

from __future__ import annotations

import inspect
import json
import logging
import re
from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Query
from fastapi.testclient import TestClient
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request

from app import errors
from app.handlers import HTTP_STATUS, install_error_handlers, render_error
from tests.helpers import ROOT


def case(name: str) -> Exception:
    """The failure a route raises, made when the request comes (as a route's are)."""
    cases = {
        "service": lambda: errors.UnknownModel("x" * 100, ["cnn", "lenet"]),
        "overloaded": lambda: errors.Overloaded("Busy; try again."),
        "restarting": lambda: errors.ModelRestarting("The model process stopped; send it again."),
        "bug": lambda: RuntimeError("/secret/path/app.py line 3"),
        "gone": ClientDisconnect,
        "teapot": lambda: HTTPException(418, "I'm a teapot", headers={"X-Why": "tea"}),
    }
    return cases[name]()


def failing_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/fail/{name}")
    @app.get("/v2/fail/{name}")
    def fail(name: str) -> None:
        raise case(name)

    @app.get("/typed")
    def typed(count: int = Query(ge=1), name: str = Query()) -> dict[str, int]:
        return {"count": count}

    return app


@pytest.fixture
def client() -> Iterator[TestClient]:
    """An app per test: each test then runs the installation of the handlers it relies on (for mutation testing)."""
    with TestClient(failing_app(), raise_server_exceptions=False) as client:
        yield client


def test_a_service_error_is_its_status_code_and_message(client: TestClient) -> None:
    response = client.get("/fail/service")
    assert response.status_code == 404
    assert response.json() == {
        "detail": f"Unknown model {'x' * 64!r}; available: cnn, lenet.",  # a client's name, cut short
        "code": "unknown_model",
    }
    assert "retry-after" not in response.headers


def test_the_protocol_gets_its_own_error_body(client: TestClient) -> None:
    response = client.get("/v2/fail/service")
    assert response.status_code == 404
    assert response.json() == {"error": f"Unknown model {'x' * 64!r}; available: cnn, lenet."}


@pytest.mark.parametrize(("case", "code"), [("overloaded", "overloaded"), ("restarting", "model_unavailable")])
def test_a_retriable_error_says_when_to_retry(client: TestClient, case: str, code: str) -> None:
    response = client.get(f"/fail/{case}")
    assert (response.status_code, response.json()["code"]) == (503, code)
    assert response.headers["retry-after"] == "1"


def test_an_http_error_keeps_its_status_detail_and_headers(client: TestClient) -> None:
    response = client.get("/fail/teapot")
    assert response.status_code == 418
    assert response.json() == {"detail": "I'm a teapot", "code": "bad_request"}
    assert response.headers["x-why"] == "tea"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [("GET", "/nowhere", 404, "not_found"), ("POST", "/typed", 405, "method_not_allowed")],
)
def test_routing_errors_get_their_codes(client: TestClient, method: str, path: str, status: int, code: str) -> None:
    response = client.request(method, path)
    assert response.status_code == status
    assert response.json()["code"] == code


def test_a_validation_error_names_each_bad_parameter(client: TestClient) -> None:
    response = client.get("/typed?count=0")
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_request"
    assert body["detail"] == (
        "Invalid request: query.count: Input should be greater than or equal to 1; query.name: Field required"
    )


def test_a_bug_is_a_500_that_shows_nothing_and_is_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="app.handlers"):
        response = client.get("/fail/bug")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error.", "code": "internal_error"}
    assert "/secret/path" not in response.text
    assert any(r.exc_info and "/secret/path" in str(r.exc_info[1]) for r in caplog.records)
    [record] = [r for r in caplog.records if r.name == "app.handlers"]
    assert record.getMessage() == "unhandled error on GET /fail/bug"


def test_a_client_that_went_away_gets_no_error_body(client: TestClient) -> None:
    response = client.get("/fail/gone")
    assert response.status_code == 499
    assert response.content == b""


def kinds_of_error() -> list[type[errors.ServiceError]]:
    return [
        kind
        for _, kind in inspect.getmembers(errors, inspect.isclass)
        if issubclass(kind, errors.ServiceError) and kind is not errors.ServiceError
    ]


def test_every_kind_of_error_is_in_the_module_docstring_with_its_status_and_code() -> None:
    tree = errors.__doc__ or ""
    for kind in kinds_of_error():
        line = next((row for row in tree.splitlines() if f" {kind.__name__} " in row), "")
        assert f"{HTTP_STATUS[kind.code]} {kind.code}" in line, kind.__name__


def test_codes_are_stable_identifiers_and_statuses_are_client_or_service_errors() -> None:
    for kind in kinds_of_error():
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", kind.code), kind.__name__
        assert 400 <= HTTP_STATUS[kind.code] < 600, kind.__name__


def test_fixed_messages_say_what_to_do() -> None:
    assert errors.EmptyBody().detail == (
        "The request has no image: send it as multipart field 'file' or as an image/* body."
    )
    assert errors.BlankImage().detail.startswith("The image is blank: no digit stands out from the background.")
    assert str(errors.BadToken("copy it")) == "copy it"
    assert errors.UnknownModel("foo", iter(["a", "b"])).detail == "Unknown model 'foo'; available: a, b."


def test_a_client_that_went_away_is_logged_at_debug_level_only(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="app.handlers"):
        client.get("/fail/gone")
    [record] = [r for r in caplog.records if r.name == "app.handlers"]
    assert record.levelno == logging.DEBUG
    assert record.getMessage() == "client disconnected during GET /fail/gone"


def test_a_retriable_error_keeps_the_headers_it_is_given() -> None:
    scope = {"type": "http", "method": "POST", "path": "/predict", "query_string": b"", "headers": []}
    response = render_error(Request(scope), errors.Overloaded("Busy."), {"Connection": "close"})
    assert response.status_code == 503
    assert response.headers["connection"] == "close"
    assert response.headers["retry-after"] == "1"
    assert json.loads(response.body) == {"detail": "Busy.", "code": "overloaded"}


def readme_error_codes() -> set[tuple[int, str]]:
    """(status, code) of each row of the README's errors table."""
    readme = (ROOT / "README.md").read_text().splitlines()
    start = readme.index("| status | code | when |")
    pairs = set()
    for line in readme[start + 2 :]:
        if not line.startswith("|"):
            break
        status, codes = line.split("|")[1:3]
        pairs |= {(int(status), code) for code in re.findall(r"`(\w+)`", codes)}
    return pairs


def test_the_readme_errors_table_lists_every_kind_of_error() -> None:
    listed = readme_error_codes()
    missing = {(HTTP_STATUS[kind.code], kind.code) for kind in kinds_of_error()} - listed
    assert not missing, f"not in the README's errors table: {sorted(missing)}"
