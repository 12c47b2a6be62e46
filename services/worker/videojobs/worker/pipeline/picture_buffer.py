"""How much an H.264, HEVC or VP9 stream makes its decoder keep, read from the stream's sequence
parameter sets (VP9: from every frame's header, ``Vp9References``), against the most the service
decodes: the pictures it keeps, and their size.

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

Every parameter set the decoder will be given is read before it decodes a frame: the container's
codec configuration (avcC / hvcC) and those inside every packet of the stream (``ParameterSets``, in
the one pass of the demuxer over the file that a reader makes at open, no decoding, see
``video.survey``). A stream may change its
parameters in the middle (concatenated recordings do); one that switches to a larger buffer, or
to frames larger than the service analyses, would have the decoder allocate them before any
frame reached the worker's own checks: the header said 640x360, and the decoder went on to
frames of 8192x8192 with 16 references (3.5 GiB at its peak, over a worker's 3 GiB; OpenCV even
scales such frames down to the header's size, so the job completed). The frame size of each
parameter set is held to the same bounds as the header's (``check_frame_size``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol

import av
from bitstring import ConstBitStream, ReadError

from videojobs.common.formats import FRAME_PIXELS_MAX, FRAME_SIDE_MAX, FRAME_SIDE_MIN, REFERENCE_BYTES_MAX
from videojobs.worker.pipeline.errors import AbsurdDimensions, NotAVideo, OversizedPictureBuffer

PICTURES_MAX = 16  # the most either standard lets a stream keep

# Distinct sequence parameter sets a stream may carry: encoders repeat the same one at every keyframe,
# a concatenation of recordings brings a few. Each distinct one is parsed (in Python: about 50 us), so
# a file made of little else must not cost an hour of it.
PARAMETER_SETS_MAX = 256
_H264_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}
_H264_PROFILES = {66, 77, 88} | _H264_HIGH_PROFILES
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
    cropped: tuple[int, int] = field(default=(0, 0), compare=False)  # columns and rows cut off for display

    @property
    def display_size(self) -> tuple[int, int]:
        return self.width - self.cropped[0], self.height - self.cropped[1]

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

    @property
    def form(self) -> str:
        """e.g. 8-bit 4:2:0"""
        return f"{self.bit_depth}-bit {_CHROMA.get(self.chroma_format, '4:4:4')}"

    def describe(self) -> str:
        kept = "reference frames" if self.codec == "H.264" else "decoded pictures"
        advice = f", e.g. x264 --ref {self.allowed}" if self.codec == "H.264" else ""
        return (
            f"the {self.codec} stream asks its decoder to keep {self.pictures} {kept} of {self.width}x{self.height} "
            f"{self.form} ({self.pictures * self.picture_bytes / 2**20:.0f} MiB); the service keeps at most "
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


def _valid(condition: bool, what: str) -> None:
    """Parameter sets FFmpeg would refuse (or that no encoder writes) are left to the decoder: in data that is
    damaged (or not what its index says) a NAL unit may look like one by chance."""
    if not condition:
        raise ValueError(f"not a usable parameter set: {what}")


def _decodable_size(width: int, height: int) -> bool:
    """libavutil's av_image_check_size: what FFmpeg decodes at all."""
    return (width + 128) * (height + 128) < (2**31 - 1) // 8


