"""How many decoded pictures an H.264 or HEVC stream makes its decoder keep, read from the
stream's sequence parameter sets, against the most the service decodes at that frame size.

The decoder keeps a stream's reference pictures (its decoded picture buffer) whatever the
worker's batch length: at 7680x4320 each one is 47 MiB. An encoder may ask for up to 16 at any
size (x264 asks for 8 with its ``slower`` preset and 16 with ``veryslow``, at 8K too), which can
add 750 MiB to a job that batches of one frame otherwise keep under the worker's memory limit.
Both standards bound the buffer by the picture size in their level tables; the service decodes
what their largest levels (6.2) allow, e.g. at 7680x4320 5 frames of H.264 or 6 pictures of HEVC,
at 3840x2160 and below all 16, and a stream asking for more fails at open, naming the numbers.

Only the parameter sets a decoder is given up front are read: the container's codec
configuration (avcC / hvcC) and those in the packets up to the first keyframe. A stream that
sends a larger set later, in the middle of its data, is not caught here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import av
from bitstring import ConstBitStream, ReadError

from videojobs.worker.pipeline.errors import OversizedPictureBuffer

# H.264 Annex A, Table A-1: MaxDpbMbs of level 6.2, and the cap of A.3.1 h) on MaxDpbFrames.
H264_MAX_DPB_MBS = 696_320
H264_MAX_DPB_FRAMES = 16
# HEVC Annex A, Table A.8: MaxLumaPs of level 6.2; A.4.2: maxDpbPicBuf and MaxDpbSize's cap.
HEVC_MAX_LUMA_PS = 35_651_584
HEVC_MAX_DPB_PIC_BUF = 6
HEVC_MAX_DPB_SIZE = 16

# Packets read at open to find in-band parameter sets (an Annex B stream has no codec configuration).
_PACKETS_READ = 16
_H264_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


@dataclass(frozen=True)
class PictureBuffer:
    """What one sequence parameter set asks of the decoder."""

    codec: str  # "H.264" or "HEVC"
    pictures: int  # reference frames (H.264 max_num_ref_frames) or decoded pictures (HEVC sps_max_dec_pic_buffering)
    width: int  # coded size, in luma samples
    height: int
    allowed: int  # the most the service decodes at this size: what the standard's level 6.2 allows

    @property
    def too_large(self) -> bool:
        return self.pictures > self.allowed

    def describe(self) -> str:
        if self.codec == "H.264":
            kept, advice = "reference frames", f"e.g. x264 --ref {self.allowed}"
        else:
            kept, advice = "decoded pictures", "e.g. x265 --ref 3"
        return (
            f"the {self.codec} stream asks its decoder to keep {self.pictures} {kept} of {self.width}x{self.height}; "
            f"the service decodes at most {self.allowed} at that size, as {self.codec} level 6.2 allows "
            f"(re-encode it with fewer reference frames, {advice})"
        )


def h264_allowed(width_mbs: int, height_mbs: int) -> int:
    """A.3.1 h): MaxDpbFrames = Min(MaxDpbMbs / (PicWidthInMbs * FrameHeightInMbs), 16)."""
    return min(H264_MAX_DPB_MBS // max(1, width_mbs * height_mbs), H264_MAX_DPB_FRAMES)


def hevc_allowed(luma_samples: int) -> int:
    """A.4.2, equation (A-2), with the level 6.x MaxLumaPs."""
    if luma_samples <= HEVC_MAX_LUMA_PS >> 2:
        return min(4 * HEVC_MAX_DPB_PIC_BUF, HEVC_MAX_DPB_SIZE)
    if luma_samples <= HEVC_MAX_LUMA_PS >> 1:
        return min(2 * HEVC_MAX_DPB_PIC_BUF, HEVC_MAX_DPB_SIZE)
    if luma_samples <= (3 * HEVC_MAX_LUMA_PS) >> 2:
        return min(4 * HEVC_MAX_DPB_PIC_BUF // 3, HEVC_MAX_DPB_SIZE)
    return HEVC_MAX_DPB_PIC_BUF


def _rbsp(nal: bytes, header_bytes: int) -> ConstBitStream:
    """The NAL unit's payload without its header and emulation prevention bytes (00 00 03 -> 00 00)."""
    return ConstBitStream(nal[header_bytes:].replace(b"\x00\x00\x03", b"\x00\x00"))


