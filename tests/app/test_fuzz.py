"""Property-based fuzzing of the whole HTTP API from its OpenAPI schema (schemathesis), against the running service.

Bounded: a fixed number of generated requests per operation. Every response must be a documented status with a
body and content type matching the schema, and none may be a server error.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

MAX_EXAMPLES = 30
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def operations(live_server: str) -> dict[str, Any]:
    schema = schemathesis.openapi.from_url(f"http://{live_server}/openapi.json")
    return {op.label: op for op in (result.ok() for result in schema.get_all_operations())}


def test_every_operation_is_fuzzed(operations: dict[str, Any]) -> None:
    assert len(operations) >= 19  # every route in the schema
    for label, operation in operations.items():

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def fuzz(case: Any) -> None:
            case.call_and_validate(checks=CHECKS)

        try:
            fuzz()
        except Exception as exc:
            raise AssertionError(f"{label}: {exc}") from exc
