import io
import shutil

import pytest

from videojobs.common.errors import BadRequest, InvalidUpload, UnsupportedMediaType, UploadTooLarge
from videojobs.common.formats import FORMATS, accepted_formats_text, sniff
from videojobs.common.upload import CheckedUpload
from videojobs.gateway.upload import MAX_FORM_FIELDS, MAX_HEADER_BYTES, MultipartSpool, boundary_of

MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
MKV_HEAD = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04\x42\xf3\x81\x08\x42\x82\x88matroska"
WEBM_HEAD = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04\x42\xf3\x81\x08\x42\x82\x84webm"
AVI_HEAD = b"RIFF\x10\x00\x01\x00AVI LIST\x00\x01\x00\x00hdrlavih"
MOV_HEAD = b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  "
OLD_MOV_HEAD = b"\x00\x00\x00\x08wide\x00\x12\x34\x56mdat"


def copy(chunks, limit=10_000):
    out = io.BytesIO()
    shutil.copyfileobj(CheckedUpload(iter(chunks), limit), out)
    return out.getvalue()


def test_video_passes_through_unchanged_even_in_tiny_chunks():
    data = MP4_HEAD + bytes(range(256)) * 4
    assert copy([data[i:i + 3] for i in range(0, len(data), 3)]) == data


@pytest.mark.parametrize("head, format_id", [
    (MP4_HEAD, "iso-bmff"), (MOV_HEAD, "iso-bmff"), (OLD_MOV_HEAD, "iso-bmff"), (MKV_HEAD, "matroska"),
    (WEBM_HEAD, "webm"), (AVI_HEAD, "avi"),
])
def test_containers_are_told_by_content(head, format_id):
    data = head + b"\x00" * 100
    assert sniff(data).format_id == format_id
    upload = CheckedUpload(iter([data]), 10_000)
    assert upload.container().format_id == format_id
    assert upload.read() == data


@pytest.mark.parametrize("data", [
    b"GIF89a" + b"\x00" * 80,  # GIF
    b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 80,  # WAV is RIFF too, but not AVI
    b"PK\x03\x04" + b"\x00" * 80,  # ZIP
    b"hello world, plain text " * 5,
    b"\x00\x00\x00\x00ftypisom" + b"\x00" * 80,  # a ftyp box of size 0 is not a ftyp box
    b"%PDF-1.7" + b"\x00" * 80,
])
def test_other_files_are_415_naming_the_accepted_formats(data):
    with pytest.raises(UnsupportedMediaType) as err:
        copy([data])
    assert accepted_formats_text() in str(err.value)
    assert err.value.problem.http_status == 415
    assert err.value.extensions()["accepted_formats"] == [f.name for f in FORMATS]


def test_short_and_empty_uploads():
    with pytest.raises(InvalidUpload, match="empty") as err:
        copy([])
    assert not isinstance(err.value, UnsupportedMediaType)
    with pytest.raises(UnsupportedMediaType):
        copy([b"\x00\x00\x00"])


def test_limit_is_enforced_while_streaming():
    pulled = []

    def chunks():
        for i in range(100):
            pulled.append(i)
            yield (MP4_HEAD if i == 0 else b"") + b"x" * 1000

    with pytest.raises(UploadTooLarge):
        copy(chunks(), limit=5000)
    assert len(pulled) < 10  # stopped reading soon after the limit, not at the end


def multipart(parts, boundary=b"BOUND", close=True):
    body = b""
    for name, value, filename in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += b"--" + boundary + b"\r\nContent-Disposition: " + disp.encode() + b"\r\n\r\n" + value + b"\r\n"
    return body + (b"--" + boundary + b"--\r\n" if close else b"")


def spool_of(body, chunk=100):
    spool = MultipartSpool(b"BOUND", 100_000)
    for i in range(0, len(body), chunk):
        spool.write(body[i:i + chunk])
    return spool


def test_multipart_spool_collects_fields_and_file():
    video = MP4_HEAD + b"v" * 5000
    spool = spool_of(multipart([("file", video, "clip.bin"), ("sample_fps", b"2", None)]))
    assert spool.finish().read() == video
    assert spool.fields == {"sample_fps": ["2"]} and spool.filename == "clip.bin"


def test_multipart_spool_rejects_on_first_bytes_and_missing_file():
    spool = MultipartSpool(b"BOUND", 100_000)
    with pytest.raises(UnsupportedMediaType):
        spool.write(multipart([("file", b"%PDF-1.7 not a video at all" * 4, "x.mp4")]))
    spool = spool_of(multipart([("pipeline_id", b"yolo", None)]))
    with pytest.raises(InvalidUpload, match="no 'file'"):
        spool.finish()


def test_boundary_requires_multipart_and_a_sane_length():
    assert boundary_of("multipart/form-data; boundary=abc") == b"abc"
    with pytest.raises(UnsupportedMediaType):
        boundary_of("application/json")
    with pytest.raises(BadRequest):
        boundary_of("multipart/form-data; boundary=" + "b" * 500)


def test_repeated_fields_accumulate_in_linear_time():
    parts = [("classes", b"bottle", None)] * 50 + [("file", MP4_HEAD + b"x" * 100, "a.mp4")]
    spool = spool_of(multipart(parts), chunk=4096)
    spool.finish()
    assert spool.fields == {"classes": ["bottle"] * 50}


@pytest.mark.parametrize("body, text", [
    (multipart([("f", b"x", None)] * (MAX_FORM_FIELDS + 2)), "more than"),
    (multipart([("file", MP4_HEAD, "a" * (MAX_HEADER_BYTES + 10))]), "header|malformed"),
    (multipart([("classes", b"x" * 70_000, None)]), "longer than"),
    (multipart([(f"c{i}", b"x" * 60_000, None) for i in range(6)]), "in total"),
    (b"--BOUND\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n" + MP4_HEAD + b"x" * 100, "closing boundary"),
    (b"\xff\xfe garbage that is not multipart at all \x00\x01" * 10, "malformed"),
])
def test_malformed_or_oversized_forms_are_bad_requests(body, text):
    with pytest.raises(BadRequest, match=text):
        spool_of(body, chunk=4096).finish()


def test_a_spool_budget_holds_what_uploads_claim_and_refuses_more_until_it_is_given_back():
    from videojobs.common.errors import TooManyUploads
    from videojobs.gateway.upload import SpoolBudget

    budget = SpoolBudget(1000)
    with budget.claim() as first:
        first.up_to(600)
        first.up_to(400)  # a claim only grows
        assert budget.held == 600
        with pytest.raises(TooManyUploads, match=r"upload spool \(1000 bytes\)"):
            with budget.claim() as second:
                second.up_to(300)
                second.up_to(401)  # 600 + 401 > 1000
        assert budget.held == 600  # the refused upload gave back its 300
    assert budget.held == 0
    with budget.claim() as third:
        third.up_to(1000)
    unbounded = SpoolBudget(0)
    with unbounded.claim() as claim:
        claim.up_to(10 ** 12)