def h264_sps(nal: bytes) -> PictureBuffer:
    """7.3.2.1.1, up to the frame cropping; ValueError for values FFmpeg refuses or no profile has."""
    _valid(nal[0] & 0x80 == 0 and nal[0] & 0x60 != 0, "forbidden_zero_bit / nal_ref_idc")
    s = _rbsp(nal, 1)
    profile_idc = s.read("uint:8")
    _valid(profile_idc in _H264_PROFILES, f"profile_idc {profile_idc}")
    s.pos += 16  # constraint flags, level_idc
    _valid(s.read("ue") < 32, "seq_parameter_set_id")
    chroma_format_idc, bit_depth = 1, 8
    if profile_idc in _H264_HIGH_PROFILES:
        chroma_format_idc = s.read("ue")
        _valid(chroma_format_idc <= 3, "chroma_format_idc")
        if chroma_format_idc == 3:
            s.pos += 1  # separate_colour_plane_flag
        luma, chroma = s.read("ue"), s.read("ue")  # bit_depth_luma_minus8, bit_depth_chroma_minus8
        _valid(luma <= 6 and chroma <= 6, "bit depth")
        bit_depth = 8 + max(luma, chroma)
        s.pos += 1  # qpprime_y_zero_transform_bypass_flag
        if s.read("bool"):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if s.read("bool"):
                    _skip_scaling_list(s, 16 if i < 6 else 64)
    _valid(s.read("ue") <= 12, "log2_max_frame_num_minus4")
    poc_type = s.read("ue")
    _valid(poc_type <= 2, "pic_order_cnt_type")
    if poc_type == 0:
        _valid(s.read("ue") <= 12, "log2_max_pic_order_cnt_lsb_minus4")
    elif poc_type == 1:
        s.pos += 1  # delta_pic_order_always_zero_flag
        s.read("se")  # offset_for_non_ref_pic
        s.read("se")  # offset_for_top_to_bottom_field
        cycle = s.read("ue")  # num_ref_frames_in_pic_order_cnt_cycle
        _valid(cycle < 256, "num_ref_frames_in_pic_order_cnt_cycle")
        for _ in range(cycle):
            s.read("se")
    refs = s.read("ue")  # max_num_ref_frames
    _valid(refs <= PICTURES_MAX, "max_num_ref_frames")
    s.pos += 1  # gaps_in_frame_num_value_allowed_flag
    width_mbs = s.read("ue") + 1
    map_units = s.read("ue") + 1
    frame_mbs_only = s.read("bool")
    height_mbs = map_units * (1 if frame_mbs_only else 2)
    _valid(_decodable_size(width_mbs * 16, height_mbs * 16), "frame size")
    s.pos += 1 if frame_mbs_only else 2  # mb_adaptive_frame_field_flag, direct_8x8_inference_flag
    cropped = (0, 0)
    if s.read("bool"):  # frame_cropping_flag: offsets in chroma samples (6.2, 7.4.2.1.1)
        left, right, top, bottom = (s.read("ue") for _ in range(4))
        unit_x, unit_y = _chroma_step(chroma_format_idc)
        cropped = (unit_x * (left + right), unit_y * (2 - frame_mbs_only) * (top + bottom))
        if cropped[0] >= width_mbs * 16 or cropped[1] >= height_mbs * 16:
            cropped = (0, 0)  # FFmpeg ignores a crop larger than the picture
    return PictureBuffer("H.264", refs, width_mbs * 16, height_mbs * 16, chroma_format_idc, bit_depth, cropped)


def _chroma_step(chroma_format_idc: int) -> tuple[int, int]:
    """SubWidthC and SubHeightC: luma samples per chroma sample across and down (1 without chroma)."""
    return {1: (2, 2), 2: (2, 1)}.get(chroma_format_idc, (1, 1))


