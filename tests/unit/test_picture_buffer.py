"""Reading how many pictures an H.264 / HEVC stream keeps from its sequence parameter sets, and the
most the service decodes at each size (pipeline/picture_buffer.py). Clips are encoded by x264/x265
through PyAV with settings that change what the parser must walk through."""

from __future__ import annotations

import av
import pytest
from bitstring import BitArray

from tests.media import VP9_REALTIME, concatenated_clip, synthetic_clip, vp9_rewritten
from videojobs.common.formats import REFERENCE_BYTES_MAX
from videojobs.worker.pipeline import picture_buffer
from videojobs.worker.pipeline.errors import AbsurdDimensions, BadVideo, NotAVideo, OversizedPictureBuffer
from videojobs.worker.pipeline.picture_buffer import PictureBuffer, parameter_sets


@pytest.mark.parametrize("size, chroma, bits, allowed", [
    ((7680, 4320), 1, 8, 5),  # 47 MiB a frame: H.264 level 6.2's own 5 frames of 8K
    ((8192, 4320), 1, 8, 5),  # DCI 8K, the largest frames the service accepts
    ((7680, 4320), 1, 10, 2),  # 10 bits take two bytes a sample in the decoder
    ((7680, 4320), 3, 8, 2),  # 4:4:4: twice the bytes of 4:2:0
    ((7680, 4320), 0, 8, 8),  # monochrome: the luma plane alone
    ((3840, 2160), 1, 8, 16),  # 4K and below: both standards' cap
    ((3840, 2160), 1, 10, 10),
    ((3840, 2160), 3, 12, 5),
    ((1920, 1088), 2, 10, 16),
])
def test_the_service_keeps_at_most_255_mib_of_pictures(size, chroma, bits, allowed):
    buffer = PictureBuffer("H.264", 16, *size, chroma_format=chroma, bit_depth=bits)
    assert buffer.allowed == allowed
    assert allowed * buffer.picture_bytes <= REFERENCE_BYTES_MAX == 255 * 2**20
    assert allowed == 16 or (allowed + 1) * buffer.picture_bytes > REFERENCE_BYTES_MAX


def _clip(tmp_path, name, codec, size, params="", container="mp4", pix_fmt="yuv420p"):
    key = "x264-params" if codec == "libx264" else "x265-params"
    options = {"preset": "ultrafast", **({key: params} if params else {})}
    return synthetic_clip(tmp_path / name, container, codec, size, frames=3, options=options, pix_fmt=pix_fmt)


@pytest.mark.parametrize("params, container, refs, height", [
    ("ref=7", "mp4", 7, 720),  # avcC in the sample description
    ("ref=7", "matroska", 7, 720),  # avcC in CodecPrivate
    ("ref=7", "avi", 7, 720),  # Annex B: the SPS in the first packet, between start codes
    ("ref=4:interlaced=1", "mp4", 4, 736),  # fields: 23 map units of two macroblock rows each
    ("ref=2", "h264", 2, 720),  # a raw Annex B stream
])
def test_h264_reference_frames_and_size_are_read_from_the_sps(tmp_path, params, container, refs, height):
    path = _clip(tmp_path, "clip", "libx264", (1280, 720), params, container)
    assert parameter_sets(path) and set(parameter_sets(path)) == {PictureBuffer("H.264", refs, 1280, height)}


