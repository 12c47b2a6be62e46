"""Hypothesis fuzzer for the multipart form of POST /video/submit, sent as raw bytes over real HTTP.

Random field names, values and counts, boundaries (valid, long, quoted, wrong), filenames,
extra part-header bytes, missing or broken closing boundaries and plain garbage bodies: the
answer is always 202 (a job) or a 4xx problem, never a 5xx.
"""

from __future__ import annotations

import hypothesis
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from tests.fuzz.conftest import MP4_HEAD, TALLY, examples
from videojobs.common.options import AnalysisOptions

KNOWN_FIELDS = ["file", "pipeline_id", "callback_url", *AnalysisOptions.field_names()]
BOUNDARY_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'()+_,-./:=? "

# Values that tend to break number parsing and proto conversion.
NASTY_VALUES = ["", " ", "0", "-1", "1e-320", "1e309", "nan", "inf", "-inf", "2147483648", "9" * 40, "0x10", "1_000",
                "yolo", "yolo_ocr", "ocr", "person,bottle", "eng+deu", "../../etc", "\x00", "\u202e", "💥" * 20,
                "http://127.0.0.1:1/x", "file:///etc/passwd", "A" * 70000]

header_text = st.text(st.characters(min_codepoint=1, max_codepoint=0x10FFFF, blacklist_categories=("Cs",)),
                      max_size=40)
field_name = st.one_of(st.sampled_from(KNOWN_FIELDS), header_text)
field_value = st.one_of(st.sampled_from(NASTY_VALUES), st.text(max_size=64),
                        st.integers(-(2**70), 2**70).map(str), st.floats().map(str))
filename = st.one_of(st.none(), st.sampled_from(["a.mp4", "", "../../x.mp4", "a\"b.mp4", "a\r\nX-Evil: 1.mp4",
                                                 "ü.mp4", "x" * 5000]), header_text)


@st.composite
def part(draw) -> bytes:
    name = draw(field_name)
    fname = draw(filename)
    disposition = f'form-data; name="{name}"' + (f'; filename="{fname}"' if fname is not None else "")
    headers = [b"Content-Disposition: " + disposition.encode("utf-8", "surrogatepass")]
    if draw(st.booleans()):
        headers.append(b"Content-Type: " + draw(st.sampled_from([b"video/mp4", b"text/plain", b"", b"\xff\xfe"])))
    if draw(st.integers(0, 9)) == 0:
        headers.append(draw(st.binary(max_size=60)))  # raw header bytes, anything at all
    if name == "file" or draw(st.integers(0, 5)) == 0:
        body = draw(st.sampled_from([MP4_HEAD, b"", b"RIFF\x00\x00\x00\x00AVI LIST", b"not a video"])) \
            + draw(st.binary(max_size=2048))
    else:
        body = draw(field_value).encode("utf-8", "surrogatepass")
    return b"\r\n".join(headers) + b"\r\n\r\n" + body


@st.composite
def multipart(draw) -> tuple[str, bytes]:
    boundary = draw(st.one_of(st.text(BOUNDARY_CHARS, min_size=1, max_size=70).filter(lambda b: b.strip() == b),
                              st.sampled_from(["B", "-", "x" * 199, "x" * 201, "x" * 5000])))
    quoted = draw(st.booleans())
    content_type = draw(st.sampled_from([
        f'multipart/form-data; boundary="{boundary}"' if quoted else f"multipart/form-data; boundary={boundary}",
        "multipart/form-data", "multipart/mixed; boundary=B", "application/octet-stream", "text/plain", "",
        f"multipart/form-data; boundary={boundary}; charset=utf-8"]))
    if draw(st.integers(0, 2)) == 0:  # a well-formed form with fuzzed values: the paths past the parser
        return f"multipart/form-data; boundary={boundary}", _well_formed(draw, boundary)
    body_boundary = draw(st.sampled_from([boundary, boundary, boundary, "WRONG", boundary[:-1] or "Y"]))
    parts = draw(st.lists(part(), max_size=8))
    if draw(st.integers(0, 9)) == 0:  # many small fields
        parts += [b'Content-Disposition: form-data; name="classes"\r\n\r\nperson'] * draw(st.integers(50, 120))
    delimiter = b"--" + body_boundary.encode()
    body = b"".join(delimiter + b"\r\n" + p + b"\r\n" for p in parts)
    ending = draw(st.sampled_from([b"--\r\n", b"--", b"", b"\r\n", b"--garbage"]))
    body += delimiter + ending if ending else b""
    if draw(st.integers(0, 9)) == 0:
        body = draw(st.binary(max_size=4096))  # plain garbage
    elif draw(st.integers(0, 9)) == 0:
        cut = draw(st.integers(0, len(body)))
        body = body[:cut]  # cut anywhere
    return content_type, body


