"""Schemathesis over the gateway's OpenAPI document: every operation, then stateful chains along its links.

Requests carry a valid API key (the api runs with keys on). Checks: no server error, and the
answers conform to the document (status codes, content types, response schemas and headers).
Stateful scenarios follow the submit answer's links (status, results, cancel, delete, viewer,
frames, contact sheet) with real job ids; the worker (fake analyzer) finishes jobs meanwhile.
"""

from __future__ import annotations

import hypothesis
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    use_after_free,
)

from tests.fuzz.conftest import MP4_HEAD, TALLY, examples
from videojobs.common.config import Settings
from videojobs.gateway.app import create_app

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
SETTINGS = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck), derandomize=False)


def openapi_document() -> dict:
    """The gateway's OpenAPI document, as it serves it at /openapi.json (creating the app connects nothing)."""
    return create_app(Settings()).openapi()


# Loaded at collection (pytest 9 and schemathesis' lazy fixture loader do not get along); the
# tests check the served document is this one and send every request to the live gateway.
schema = schemathesis.openapi.from_dict(openapi_document())


@schema.hook
def map_body(context, body):  # noqa: ANN001
    """Half the uploads start like an MP4, so submits also succeed and make real jobs to link to."""
    if isinstance(body, dict) and isinstance(body.get("file"), (bytes, str)) and len(str(body)) % 2 == 0:
        raw = body["file"] if isinstance(body["file"], bytes) else body["file"].encode()
        return {**body, "file": MP4_HEAD + raw}
    return body


@schema.parametrize()
@hypothesis.settings(max_examples=examples(25), **SETTINGS)
def test_no_operation_answers_a_server_error(case, fuzz_stack):
    response = case.call(base_url=fuzz_stack.base_url, headers=fuzz_stack.headers, timeout=30)
    TALLY.http("rest: schemathesis", response.status_code, f"{case.method} {case.formatted_path}")
    case.validate_response(response, checks=CHECKS)


def test_the_served_document_is_the_one_fuzzed(fuzz_stack):
    served = fuzz_stack.http.get("/openapi.json")
    assert served.status_code == 200 and served.json() == openapi_document()
    links = served.json()["paths"]["/video/submit"]["post"]["responses"]["202"]["links"]
    assert {"GetJobStatus", "GetJobResults", "CancelJob", "DeleteJob"} <= set(links)


def test_stateful_chains_along_the_links(fuzz_stack):
    headers, base_url = fuzz_stack.headers, fuzz_stack.base_url
    failures: list[Exception] = []
    scenarios = 0

    class Chains(schema.as_state_machine()):
        def setup(self) -> None:
            nonlocal scenarios
            scenarios += 1

        def get_call_kwargs(self, case):  # noqa: ANN001
            return {"base_url": base_url, "headers": headers, "timeout": 30}

        def validate_response(self, response, case, additional_checks=None, **kwargs):  # noqa: ANN001
            TALLY.http("rest: schemathesis stateful", response.status_code, f"{case.method} {case.formatted_path}")
            try:
                case.validate_response(response, checks=[*CHECKS, use_after_free], transport_kwargs=kwargs or None,
                                       recorder=self.recorder)
            except Exception as exc:
                failures.append(exc)
                raise

    # The server's answers change under the scenarios (the worker finishes jobs, lists grow), so
    # Hypothesis may find a replayed prefix drawing differently and call its own strategy flaky.
    # As schemathesis' own runner does, that ends a run without a verdict on the service: the
    # scenarios run so far stand, and a new run continues until the budget is spent. A check
    # that failed is never swallowed.
    budget = examples(30)
    for _ in range(50):
        if scenarios >= budget:
            break
        try:
            Chains.run(settings=hypothesis.settings(max_examples=budget - scenarios, stateful_step_count=6,
                                                    phases=[Phase.generate], **SETTINGS))
        except hypothesis.errors.Flaky:
            if failures:
                raise failures[0] from None
    assert not failures, failures[0]
    assert scenarios >= min(budget, 10)