def _h264_sps_nal(refs: int, width_mbs: int, map_units: int, *, scaling_lists: dict[int, list[int]],
                  poc_cycle: list[int], crop: tuple[int, int, int, int] = (0, 0, 0, 0)) -> bytes:
    """A High profile SPS written field by field (7.3.2.1.1): scaling lists and picture order count type 1,
    which x264 never writes, and its emulation prevention bytes."""
    fields = BitArray(uint8=100) + BitArray(uint16=0x0033) + BitArray(ue=0)  # profile, flags and level, id
    fields += BitArray(ue=1) + BitArray(ue=0) + BitArray(ue=0) + BitArray(bool=False)  # 4:2:0, 8 bits
    fields += BitArray(bool=True)  # seq_scaling_matrix_present_flag
    for i in range(8):
        fields += BitArray(bool=i in scaling_lists)
        for delta in scaling_lists.get(i, []):
            fields += BitArray(se=delta)
    fields += BitArray(ue=0) + BitArray(ue=1)  # log2_max_frame_num_minus4, pic_order_cnt_type 1
    fields += BitArray(bool=False) + BitArray(se=-2) + BitArray(se=3) + BitArray(ue=len(poc_cycle))
    for offset in poc_cycle:
        fields += BitArray(se=offset)
    fields += BitArray(ue=refs) + BitArray(bool=False) + BitArray(ue=width_mbs - 1) + BitArray(ue=map_units - 1)
    fields += BitArray(bool=True) + BitArray(bool=False)  # frame_mbs_only_flag, direct_8x8_inference_flag
    fields += BitArray(bool=True) + sum((BitArray(ue=v) for v in crop), BitArray())  # frame cropping: l, r, t, b
    fields += BitArray(bool=False)  # vui_parameters_present_flag
    fields += BitArray(bool=True)  # rbsp_stop_one_bit
    fields += BitArray(-fields.len % 8)
    rbsp = fields.bytes
    escaped = bytearray()
    for byte in rbsp:  # 7.4.1: no 00 00 0x (x <= 3) inside a NAL unit
        if len(escaped) >= 2 and escaped[-2:] == b"\x00\x00" and byte <= 3:
            escaped.append(3)
        escaped.append(byte)
    return b"\x67" + bytes(escaped)


def test_h264_scaling_lists_and_poc_type_1_are_walked_over():
    # List 0: 16 explicit deltas; list 3: delta -8 (back to the default list); list 6: 64 values, 8x8.
    lists = {0: [1, -2, 3, 0, 5, -6, 7, 1, 1, 1, 1, 1, 1, 1, 1, 1], 3: [-8], 6: [2] + [0] * 63}
    nal = _h264_sps_nal(11, 480, 270, scaling_lists=lists, poc_cycle=[1, 2**24, -(2**24)], crop=(1, 2, 0, 4))
    assert b"\x00\x00\x03" in nal  # the 24 leading zeros of the large offsets need escaping
    found = picture_buffer.h264_sps(nal)
    assert found == PictureBuffer("H.264", 11, 7680, 4320, 1, 8)
    assert found.display_size == (7680 - 2 * 3, 4320 - 2 * 4)  # cropping counts in chroma samples of 4:2:0


@pytest.mark.parametrize("codec, pix_fmt, chroma, bits", [
    ("libx264", "yuv420p10le", 1, 10),
    ("libx264", "yuv422p", 2, 8),
    ("libx264", "yuv444p10le", 3, 10),
    ("libx264", "gray", 0, 8),
    ("libx265", "yuv420p10le", 1, 10),
    ("libx265", "yuv444p12le", 3, 12),
])
def test_chroma_format_and_bit_depth_are_read_from_the_sps(tmp_path, codec, pix_fmt, chroma, bits):
    (found,) = set(parameter_sets(_clip(tmp_path, "clip.mkv", codec, (640, 360), container="matroska",
                                        pix_fmt=pix_fmt)))
    assert (found.chroma_format, found.bit_depth) == (chroma, bits)


def test_h264_frames_are_counted_in_whole_macroblocks(tmp_path):
    # 1080 rows are coded as 68 macroblock rows (1088); the crop is not part of the buffer.
    (found,) = parameter_sets(_clip(tmp_path, "clip.mp4", "libx264", (1920, 1080), "ref=5"))
    assert (found.pictures, found.width, found.height) == (5, 1920, 1088)


