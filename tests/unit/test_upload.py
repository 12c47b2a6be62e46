import io
import shutil

import pytest

from videojobs.common.errors import InvalidUpload, UploadTooLarge
from videojobs.common.upload import CheckedUpload, looks_like_mp4
from videojobs.gateway.upload import MultipartSpool, boundary_of

MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"


def copy(chunks, limit=10_000):
    out = io.BytesIO()
    shutil.copyfileobj(CheckedUpload(iter(chunks), limit), out)
    return out.getvalue()


def test_mp4_passes_through_unchanged_even_in_tiny_chunks():
    data = MP4_HEAD + bytes(range(256)) * 4
    assert copy([data[i:i + 3] for i in range(0, len(data), 3)]) == data


@pytest.mark.parametrize("data", [b"GIF89a........", b"RIFF\x00\x00\x00\x00AVI LIST", b"hello world, plain text", b"\x00\x00\x00\x18moov" + b"x" * 20])
def test_non_mp4_is_rejected_by_content(data):
    with pytest.raises(InvalidUpload, match="not an MP4"):
        copy([data])


def test_short_and_empty_uploads():
    with pytest.raises(InvalidUpload, match="empty"):
        copy([])
    with pytest.raises(InvalidUpload, match="not an MP4"):
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


def test_ftyp_header_check():
    assert looks_like_mp4(MP4_HEAD)
    assert not looks_like_mp4(b"\x00\x00\x00\x00ftypisom")  # box size 0 is not a ftyp box


def multipart(parts, boundary=b"BOUND"):
    body = b""
    for name, value, filename in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += b"--" + boundary + b"\r\nContent-Disposition: " + disp.encode() + b"\r\n\r\n" + value + b"\r\n"
    return body + b"--" + boundary + b"--\r\n"


def test_multipart_spool_collects_fields_and_file():
    video = MP4_HEAD + b"v" * 5000
    body = multipart([("file", video, "clip.bin"), ("sample_fps", b"2", None)])
    spool = MultipartSpool(b"BOUND", 100_000)
    for i in range(0, len(body), 100):
        spool.write(body[i:i + 100])
    assert spool.finish().read() == video
    assert spool.fields == {"sample_fps": "2"} and spool.filename == "clip.bin"


def test_multipart_spool_rejects_on_first_bytes_and_missing_file():
    spool = MultipartSpool(b"BOUND", 100_000)
    with pytest.raises(InvalidUpload, match="not an MP4"):
        spool.write(multipart([("file", b"%PDF-1.7 not a video at all", "x.mp4")]))
    spool = MultipartSpool(b"BOUND", 100_000)
    spool.write(multipart([("pipeline_id", b"yolo", None)]))
    with pytest.raises(InvalidUpload, match="no 'file'"):
        spool.finish()


def test_boundary_requires_multipart():
    assert boundary_of("multipart/form-data; boundary=abc") == b"abc"
    with pytest.raises(InvalidUpload):
        boundary_of("application/json")


def test_repeated_classes_fields_accumulate():
    body = multipart([("classes", b"bottle", None), ("classes", b"person", None), ("file", MP4_HEAD + b"x", "a.mp4")])
    spool = MultipartSpool(b"BOUND", 100_000)
    spool.write(body)
    spool.finish()
    assert spool.fields == {"classes": "bottle,person"}