def _skip_profile_tier_level(s: ConstBitStream, max_sub_layers_minus1: int) -> None:
    """7.3.3 with profilePresentFlag = 1."""
    s.pos += 88 + 8  # general profile, tier, flags; general_level_idc
    present = [(s.read("bool"), s.read("bool")) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        s.pos += 2 * (8 - max_sub_layers_minus1)  # reserved_zero_2bits
    for profile_present, level_present in present:
        s.pos += (88 if profile_present else 0) + (8 if level_present else 0)


def hevc_sps(nal: bytes) -> PictureBuffer:
    """7.3.2.2.1, up to the sub-layer ordering info; the highest sub-layer's buffer counts. ValueError for
    values FFmpeg refuses, and for sets of layers other than the base one (which FFmpeg's decoder skips)."""
    _valid(nal[0] & 0x80 == 0 and (nal[0] & 1, nal[1] >> 3) == (0, 0) and nal[1] & 7 != 0,
           "forbidden_zero_bit / nuh_layer_id / nuh_temporal_id_plus1")
    s = _rbsp(nal, 2)
    s.pos += 4  # sps_video_parameter_set_id
    max_sub_layers_minus1 = s.read("uint:3")
    _valid(max_sub_layers_minus1 <= 6, "sps_max_sub_layers_minus1")
    s.pos += 1  # sps_temporal_id_nesting_flag
    _skip_profile_tier_level(s, max_sub_layers_minus1)
    _valid(s.read("ue") < 16, "sps_seq_parameter_set_id")
    chroma_format_idc = s.read("ue")
    _valid(chroma_format_idc <= 3, "chroma_format_idc")
    if chroma_format_idc == 3:
        s.pos += 1  # separate_colour_plane_flag
    width = s.read("ue")
    height = s.read("ue")
    _valid(width > 0 and height > 0 and _decodable_size(width, height), "frame size")
    cropped = (0, 0)
    if s.read("bool"):  # conformance_window_flag: offsets in chroma samples
        left, right, top, bottom = (s.read("ue") for _ in range(4))
        unit_x, unit_y = _chroma_step(chroma_format_idc)
        cropped = (unit_x * (left + right), unit_y * (top + bottom))
        if cropped[0] >= width or cropped[1] >= height:
            cropped = (0, 0)  # FFmpeg ignores a window larger than the picture
    luma, chroma = s.read("ue"), s.read("ue")  # bit_depth_luma_minus8, bit_depth_chroma_minus8
    _valid(luma <= 8 and chroma <= 8, "bit depth")
    bit_depth = 8 + max(luma, chroma)
    _valid(s.read("ue") <= 12, "log2_max_pic_order_cnt_lsb_minus4")
    every_layer = s.read("bool")  # sps_sub_layer_ordering_info_present_flag
    pictures = 0
    for _ in range(0 if every_layer else max_sub_layers_minus1, max_sub_layers_minus1 + 1):
        pictures = s.read("ue") + 1  # sps_max_dec_pic_buffering_minus1
        _valid(pictures <= PICTURES_MAX, "sps_max_dec_pic_buffering_minus1")
        s.read("ue")  # sps_max_num_reorder_pics
        s.read("ue")  # sps_max_latency_increase_plus1
    return PictureBuffer("HEVC", pictures, width, height, chroma_format_idc, bit_depth, cropped)


@dataclass(frozen=True)
class _Codec:
    name: str  # as errors name it
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
    "h264": _Codec("H.264", h264_sps, lambda b: b & 0x1F == 7, _avcc_units, lambda c: (c[4] & 3) + 1),
    "hevc": _Codec("HEVC", hevc_sps, lambda b: (b >> 1) & 0x3F == 33, _hvcc_units, lambda c: (c[21] & 3) + 1),
}


def _annex_b_units(data: bytes, wanted: Callable[[int], bool]) -> Iterator[bytes]:
    """The NAL units between start codes (00 00 01 / 00 00 00 01) whose first byte is `wanted`."""
    at = data.find(b"\x00\x00\x01")
    while at >= 0 and at + 3 < len(data):
        begin = at + 3
        at = data.find(b"\x00\x00\x01", begin)
        if wanted(data[begin]):
            yield data[begin:len(data) if at < 0 else at].rstrip(b"\x00")


_LENGTHS = {1: struct.Struct(">B"), 2: struct.Struct(">H"), 4: struct.Struct(">I")}  # (3 bytes: int.from_bytes)


def _length_prefixed_units(data: memoryview | bytes, length_size: int,
                           wanted: Callable[[int], bool]) -> Iterator[bytes]:
    """The NAL units of an ISO/IEC 14496-15 sample (each after its length) whose first byte is `wanted`
    (only those are copied out of `data`)."""
    length = _LENGTHS.get(length_size)
    at, end = 0, len(data)
    while at + length_size < end:
        size = length.unpack_from(data, at)[0] if length else int.from_bytes(data[at:at + length_size], "big")
        begin = at + length_size
        if wanted(data[begin]):
            yield bytes(data[begin:begin + size])
        at = begin + size


def _is_config_record(extradata: bytes) -> bool:
    return len(extradata) > 6 and extradata[0] == 1  # configurationVersion; Annex B starts with 00 00