@pytest.mark.parametrize("params", ["ref=2:bframes=0", "ref=6:bframes=0", "ref=3:temporal-layers=3"])
def test_hevc_size_and_a_picture_count_that_follows_x265_s_references(tmp_path, params):
    (found,) = set(parameter_sets(_clip(tmp_path, "clip.mp4", "libx265", (1280, 720), params)))
    assert (found.codec, found.width, found.height, found.allowed) == ("HEVC", 1280, 720, 16)
    assert (found.chroma_format, found.bit_depth) == (1, 8)
    refs = int(params.split(":")[0].split("=")[1])
    assert refs < found.pictures <= 16  # the references and the picture being decoded, at least


def test_hevc_picture_counts_grow_with_the_references(tmp_path):
    counts = [parameter_sets(_clip(tmp_path, f"{r}.mkv", "libx265", (640, 360), f"ref={r}:bframes=0", "matroska"))[0]
              .pictures for r in (1, 4, 8)]
    assert counts == sorted(counts) and len(set(counts)) == 3


@pytest.mark.parametrize("codec, container", [("mpeg4", "mp4"), ("mjpeg", "avi"), ("libvpx-vp9", "webm")])
def test_other_codecs_carry_no_parameter_sets_to_check(tmp_path, codec, container):
    path = synthetic_clip(tmp_path / f"clip.{container}", container, codec, (320, 240), frames=2,
                          pix_fmt="yuvj420p" if codec == "mjpeg" else "yuv420p")
    assert parameter_sets(path) == []
    picture_buffer.check(path)


def test_an_unreadable_sps_is_left_to_the_decoder(tmp_path):
    path = _clip(tmp_path, "clip.mp4", "libx264", (7680, 4320), "ref=16")
    with av.open(str(path)) as container:
        config = bytes(container.streams.video[0].codec_context.extradata)
    sps = config[8:8 + int.from_bytes(config[6:8], "big")]  # avcC: the first SPS, after its 2-byte length
    data = path.read_bytes()
    assert data.count(sps) == 1
    path.write_bytes(data.replace(sps, sps[:1] + bytes(len(sps) - 1)))  # its header, then zeros
    assert parameter_sets(path) == []
    picture_buffer.check(path)


def test_a_stream_over_the_buffer_fails_naming_the_numbers(tmp_path):
    path = _clip(tmp_path, "8k.mp4", "libx264", (7680, 4320), "ref=16")
    with pytest.raises(OversizedPictureBuffer) as info:
        picture_buffer.check(path)
    assert isinstance(info.value, BadVideo)
    assert str(info.value) == (
        "the H.264 stream asks its decoder to keep 16 reference frames of 7680x4320 8-bit 4:2:0 (759 MiB); the "
        "service keeps at most 255 MiB of them, 5 such pictures: re-encode it with fewer reference frames, "
        "e.g. x264 --ref 5")


def test_ten_bit_frames_count_twice(tmp_path):
    with pytest.raises(OversizedPictureBuffer, match="keep 5 reference frames of 7680x4320 10-bit 4:2:0 .475 MiB."):
        picture_buffer.check(_clip(tmp_path, "8k10.mp4", "libx264", (7680, 4320), "ref=5", pix_fmt="yuv420p10le"))


def test_the_largest_buffers_within_the_bound_are_accepted(tmp_path):
    picture_buffer.check(_clip(tmp_path, "8k.mp4", "libx264", (7680, 4320), "ref=5"))
    picture_buffer.check(_clip(tmp_path, "8k10.mp4", "libx264", (7680, 4320), "ref=2", pix_fmt="yuv420p10le"))
    picture_buffer.check(_clip(tmp_path, "4k.mp4", "libx264", (3840, 2160), "ref=16"))


_NO_B_FRAMES = "bframes=0"


def _parts(*specs):
    return [dict(size=size, frames=frames, options={"preset": "ultrafast", "x264-params": f"{params}:{_NO_B_FRAMES}"})
            for size, frames, params in specs]


@pytest.mark.parametrize("container", ["mp4", "matroska", "avi"])
def test_parameter_sets_in_the_middle_of_the_stream_are_read(tmp_path, container):
    # avcC / CodecPrivate name only the first part's; the others come in the packets (Annex B in AVI).
    path = concatenated_clip(tmp_path / "joined", container, "libx264",
                             _parts(((640, 360), 3, "ref=1"), ((1280, 720), 3, "ref=7"), ((640, 360), 2, "ref=1")))
    assert set(parameter_sets(path)) == {PictureBuffer("H.264", 1, 640, 368), PictureBuffer("H.264", 7, 1280, 720)}


