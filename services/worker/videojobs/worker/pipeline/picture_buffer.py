"""How much an H.264 or HEVC stream makes its decoder keep, read from the stream's sequence
parameter sets, against the most the service decodes.

The decoder keeps a stream's reference pictures (its decoded picture buffer) whatever the
worker's batch length: at 7680x4320 each 8-bit 4:2:0 frame is 47 MiB, a 10-bit one 95 MiB. An
encoder may ask for up to 16 at any size (x264 asks for 8 with its ``slower`` preset and 16 with
``veryslow``, at 8K too), which can add 700 MiB to a job that batches of one frame otherwise keep
under the worker's memory limit. The service decodes at most ``REFERENCE_BYTES_MAX`` of them
(common/formats.py, in capabilities: H.264 level 6.2's buffer, in bytes): at 7680x4320, 5 frames
of 8-bit 4:2:0 or 2 of 10-bit; at 3840x2160 and below, 16 of 8-bit 4:2:0. Bytes rather than
pictures, because frames of more than 8 bits or fuller chroma are larger in the decoder: at
7680x4320 with OCR, 5 frames of 10 bits took a job over the worker's 3 GiB like 8 frames of 8 bits
(scripts/bench_frame_memory.py). A stream asking for more fails at open, naming the numbers.

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

from videojobs.common.formats import REFERENCE_BYTES_MAX
from videojobs.worker.pipeline.errors import OversizedPictureBuffer

PICTURES_MAX = 16  # the most either standard lets a stream keep

# Packets read at open to find in-band parameter sets (an Annex B stream has no codec configuration).
_PACKETS_READ = 16
_H264_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}
_CHROMA = {0: "4:0:0", 1: "4:2:0", 2: "4:2:2", 3: "4:4:4"}
_CHROMA_QUARTERS = {0: 0, 1: 2, 2: 4, 3: 8}  # both chroma planes, in quarters of the luma plane


@dataclass(frozen=True)
class PictureBuffer:
    """What one sequence parameter set asks of the decoder."""

    codec: str  # "H.264" or "HEVC"
    pictures: int  # reference frames (H.264 max_num_ref_frames) or decoded pictures (HEVC sps_max_dec_pic_buffering)
    width: int  # coded size, in luma samples
    height: int
    chroma_format: int = 1  # chroma_format_idc
    bit_depth: int = 8  # of luma or chroma, the larger

    @property
    def picture_bytes(self) -> int:
        """One decoded picture in the decoder (FFmpeg keeps samples of 9 to 16 bits in two bytes)."""
        sample = 1 if self.bit_depth <= 8 else 2
        return self.width * self.height * sample * (4 + _CHROMA_QUARTERS.get(self.chroma_format, 8)) // 4

    @property
    def allowed(self) -> int:
        """The most pictures of this size and format the service decodes."""
        return min(PICTURES_MAX, REFERENCE_BYTES_MAX // self.picture_bytes)

    @property
    def too_large(self) -> bool:
        return self.pictures > self.allowed

    def describe(self) -> str:
        kept = "reference frames" if self.codec == "H.264" else "decoded pictures"
        advice = f", e.g. x264 --ref {self.allowed}" if self.codec == "H.264" else ""
        form = f"{self.bit_depth}-bit {_CHROMA.get(self.chroma_format, '4:4:4')}"
        return (
            f"the {self.codec} stream asks its decoder to keep {self.pictures} {kept} of {self.width}x{self.height} "
            f"{form} ({self.pictures * self.picture_bytes / 2**20:.0f} MiB); the service keeps at most "
            f"{REFERENCE_BYTES_MAX / 2**20:.0f} MiB of them, {self.allowed} such pictures: "
            f"re-encode it with fewer reference frames{advice}"
        )


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
    chroma_format_idc, bit_depth = 1, 8
    if profile_idc in _H264_HIGH_PROFILES:
        chroma_format_idc = s.read("ue")
        if chroma_format_idc == 3:
            s.pos += 1  # separate_colour_plane_flag
        bit_depth = 8 + max(s.read("ue"), s.read("ue"))  # bit_depth_luma_minus8, bit_depth_chroma_minus8
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
    return PictureBuffer("H.264", refs, width_mbs * 16, height_mbs * 16, chroma_format_idc, bit_depth)


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
    chroma_format_idc = s.read("ue")
    if chroma_format_idc == 3:
        s.pos += 1  # separate_colour_plane_flag
    width = s.read("ue")
    height = s.read("ue")
    if s.read("bool"):  # conformance_window_flag
        for _ in range(4):
            s.read("ue")
    bit_depth = 8 + max(s.read("ue"), s.read("ue"))  # bit_depth_luma_minus8, bit_depth_chroma_minus8
    s.read("ue")  # log2_max_pic_order_cnt_lsb_minus4
    every_layer = s.read("bool")  # sps_sub_layer_ordering_info_present_flag
    pictures = 0
    for _ in range(0 if every_layer else max_sub_layers_minus1, max_sub_layers_minus1 + 1):
        pictures = s.read("ue") + 1  # sps_max_dec_pic_buffering_minus1
        s.read("ue")  # sps_max_num_reorder_pics
        s.read("ue")  # sps_max_latency_increase_plus1
    return PictureBuffer("HEVC", pictures, width, height, chroma_format_idc, bit_depth)


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