GOOD_VALUES = {"pipeline_id": st.sampled_from(["yolo", "ocr", "yolo_ocr"]),
               "sample_fps": st.sampled_from(["0", "0.5", "1", "30", "240"]),
               "max_frames": st.integers(0, 2**31 - 1).map(str), "min_confidence": st.floats(0, 1).map(str),
               "classes": st.sampled_from(["person", "bottle,cup", " person , bottle "]),
               "ocr_lang": st.just("eng"), "imgsz": st.sampled_from(["320", "640"])}


def _well_formed(draw, boundary: str) -> bytes:  # noqa: ANN001
    """A valid upload (an MP4 head) and a few option fields, each either a good value or a fuzzed one."""
    fields = draw(st.lists(st.sampled_from(sorted(GOOD_VALUES)), unique=True, max_size=4))
    parts = [b'Content-Disposition: form-data; name="file"; filename="' + draw(filename.filter(bool)).encode(
        "utf-8", "surrogatepass").replace(b'"', b"").replace(b"\r", b"").replace(b"\n", b"")
             + b'"\r\nContent-Type: video/mp4\r\n\r\n' + MP4_HEAD + draw(st.binary(max_size=4096))]
    for name in fields:
        value = draw(st.one_of(GOOD_VALUES[name], GOOD_VALUES[name], field_value))
        parts.append(f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode("utf-8", "surrogatepass"))
    delimiter = b"--" + boundary.encode()
    return b"".join(delimiter + b"\r\n" + p + b"\r\n" for p in parts) + delimiter + b"--\r\n"


def send(fuzz_stack, content_type: str, body: bytes, headers: dict[str, str] | None = None):
    all_headers = {**fuzz_stack.headers, **({"content-type": content_type} if content_type else {}), **(headers or {})}
    return fuzz_stack.http.post("/video/submit", content=body, headers=all_headers)


@given(form=multipart(), idempotency_key=st.one_of(st.none(), st.text("abc-_0123456789", max_size=200)))
@hypothesis.settings(max_examples=examples(250), deadline=None, database=None,
                     suppress_health_check=list(HealthCheck))
def test_submit_never_answers_a_server_error(fuzz_stack, form, idempotency_key):
    content_type, body = form
    extra = {"idempotency-key": idempotency_key} if idempotency_key is not None else {}
    response = send(fuzz_stack, content_type, body, extra)
    TALLY.http("rest: multipart", response.status_code, f"{content_type[:80]!r} {body[:200]!r}")
    assert response.status_code < 500, (response.status_code, response.text[:500], content_type, body[:500])
    if response.status_code < 300:
        assert response.status_code == 202 and "job_id" in response.json()
    else:
        assert response.status_code >= 400 and response.headers["content-type"].startswith("application/problem+json")


def test_a_well_formed_submit_still_works(fuzz_stack):
    """The fuzzer's own sanity: its stack accepts a plain upload and finishes the job."""
    job_id = fuzz_stack.submit()
    assert fuzz_stack.wait_final(job_id)["status"] == "COMPLETED"