def test_a_buffer_or_a_frame_size_over_the_bounds_in_the_middle_fails(tmp_path):
    refs = concatenated_clip(tmp_path / "refs.mp4", "mp4", "libx264",
                             _parts(((640, 360), 2, "ref=1"), ((7680, 4320), 1, "ref=16")))
    with pytest.raises(OversizedPictureBuffer, match="keep 16 reference frames of 7680x4320 8-bit 4:2:0 .759 MiB."):
        picture_buffer.check(refs)
    large = concatenated_clip(tmp_path / "large.mp4", "mp4", "libx264",
                              _parts(((640, 360), 2, "ref=1"), ((8192, 8192), 1, "ref=1")))
    with pytest.raises(AbsurdDimensions) as info:
        picture_buffer.check(large)
    assert str(info.value) == ("inside the H.264 stream (its sequence parameter sets), the frame size 8192x8192 "
                               "(67.1 megapixels) is over the 35.4 megapixels of 8192x4320 (DCI 8K) the service "
                               "analyses")


def test_frame_sizes_are_checked_as_displayed_not_as_coded(tmp_path):
    # Coded sizes are whole macroblocks (H.264) or coding blocks (HEVC); the bounds are on what is shown.
    (h264,) = parameter_sets(_clip(tmp_path, "1080.mp4", "libx264", (1920, 1080)))
    assert (h264.width, h264.height, h264.display_size) == (1920, 1088, (1920, 1080))
    (hevc,) = set(parameter_sets(_clip(tmp_path, "odd.mkv", "libx265", (642, 362), container="matroska")))
    assert hevc.display_size == (642, 362) and (hevc.width, hevc.height) != (642, 362)


def test_a_stream_of_too_many_different_parameter_sets_is_refused(tmp_path, monkeypatch):
    path = concatenated_clip(tmp_path / "many.mp4", "mp4", "libx264",
                             _parts(*(((640, 360), 1, f"ref={r}") for r in (1, 2, 3))))
    assert len(parameter_sets(path)) == 3
    monkeypatch.setattr(picture_buffer, "PARAMETER_SETS_MAX", 2)
    with pytest.raises(NotAVideo, match="the H.264 stream carries more than 2 different sequence parameter sets"):
        parameter_sets(path)


def test_nal_units_that_only_look_like_parameter_sets_are_left_to_the_decoder(tmp_path):
    from tests.hostile.corpus import _no_ftyp
    from tests.integration.conftest import SAMPLE

    # Without its ftyp the sample's chunk offsets point 32 bytes off: its "packets" are other bytes, where a
    # walk of NAL lengths finds 30 units of the SPS type. FFmpeg would refuse them (unknown profiles,
    # nal_ref_idc 0, ...), so they are not read as the stream's parameters: only the real one is.
    shifted = tmp_path / "no-ftyp.mp4"
    shifted.write_bytes(_no_ftyp(SAMPLE.read_bytes()))
    assert parameter_sets(shifted) == parameter_sets(SAMPLE) == [PictureBuffer("H.264", 4, 640, 368)]
    picture_buffer.check(shifted)
    good = _h264_sps_nal(4, 40, 23, scaling_lists={}, poc_cycle=[])
    assert picture_buffer.h264_sps(good).pictures == 4
    for bad in (bytes([good[0] & 0x9F]) + good[1:],  # nal_ref_idc 0
                good[:1] + bytes([99]) + good[2:],  # no such profile
                _h264_sps_nal(17, 40, 23, scaling_lists={}, poc_cycle=[])):  # more references than FFmpeg keeps
        with pytest.raises(ValueError, match="not a usable parameter set"):
            picture_buffer.h264_sps(bad)