def _skip_scaling_list(s: ConstBitStream, size: int) -> None:
    last = nxt = 8
    for _ in range(size):
        if nxt:
            nxt = (last + s.read("se") + 256) % 256
        last = nxt or last


def h264_sps(nal: bytes) -> PictureBuffer:
    """7.3.2.1.1, up to frame_mbs_only_flag."""
    s = _rbsp(nal, 1)
    profile_idc = s.read("uint:8")
    s.pos += 16  # constraint flags, level_idc
    s.read("ue")  # seq_parameter_set_id
    if profile_idc in _H264_HIGH_PROFILES:
        chroma_format_idc = s.read("ue")
        if chroma_format_idc == 3:
            s.pos += 1  # separate_colour_plane_flag
        s.read("ue")  # bit_depth_luma_minus8
        s.read("ue")  # bit_depth_chroma_minus8
        s.pos += 1  # qpprime_y_zero_transform_bypass_flag
        if s.read("bool"):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if s.read("bool"):
                    _skip_scaling_list(s, 16 if i < 6 else 64)
    s.read("ue")  # log2_max_frame_num_minus4
    poc_type = s.read("ue")
    if poc_type == 0:
        s.read("ue")  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        s.pos += 1  # delta_pic_order_always_zero_flag
        s.read("se")  # offset_for_non_ref_pic
        s.read("se")  # offset_for_top_to_bottom_field
        for _ in range(s.read("ue")):  # num_ref_frames_in_pic_order_cnt_cycle
            s.read("se")
    refs = s.read("ue")  # max_num_ref_frames
    s.pos += 1  # gaps_in_frame_num_value_allowed_flag
    width_mbs = s.read("ue") + 1
    map_units = s.read("ue") + 1
    height_mbs = map_units * (1 if s.read("bool") else 2)  # frame_mbs_only_flag
    return PictureBuffer("H.264", refs, width_mbs * 16, height_mbs * 16, h264_allowed(width_mbs, height_mbs))