class ParameterSets:
    """The distinct H.264 / HEVC sequence parameter sets of one video stream: those of its codec configuration,
    then those inside each packet given to ``add`` (none for other codecs). A parameter set that cannot be
    read is left to the decoder, which refuses it too. NotAVideo once the stream carries more than
    PARAMETER_SETS_MAX different ones."""

    def __init__(self, codec: str = "", extradata: bytes = b"") -> None:
        """`codec`: FFmpeg's name of the stream's codec; `extradata`: its codec configuration."""
        self._codec = _CODECS.get(codec)
        self._length_size = 0
        self._seen: dict[bytes, PictureBuffer | None] = {}
        if self._codec is None:
            return
        if _is_config_record(extradata):
            try:
                self._length_size = self._codec.length_size(extradata)
                self._read(list(self._codec.config_arrays(extradata)))
            except IndexError:
                pass
        else:
            self._read(_annex_b_units(extradata, self._codec.is_sps))

    @classmethod
    def of(cls, stream: "av.VideoStream") -> "ParameterSets":
        return cls(stream.codec_context.name, bytes(stream.codec_context.extradata or b""))

    def add(self, packet: "av.Packet") -> None:
        """Read the parameter sets inside `packet` (length-prefixed units are walked without copying it)."""
        if self._codec is None or not packet.size:
            return
        if self._length_size:
            self._read(_length_prefixed_units(memoryview(packet), self._length_size, self._codec.is_sps))
        else:
            self._read(_annex_b_units(bytes(packet), self._codec.is_sps))

    @property
    def found(self) -> list[PictureBuffer]:
        return [found for found in self._seen.values() if found is not None]

    def check(self) -> None:
        """Raise, naming the numbers, if a parameter set gives frames larger than the service analyses
        (AbsurdDimensions), or asks for more pictures than the service decodes at their size
        (OversizedPictureBuffer, the one over by the most)."""
        found = self.found
        for sps in found:
            # Only frames larger than the bounds matter here: smaller ones cost nothing, and are scaled to the
            # header's size like any other size change.
            check_frame_size(*sps.display_size, where=f"inside the {sps.codec} stream (its sequence parameter sets), ",
                             smallest=1)
        over = [p for p in found if p.too_large]
        if over:
            raise OversizedPictureBuffer(max(over, key=lambda p: p.pictures - p.allowed).describe())

    def _read(self, units: Iterable[bytes]) -> None:
        assert self._codec is not None
        for unit in units:
            if unit in self._seen or not unit or not self._codec.is_sps(unit[0]):
                continue
            if len(self._seen) >= PARAMETER_SETS_MAX:
                raise NotAVideo(f"the {self._codec.name} stream carries more than {PARAMETER_SETS_MAX} different "
                                "sequence parameter sets")
            try:
                self._seen[unit] = self._codec.sps(unit)
            except (ReadError, ValueError):
                self._seen[unit] = None


_VP9_SYNC_CODE = 0x498342
_VP9_HEADER_BYTES = 16  # the fields read here come first in a frame: at most 12 bytes of it


class _Bits:
    """Big-endian bit fields from the start of a short byte string (a VP9 frame's uncompressed header is
    read for every frame of the stream: bitstring's reader took 340 us a frame, this one about 10)."""

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._left = 8 * len(data)

    def read(self, bits: int) -> int:
        if bits > self._left:
            raise ValueError("the header ends early")
        self._left -= bits
        return (self._value >> self._left) & ((1 << bits) - 1)


_VP9_SLOTS = 8
_VP9_CS_RGB = 7


@dataclass(frozen=True)
class _Vp9Format:
    bit_depth: int = 8
    chroma_format: int = 1  # as H.264's chroma_format_idc: 1 4:2:0, 2 4:2:2 (or 4:4:0), 3 4:4:4