# -- VP9: the reference frames held at once, from each frame's header --------------------------------------
_SYNC = "0x498342"  # frame_sync_code


def _vp9(bits: BitArray) -> av.Packet:
    return av.Packet(bits.tobytes() + bytes(8))  # the frame's data after its header


def _vp9_keyframe(width, height, profile=0, subsampling=(1, 1), twelve_bits=False) -> av.Packet:
    bits = BitArray(f"uint2=2, uint1={profile & 1}, uint1={profile >> 1}")
    if profile == 3:
        bits.append("uint1=0")
    bits.append(f"uint1=0, uint1=0, uint1=1, uint1=0, {_SYNC}")  # not shown before, KEY_FRAME, shown, not resilient
    if profile >= 2:
        bits.append(f"uint1={int(twelve_bits)}")
    bits.append("uint3=1, uint1=0")  # BT.601, studio range
    if profile in (1, 3):
        bits.append(f"uint1={subsampling[0]}, uint1={subsampling[1]}, uint1=0")
    bits.append(f"uint16={width - 1}, uint16={height - 1}, uint1=0")
    return _vp9(bits)


def _vp9_inter(refresh, size=None, references=(0, 1, 2), shown=True, profile=0) -> av.Packet:
    bits = BitArray(f"uint2=2, uint1={profile & 1}, uint1={profile >> 1}")
    if profile == 3:
        bits.append("uint1=0")
    bits.append(f"uint1=0, uint1=1, uint1={int(shown)}, uint1=0")  # an inter frame, not resilient
    if not shown:
        bits.append("uint1=0")  # not intra-only
    bits.append(f"uint2=0, uint8={refresh}")
    for slot in references:
        bits.append(f"uint3={slot}, uint1=0")
    if size is None:
        bits.append("uint1=1")  # the size of the first reference
    else:
        bits.append(f"uint1=0, uint1=0, uint1=0, uint16={size[0] - 1}, uint16={size[1] - 1}")
    return _vp9(bits)


def _vp9_intra_only(refresh, width, height) -> av.Packet:
    bits = BitArray(f"uint2=2, uint1=0, uint1=0, uint1=0, uint1=1, uint1=0, uint1=0, uint1=1, uint2=0, {_SYNC}, "
                    f"uint8={refresh}, uint16={width - 1}, uint16={height - 1}")  # hidden, profile 0: 8-bit 4:2:0
    return _vp9(bits)


def _vp9_show_existing(slot) -> av.Packet:
    return _vp9(BitArray(f"uint2=2, uint1=0, uint1=0, uint1=1, uint3={slot}"))


def _vp9_superframe(*frames: av.Packet) -> av.Packet:
    """Several frames in one packet, their sizes (2 bytes each) in an index at the end."""
    marker = 0xC0 | (1 << 3) | (len(frames) - 1)
    data = [bytes(frame) for frame in frames]
    index = bytes([marker]) + b"".join(len(d).to_bytes(2, "little") for d in data) + bytes([marker])
    return av.Packet(b"".join(data) + index)


def _frame_bytes(width, height, chroma=1, bits=8):
    return PictureBuffer("VP9", 1, width, height, chroma, bits).picture_bytes


def test_vp9_frames_held_at_once_are_counted_from_each_frames_header():
    seen = picture_buffer.Vp9References()
    seen.add(_vp9_keyframe(7680, 4320))  # fills all 8 slots with itself
    assert seen.most_held == _frame_bytes(7680, 4320)
    for slot in (1, 2):
        seen.add(_vp9_inter(1 << slot))
    seen.add(_vp9_show_existing(2))  # shows a slot, keeps nothing new
    seen.add(_vp9_intra_only(1 << 3, 3840, 2160))  # hidden, of its own size
    seen.add(_vp9_superframe(_vp9_inter(1 << 4, shown=False), _vp9_inter(1 << 5)))  # two frames in one packet
    assert seen.frames == 6  # decoded: the shown existing frame is not one
    held = 5 * _frame_bytes(7680, 4320) + _frame_bytes(3840, 2160)
    assert seen.most_held == held < REFERENCE_BYTES_MAX  # 249 MiB
    assert sorted((p.width, p.height) for p in seen.most_held_pictures) == [(3840, 2160)] + [(7680, 4320)] * 5
    seen.check()
    seen.add(_vp9_inter(0))  # refreshes nothing
    seen.add(_vp9_inter(1 << 6, references=(6, 0, 0)))  # a sixth 8K frame, sized from slot 6 (still the keyframe)
    assert seen.most_held == held + _frame_bytes(7680, 4320)
    with pytest.raises(OversizedPictureBuffer, match=r"keep 7 different reference frames at once, up to 7680x4320 "
                                                     r"8-bit 4:2:0 \(297 MiB\); the service keeps at most 255 MiB"):
        seen.check()


