"""schemathesis against the job API's own OpenAPI document: no 5xx, every answer matches
the documented schema and content type (problem+json for errors)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

schemathesis = pytest.importorskip("schemathesis", reason="pip install schemathesis")
sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "api"))
sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "jobs"))

from api_helpers import FixedTokens  # noqa: E402
from jobs_helpers import fake_settings, permissive  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

from mlaas4hep.api.app import create_app  # noqa: E402


def _app() -> object:
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="mlaas4hep-schemathesis-"))
    return create_app(
        fake_settings(tmp).model_copy(update={"allowed_hosts": ["testserver", "localhost"]}),
        authenticator=FixedTokens(),
        spec_validator=permissive,
        run_executor=False,
    )


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: schemathesis.Case) -> None:
    headers = {"Authorization": "Bearer token-alice"}
    response = case.call(headers=headers)
    case.validate_response(
        response,
        checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
    )
