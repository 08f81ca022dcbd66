"""The operator API against its own OpenAPI document (schemathesis): requests made from
the schema, valid ones and broken ones, signed in as an admin, on a database holding a
report and a partner, never get a 5xx. A bad request is a 4xx naming the problem.

Bounded: a fixed number of examples per generation mode, so a run takes well under a
minute per database. Random on a developer's machine (each run explores further); the
same examples every time in CI (``CI`` set), so CI fails for a change, not for luck.

Left out: ``POST /auth/logout`` (it would revoke the token the run signs in with; its own
tests are in test_api_auth.py) and Server-Sent Events streams (``…/stream``: they answer
as long as the client listens).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.generation import GenerationMode
from schemathesis.generation.case import Case

from gateway.operators.access import Role
from gateway.runtime import Runtime
from tests.operators.people import make
from tests.operators.reporters import file_report

API = "/api/v1"
EXAMPLES = 300  # per generation mode
LEFT_OUT = ("/auth/logout",)


def schema_of(client: TestClient) -> Any:
    document = client.get(f"{API}/openapi.json")
    assert document.status_code == 200
    raw = document.json()
    raw["paths"] = {path: ops for path, ops in raw["paths"].items()
                    if path not in LEFT_OUT and not path.endswith("/stream")}
    return schemathesis.openapi.from_dict(raw)


def send(client: TestClient, case: Case[Any], token: str) -> Any:
    kwargs = case.as_transport_kwargs(base_url=f"http://testserver{API}")
    kwargs.pop("cookies", None)
    if isinstance(kwargs.get("data"), str | bytes):  # a raw body (a broken one, often)
        kwargs["content"] = kwargs.pop("data")
    kwargs["headers"] = {**kwargs.get("headers", {}), "Authorization": f"Bearer {token}"}
    return client.request(**kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["valid", "broken"])
def test_no_request_made_from_the_schema_gets_a_5xx(client: TestClient, runtime: Runtime,
                                                    mode: GenerationMode) -> None:
    admin = make(runtime, "awa", Role.admin)
    report = file_report(client, runtime, text="Au barrage")
    client.post(f"{API}/partners", headers=admin.auth,
                json={"name": "AMDH", "webhook_url": "http://127.0.0.1:9/hook",
                      "secret": "s3cret-for-the-tests"})
    poll = client.get(f"{API}/polls", headers=admin.auth).json()[0]["poll"]
    schema = schema_of(client)
    known = {"report_id": report.id, "poll": poll}  # valid cases reach the records
    seen: dict[str, int] = {}

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              derandomize=bool(os.environ.get("CI")),
              suppress_health_check=list(HealthCheck))
    @given(case=schema.as_strategy(
        generation_mode=mode, path_parameters=known if mode is GenerationMode.POSITIVE
        else None))
    def no_5xx(case: Case[Any]) -> None:
        response = send(client, case, admin.token)
        label = f"{case.method} {case.path}"
        seen[label] = seen.get(label, 0) + 1
        assert response.status_code < 500, (
            f"{label} answered {response.status_code}: {response.text[:300]}\n"
            f"{case.as_curl_command()}")
        if response.status_code >= 400 and "json" in response.headers.get("content-type", ""):
            assert "detail" in response.json(), (label, response.text[:300])

    no_5xx()
    assert len(seen) >= 5, seen  # every kind of operation was tried, not one over and over
