"""Route parameters that the gateway's routers declare the same way."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path as PathParam

# Any spelling Python's uuid reads is accepted (and answered in canonical form); documented as a UUID so
# clients and the fuzzers know what an id looks like. Anything else is an invalid-job-id problem.
JobId = Annotated[str, PathParam(description="The job's id, a UUID as the submit answer gave it.",
                                 json_schema_extra={"format": "uuid"})]