class Vp9References:
    """The reference frames a VP9 stream makes its decoder keep, read from each frame's uncompressed header
    (VP9 bitstream specification, section 6.2) as its packets are given to ``add``, in decoding order.

    A VP9 decoder holds 8 reference slots, and each frame says which of them it refreshes with itself
    (``refresh_frame_flags``); frames of different sizes and formats may sit side by side. Encoders keep
    three different frames (last, golden, alternate): a keyframe fills every slot with itself. A stream
    that refreshes a different slot with every frame makes the decoder keep 8 different frames: at 7680x4320
    in 4:4:4 that is 760 MiB, and a job analysing every frame of it peaked at 3.3 GiB, over a worker's
    3 GiB, where the same frames encoded as libvpx does peaked at 2.5 GiB. The frames held at once are held
    to ``REFERENCE_BYTES_MAX``, as H.264 and HEVC's are, and each frame's size to the frame-size bounds.
    A header that cannot be read is left to the decoder, which refuses it too."""

    def __init__(self) -> None:
        self._slots: list[tuple[int, PictureBuffer] | None] = [None] * _VP9_SLOTS  # (frame number, picture)
        self._format = _Vp9Format()
        self._too_large: tuple[int, int] | None = None
        self.frames = 0  # frames decoded (a superframe holds several; one that shows a kept frame is none)
        self.most_held = 0  # the most bytes of reference frames held at once
        self.most_held_pictures: list[PictureBuffer] = []  # and the frames then held

    def add(self, packet: "av.Packet") -> None:
        if not packet.size:
            return
        for frame in _vp9_superframe(bytes(packet)):
            try:
                self._frame(_Bits(frame[:_VP9_HEADER_BYTES]))
            except ValueError:
                continue

    def check(self) -> None:
        """AbsurdDimensions if a frame is larger than the service analyses; OversizedPictureBuffer if the
        frames the decoder holds at once ever took more than REFERENCE_BYTES_MAX."""
        if self._too_large is not None:
            check_frame_size(*self._too_large, where="inside the VP9 stream (its frame headers), ", smallest=1)
        held, pictures = self.most_held, self.most_held_pictures
        if held > REFERENCE_BYTES_MAX:
            largest = max(pictures, key=lambda p: p.picture_bytes)
            raise OversizedPictureBuffer(
                f"the VP9 stream makes its decoder keep {len(pictures)} different reference frames at once, up to "
                f"{largest.width}x{largest.height} {largest.form} ({held / 2**20:.0f} MiB); the service keeps at most "
                f"{REFERENCE_BYTES_MAX / 2**20:.0f} MiB of them: re-encode it with fewer reference frames "
                "(libvpx keeps 3), smaller frames or in 8-bit 4:2:0")

    def _frame(self, s: _Bits) -> None:
        _valid(s.read(2) == 2, "frame marker")
        profile = s.read(1) | (s.read(1) << 1)
        if profile == 3:
            _valid(not s.read(1), "reserved bit")
        if s.read(1):  # show_existing_frame: shows a slot, keeps nothing new
            return
        keyframe = s.read(1) == 0
        shown = s.read(1) == 1
        error_resilient = s.read(1) == 1
        if keyframe:
            _valid(s.read(24) == _VP9_SYNC_CODE, "sync code")
            self._format = _vp9_color_config(s, profile)
            refresh = (1 << _VP9_SLOTS) - 1
            width, height = s.read(16) + 1, s.read(16) + 1
        else:
            intra_only = not shown and s.read(1) == 1
            if not error_resilient:
                s.read(2)  # reset_frame_context
            if intra_only:
                _valid(s.read(24) == _VP9_SYNC_CODE, "sync code")
                self._format = _vp9_color_config(s, profile) if profile > 0 else _Vp9Format()
                refresh = s.read(8)
                width, height = s.read(16) + 1, s.read(16) + 1
            else:
                refresh = s.read(8)
                references = []
                for _ in range(3):
                    references.append(s.read(3))
                    s.read(1)  # ref_frame_sign_bias
                for slot in references:
                    if s.read(1):  # found_ref: the size of that reference
                        held = self._slots[slot]
                        if held is None:
                            raise ValueError("a size from an empty slot")  # the decoder refuses the frame
                        width, height = held[1].width, held[1].height
                        break
                else:
                    width, height = s.read(16) + 1, s.read(16) + 1
        self._keep(refresh, PictureBuffer("VP9", 1, width, height, self._format.chroma_format,
                                          self._format.bit_depth))

    def _keep(self, refresh: int, picture: PictureBuffer) -> None:
        try:
            check_frame_size(picture.width, picture.height, smallest=1)
        except AbsurdDimensions:
            self._too_large = self._too_large or (picture.width, picture.height)
        self.frames += 1
        for slot in range(_VP9_SLOTS):
            if refresh >> slot & 1:
                self._slots[slot] = (self.frames, picture)
        held = {number: kept for number, kept in filter(None, self._slots)}
        total = sum(kept.picture_bytes for kept in held.values())
        if total > self.most_held:
            self.most_held, self.most_held_pictures = total, list(held.values())