def _skip_profile_tier_level(s: ConstBitStream, max_sub_layers_minus1: int) -> None:
    """7.3.3 with profilePresentFlag = 1."""
    s.pos += 88 + 8  # general profile, tier, flags; general_level_idc
    present = [(s.read("bool"), s.read("bool")) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        s.pos += 2 * (8 - max_sub_layers_minus1)  # reserved_zero_2bits
    for profile_present, level_present in present:
        s.pos += (88 if profile_present else 0) + (8 if level_present else 0)


def hevc_sps(nal: bytes) -> PictureBuffer:
    """7.3.2.2.1, up to the sub-layer ordering info; the highest sub-layer's buffer counts."""
    s = _rbsp(nal, 2)
    s.pos += 4  # sps_video_parameter_set_id
    max_sub_layers_minus1 = s.read("uint:3")
    s.pos += 1  # sps_temporal_id_nesting_flag
    _skip_profile_tier_level(s, max_sub_layers_minus1)
    s.read("ue")  # sps_seq_parameter_set_id
    if s.read("ue") == 3:  # chroma_format_idc
        s.pos += 1  # separate_colour_plane_flag
    width = s.read("ue")
    height = s.read("ue")
    if s.read("bool"):  # conformance_window_flag
        for _ in range(4):
            s.read("ue")
    s.read("ue")  # bit_depth_luma_minus8
    s.read("ue")  # bit_depth_chroma_minus8
    s.read("ue")  # log2_max_pic_order_cnt_lsb_minus4
    every_layer = s.read("bool")  # sps_sub_layer_ordering_info_present_flag
    pictures = 0
    for _ in range(0 if every_layer else max_sub_layers_minus1, max_sub_layers_minus1 + 1):
        pictures = s.read("ue") + 1  # sps_max_dec_pic_buffering_minus1
        s.read("ue")  # sps_max_num_reorder_pics
        s.read("ue")  # sps_max_latency_increase_plus1
    return PictureBuffer("HEVC", pictures, width, height, hevc_allowed(width * height))


@dataclass(frozen=True)
class _Codec:
    sps: Callable[[bytes], PictureBuffer]
    is_sps: Callable[[int], bool]  # from the first byte of a NAL unit
    config_arrays: Callable[[bytes], Iterator[bytes]]  # NAL units of the codec configuration record
    length_size: Callable[[bytes], int]  # bytes of each NAL unit's length in packets


def _avcc_units(config: bytes) -> Iterator[bytes]:
    """ISO/IEC 14496-15 AVCDecoderConfigurationRecord: SPS then PPS arrays."""
    at = 5
    for count_mask in (0x1F, 0xFF):
        count = config[at] & count_mask
        at += 1
        for _ in range(count):
            size = int.from_bytes(config[at:at + 2], "big")
            yield config[at + 2:at + 2 + size]
            at += 2 + size


def _hvcc_units(config: bytes) -> Iterator[bytes]:
    """ISO/IEC 14496-15 HEVCDecoderConfigurationRecord: arrays of NAL units after 22 bytes."""
    at = 23
    for _ in range(config[22]):
        count = int.from_bytes(config[at + 1:at + 3], "big")
        at += 3
        for _ in range(count):
            size = int.from_bytes(config[at:at + 2], "big")
            yield config[at + 2:at + 2 + size]
            at += 2 + size


_CODECS = {
    "h264": _Codec(h264_sps, lambda b: b & 0x1F == 7, _avcc_units, lambda c: (c[4] & 3) + 1),
    "hevc": _Codec(hevc_sps, lambda b: (b >> 1) & 0x3F == 33, _hvcc_units, lambda c: (c[21] & 3) + 1),
}


def _annex_b_units(data: bytes, wanted: Callable[[int], bool]) -> Iterator[bytes]:
    """The NAL units between start codes (00 00 01 / 00 00 00 01) whose first byte is `wanted`."""
    at = data.find(b"\x00\x00\x01")
    while at >= 0 and at + 3 < len(data):
        begin = at + 3
        at = data.find(b"\x00\x00\x01", begin)
        if wanted(data[begin]):
            yield data[begin:len(data) if at < 0 else at].rstrip(b"\x00")


def _length_prefixed_units(data: bytes, length_size: int, wanted: Callable[[int], bool]) -> Iterator[bytes]:
    """The NAL units of an ISO/IEC 14496-15 sample (each after its length) whose first byte is `wanted`."""
    at = 0
    while at + length_size < len(data):
        size = int.from_bytes(data[at:at + length_size], "big")
        begin = at + length_size
        if wanted(data[begin]):
            yield data[begin:begin + size]
        at = begin + size


def _is_config_record(extradata: bytes) -> bool:
    return len(extradata) > 6 and extradata[0] == 1  # configurationVersion; Annex B starts with 00 00


def parameter_sets(path: Path) -> list[PictureBuffer]:
    """Every H.264 / HEVC sequence parameter set the decoder is given up front (see the module's
    docstring), or none for other codecs. A parameter set that cannot be read is left to the
    decoder, which refuses it too."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            return []
        stream = container.streams.video[0]
        codec = _CODECS.get(stream.codec_context.name)
        if codec is None:
            return []
        extradata = bytes(stream.codec_context.extradata or b"")
        units: list[bytes] = []
        length_size = 0
        if _is_config_record(extradata):
            try:
                length_size = codec.length_size(extradata)
                units.extend(codec.config_arrays(extradata))
            except IndexError:
                pass
        else:
            units.extend(_annex_b_units(extradata, codec.is_sps))
        for n, packet in enumerate(container.demux(stream)):
            data = bytes(packet)
            if length_size:
                units.extend(_length_prefixed_units(data, length_size, codec.is_sps))
            else:
                units.extend(_annex_b_units(data, codec.is_sps))
            if packet.is_keyframe or n + 1 >= _PACKETS_READ:
                break
    found = []
    for unit in units:
        if unit and codec.is_sps(unit[0]):
            try:
                found.append(codec.sps(unit))
            except (ReadError, ValueError):
                continue
    return found


def check(path: Path) -> None:
    """Raise OversizedPictureBuffer, naming the numbers, if a parameter set asks for more pictures
    than the service decodes at its size (the one over by the most)."""
    over = [p for p in parameter_sets(path) if p.too_large]
    if over:
        raise OversizedPictureBuffer(max(over, key=lambda p: p.pictures - p.allowed).describe())