@pytest.mark.parametrize("profile, subsampling, twelve_bits, chroma, bits", [
    (1, (0, 0), False, 3, 8), (1, (1, 0), False, 2, 8), (2, (1, 1), False, 1, 10), (3, (0, 0), True, 3, 12)])
def test_vp9_frames_are_counted_in_their_formats_bytes(profile, subsampling, twelve_bits, chroma, bits):
    seen = picture_buffer.Vp9References()
    seen.add(_vp9_keyframe(1920, 1080, profile, subsampling, twelve_bits))
    seen.add(_vp9_inter(1 << 1, profile=profile))  # inter frames keep the keyframe's format
    assert seen.most_held == 2 * _frame_bytes(1920, 1080, chroma, bits)
    assert {(p.chroma_format, p.bit_depth) for p in seen.most_held_pictures} == {(chroma, bits)}


def test_a_vp9_frame_larger_than_the_service_analyses_is_named():
    seen = picture_buffer.Vp9References()
    seen.add(_vp9_keyframe(640, 360))
    seen.add(_vp9_inter(1, size=(16384, 16384)))
    with pytest.raises(AbsurdDimensions, match=r"inside the VP9 stream \(its frame headers\), the frame size "
                                               r"16384x16384 is outside 1\.\.8192"):
        seen.check()


def test_vp9_headers_the_decoder_would_refuse_are_left_to_it():
    seen = picture_buffer.Vp9References()
    for data in (b"\x00" * 8, b"\x80", bytes(_vp9_keyframe(640, 360))[:5]):  # frame marker 0; cut short
        seen.add(av.Packet(data))
    seen.add(_vp9_inter(0xFF))  # its size from a slot no keyframe has filled
    assert seen.frames == 0 and seen.most_held == 0
    seen.check()


def test_a_libvpx_stream_keeps_three_frames_and_a_rewritten_one_eight(tmp_path):
    clip = synthetic_clip(tmp_path / "vp9.webm", "webm", "libvpx-vp9", (640, 360), frames=12, options=VP9_REALTIME)
    with av.open(str(clip)) as container:
        packets = sum(1 for p in container.demux(video=0) if p.size)
    plain = picture_buffer._scan(clip)
    assert isinstance(plain, picture_buffer.Vp9References) and plain.frames == packets == 12
    assert len(plain.most_held_pictures) == 3 and {(p.width, p.height) for p in plain.most_held_pictures} == {(640, 360)}
    rewritten = picture_buffer._scan(vp9_rewritten(clip, tmp_path / "8.mkv", distinct_references=True))
    assert isinstance(rewritten, picture_buffer.Vp9References) and len(rewritten.most_held_pictures) == 8
    picture_buffer.check(tmp_path / "8.mkv")  # 8 frames of 640x360: far within the bound
    with pytest.raises(OversizedPictureBuffer, match="keep 8 different reference frames at once, up to 7680x4320"):
        picture_buffer.check(vp9_rewritten(clip, tmp_path / "8k.mkv", size=(7680, 4320), distinct_references=True))
    picture_buffer.check(vp9_rewritten(clip, tmp_path / "8k-3.mkv", size=(7680, 4320)))  # 3 frames of 8K: 142 MiB
