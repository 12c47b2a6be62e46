"""Hypothesis fuzzer for the REST gateway's request headers: API keys (header and viewer cookie),
Idempotency-Key, Accept and Content-Type with any characters HTTP lets through, on every kind of
route. The answer is a 2xx or a 4xx, never a 5xx.
"""

from __future__ import annotations

import hypothesis
import httpx
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from tests.fuzz.conftest import MP4_HEAD, TALLY, examples

# What HTTP/1.1 clients can put in a header value: no CR, LF or NUL; anything else in latin-1.
header_value = st.one_of(
    st.text(st.characters(min_codepoint=1, max_codepoint=255, blacklist_characters="\r\n"), max_size=100),
    st.sampled_from(["", " ", "\x7f", "\t", "Bearer", "Bearer ", "Bearer \x7f", "Bearer vjk_", "Bearer vjk_a_b",
                     "Bearer " + "a" * 9000, "bearer ", "Basic Zm9vOmJhcg==", "Bearer \xff\xfe"]))
ROUTES = ["GET /video/status/{job}", "GET /video/results/{job}", "GET /video/jobs", "GET /video/capabilities",
          "GET /video/view/{job}", "GET /video/frames/{job}/0.jpg", "GET /video/sheet/{job}.png",
          "POST /video/cancel/{job}", "POST /video/submit"]


@given(route=st.sampled_from(ROUTES), authorization=st.one_of(st.none(), header_value),
       cookie=st.one_of(st.none(), header_value), extra=st.dictionaries(
           st.sampled_from(["idempotency-key", "accept", "content-type", "x-forwarded-for", "traceparent"]),
           header_value, max_size=3))
@hypothesis.settings(max_examples=examples(100), deadline=None, database=None,
                     suppress_health_check=list(HealthCheck))
def test_header_values_never_cause_a_server_error(fuzz_stack, route, authorization, cookie, extra):
    method, path = route.split(" ")
    job = fuzz_stack.real_job()
    headers = {**extra}
    if authorization is not None:
        headers["authorization"] = authorization
    if cookie is not None:
        headers["cookie"] = "videojobs_key=" + cookie
    kwargs = {}
    if path == "/video/submit":
        kwargs["files"] = {"file": ("a.mp4", MP4_HEAD, "video/mp4")}
        headers.pop("content-type", None)
    raw = {name: value.encode("latin-1") for name, value in headers.items()}  # bytes: sent as they are
    try:
        with httpx.Client(base_url=fuzz_stack.base_url, timeout=30) as client:
            response = client.request(method, path.format(job=job), headers=raw, **kwargs)
    except httpx.LocalProtocolError:
        hypothesis.reject()  # the client itself refuses such a header: nothing reached the server
    TALLY.http("rest: headers", response.status_code, f"{route} {headers!r}")
    assert response.status_code < 500, (route, headers, response.text[:300])