def _vp9_color_config(s: _Bits, profile: int) -> _Vp9Format:
    """color_config(): the bit depth and chroma subsampling of the frames that follow."""
    bit_depth = (12 if s.read(1) else 10) if profile >= 2 else 8
    color_space = s.read(3)
    if color_space == _VP9_CS_RGB:
        subsampling = (0, 0)
        if profile in (1, 3):
            s.read(1)  # reserved_zero
    else:
        s.read(1)  # color_range
        subsampling = (1, 1)
        if profile in (1, 3):
            subsampling = (s.read(1), s.read(1))
            s.read(1)  # reserved_zero
    chroma = {(1, 1): 1, (1, 0): 2, (0, 1): 2}.get(subsampling, 3)
    return _Vp9Format(bit_depth, chroma)


def _vp9_superframe(data: bytes) -> list[bytes]:
    """The frames of a VP9 packet: several after one another with an index at the end (a superframe,
    Annex B of the specification), or one."""
    marker = data[-1]
    if marker & 0xE0 == 0xC0:
        size_bytes, count = ((marker >> 3) & 3) + 1, (marker & 7) + 1
        index = 2 + size_bytes * count
        if len(data) >= index and data[-index] == marker:
            frames, at = [], 0
            for k in range(count):
                begin = len(data) - index + 1 + k * size_bytes
                size = int.from_bytes(data[begin:begin + size_bytes], "little")
                frames.append(data[at:at + size])
                at += size
            return [frame for frame in frames if frame]
    return [data]


class StreamCheck(Protocol):
    """What a stream makes its decoder keep, read as its packets pass (in decoding order)."""

    def add(self, packet: "av.Packet") -> None: ...

    def check(self) -> None:
        """Raise a BadVideo naming the numbers if it is more than the service decodes."""


def stream_check(stream: "av.VideoStream") -> StreamCheck:
    """H.264 / HEVC: their sequence parameter sets; VP9: its frame headers; other codecs: nothing to read."""
    if stream.codec_context.name == "vp9":
        return Vp9References()
    return ParameterSets.of(stream)


def parameter_sets(path: Path) -> list[PictureBuffer]:
    """Every distinct H.264 / HEVC parameter set of the file's first video stream (``ParameterSets``)."""
    found = _scan(path)
    return found.found if isinstance(found, ParameterSets) else []


def _scan(path: Path) -> StreamCheck:
    """The file's first video stream read through its ``stream_check``, every packet: one demux pass, nothing
    decoded (`FrameReader` does this in the pass that also makes its seek index)."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            return ParameterSets()
        stream = container.streams.video[0]
        found = stream_check(stream)
        for packet in container.demux(stream):
            found.add(packet)
    return found


# What a decoder may allocate for one frame (libavcodec's ``max_pixels``): the frames the service analyses,
# and the padding FFmpeg adds to each row (up to 64 samples), so that a 4320x8192 portrait frame passes.
DECODER_PIXELS_MAX = FRAME_PIXELS_MAX + 64 * FRAME_SIDE_MAX


def check_frame_size(width: int, height: int, where: str = "", smallest: int = FRAME_SIDE_MIN) -> None:
    """AbsurdDimensions unless frames of `width` x `height` are within what the service analyses (sides
    of at least `smallest`); `where` begins the message."""
    if not (smallest <= width <= FRAME_SIDE_MAX and smallest <= height <= FRAME_SIDE_MAX):
        raise AbsurdDimensions(
            f"{where}the frame size {width}x{height} is outside {smallest}..{FRAME_SIDE_MAX} pixels per side")
    if width * height > FRAME_PIXELS_MAX:
        raise AbsurdDimensions(
            f"{where}the frame size {width}x{height} ({width * height / 1e6:.1f} megapixels) is over "
            f"the {FRAME_PIXELS_MAX / 1e6:.1f} megapixels of 8192x4320 (DCI 8K) the service analyses"
        )


def check(path: Path) -> None:
    """The file's ``stream_check``, over every packet."""
    _scan(path).check()
