"""Reading the frames VideoTGB needs from a video file with PyAV, and nothing more.

The model looks at two evenly spaced subsets of a video (docs/method.md describes them): ``N_c`` candidate frames
(32, bin midpoints) and at most ``L`` optical-flow steps (64). The original code decoded every frame and converted
each to RGB before keeping 32; here only the needed frames are decoded and only the kept ones converted, and nothing
proportional to the video's length is held in memory apart from a compact packet index (two 64-bit integers per
frame).

How a read works:

1. **Open and check.** ``source`` (a path, bytes or a binary file object) is opened with PyAV. Inputs that are not
   videos are rejected with a :class:`VideoDecodeError` naming the input and the reason: missing or empty files,
   data FFmpeg cannot parse (truncated, corrupt, not a media file), audio-only files, files whose only picture is
   cover art (``attached_pic``), text files (FFmpeg opens them as ANSI art), still images, codecs this FFmpeg build
   cannot decode, streams where no frame decodes, and videos beyond ``max_pixels`` or ``max_duration_s``.
2. **Index.** Each frame's presentation timestamp and the keyframes are recorded, from the sample tables of an
   MP4/MOV file (0.02 s for 10 minutes at 30 fps, 0.08 s for an hour; checked against the packets demuxed up to the
   first frame) or else by demuxing every packet *without decoding* (0.07 s and 0.4 s). Frame ``i`` is the
   ``i``-th frame in presentation order, the ``i``-th frame a plain full decode outputs. Packets a decoder never
   outputs are left out: those flagged for discarding (outside an MP4 edit list) and, in a stream that starts in the
   middle of a keyframe group (a cut MPEG-TS segment), those before the first keyframe. The first frame is decoded
   on the way, which proves that the stream decodes and gives its rotation and pixel format.
3. **Decode.** Each requested frame is reached either by seeking to the keyframe before it and decoding forward
   (frames matched by timestamp) or by decoding on from the current position (see :func:`read_frames`); only the
   requested frames are converted to RGB, the expensive step of a full pass. Reads that seek share their seek groups
   among several threads, each with its own decoder (``threads``). Decoded frames are checked against the
   index as they come; at any disagreement (a seek that lands after or off its keyframe, a dropped frame, a
   timestamp the index does not know) the read restarts as one sequential pass from the start, which still places
   frames by their timestamps, and counts frames only if the timestamps themselves disagree with the index.

   In a damaged file some frames do not decode. They keep their places: every other frame keeps its index (and
   timestamp), whichever strategy reads it, and reading a frame that does not decode raises
   :class:`VideoDecodeError` with every strategy. :func:`read_video` then samples again among the frames that do
   decode, with their own timestamps. (Without usable timestamps, e.g. raw streams, frames can only be counted: the
   lost frames then shift the ones after them, for every strategy alike.)

Frames come out as RGB ``uint8`` arrays turned upright according to the stream's display matrix (rotation), at the
stored resolution unless ``size`` asks PyAV's scaler for another. Sample aspect ratio is *not* applied (the model
squashes frames to a square anyway), and display-matrix flips are ignored.

PyAV is imported inside the functions only, so that this module can travel with a checkpoint's remote code and be
imported on machines without PyAV.
"""

from __future__ import annotations

import concurrent.futures
import io
import mmap
import os
import struct
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Literal

import numpy as np
from transformers.utils import logging

from .keyframes import _check_count, _check_indices, bin_midpoints

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.packet import Packet
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

logger = logging.get_logger(__name__)

__all__ = [
    "DEFAULT_MAX_DURATION_S",
    "DEFAULT_MAX_PIXELS",
    "VideoClip",
    "VideoDecodeError",
    "VideoMetadata",
    "VideoSource",
    "probe_video",
    "read_frames",
    "read_video",
    "flow_pair_ends",
    "sample_candidate_indices",
    "sample_flow_indices",
]

VideoSource = str | os.PathLike | bytes | bytearray | memoryview | IO[bytes]
"""A path, the file's bytes, or a binary file object (read from its start; FFmpeg seeks in it by absolute offsets).
A file object that cannot seek is read into memory from its current position."""

Strategy = Literal["auto", "seek", "sequential"]
Alignment = Literal["exact", "keyframe"]

DEFAULT_MAX_DURATION_S = 4 * 3600.0
# The largest standard resolution, DCI 8K (8192x4320, 35.4 megapixels), which also admits 8K UHD (7680x4320) and the
# portrait versions of both. Larger frames are refused as absurd (one decoded 8K frame already takes 100 MiB as RGB;
# pass ``size`` to get small frames).
DEFAULT_MAX_PIXELS = 8192 * 4320

# "auto" seeks to a target's keyframe only when that skips decoding more than this many frames: the price of one seek
# (demuxer seek, decoder flush, refilling the decoder's reorder delay) in frame decodes, measured on 360p H.264.
_SEEK_COST_FRAMES = 8
# A packet's presentation rank may differ from its decode position by the decoder's reorder depth (B-frames). A
# larger difference means timestamps that jump (concatenated streams, wrap-around) and cannot index frames.
_MAX_REORDER = 64
# Most decoding threads ``threads=None`` picks (each opens the file and runs its own decoder): two threads read the
# 160 exact frames of a 10-minute video 1.3x faster on two cores; beyond four, decoders' memory grows for little gain.
_MAX_AUTO_THREADS = 4
# FFmpeg's AVIndexEntry flags (libavformat/avformat.h).
_AVINDEX_KEYFRAME = 0x1
_AVINDEX_DISCARD_FRAME = 0x2
# Output arrays at least this large are mapped with all their pages up front (see _frame_buffer).
_POPULATE_MIN_BYTES = 4 << 20
# Demuxers whose headers give trustworthy frame counts (``probe_video`` skips the packet scan for them).
_TRUSTED_FRAME_COUNT_FORMATS = ("mov", "mp4")
# Demuxers whose seeking is unreliable (MPEG-TS may return nothing, MPEG-PS may land past the target).
_UNRELIABLE_SEEK_FORMATS = ("mpegts", "mpeg", "mpegvideo", "vob")
# Demuxers that open text files (ANSI art) and still images as a "video".
_TEXT_FORMATS = ("tty", "bin", "xbin", "adf", "idf")
_IMAGE_FORMATS = ("image2",)


class VideoDecodeError(ValueError):
    """A video cannot be read. The message names the input (a path, ``<bytes>`` or ``<file object>``) and why."""


@dataclass(frozen=True)
class VideoMetadata:
    """What a video holds, as it will be read.

    Attributes:
        num_frames: number of frames. :func:`probe_video` takes it from the MP4/MOV sample table when that is
            non-zero and lies entirely inside the file (not truncated), less the samples the edit list leaves out;
            otherwise, and always in :func:`read_frames` /
            :func:`read_video`, it is the number of non-empty video packets not flagged for discarding, less a last
            packet flagged corrupt (cut short by truncation), counted by demuxing without decoding (one packet holds
            one frame). Headers of other containers can overstate (AVI)
            or be 0 (Matroska, WebM, MPEG-TS, fragmented MP4, raw streams). Packets before the first keyframe of a
            stream cut inside a keyframe group are left out, as the decoder outputs nothing for them. A damaged
            stream can still decode fewer frames than it has packets: :func:`read_video` then samples again from the
            frames that decode.
        fps: average frame rate, ``(num_frames - 1) / (last timestamp - first timestamp)`` when timestamps were
            indexed (right for variable frame rate), else the stream's average rate, or for streams whose packets carry
            no timestamps (raw ``.h264``) the rate the codec states, since the demuxer's is a placeholder.
        duration_s: ``num_frames / fps`` (the last frame lasts one average frame interval).
        width: width of the frames as displayed, i.e. after rotation.
        height: height of the frames as displayed, i.e. after rotation.
        rotation: clockwise rotation in degrees (0, 90, 180 or 270) applied to the stored pixels to display them
            upright, from the stream's display matrix (the ``rotate`` tag of phone videos).
        codec: decoder name (``h264``, ``hevc``, ``vp9``, ...).
        pix_fmt: pixel format of the decoded frames (``yuv420p``, ``yuv420p10le``, ...).
    """

    num_frames: int
    fps: float
    duration_s: float
    width: int
    height: int
    rotation: int
    codec: str
    pix_fmt: str


@dataclass
class VideoClip:
    """The frames VideoTGB reads from one video (:func:`read_video`).

    Attributes:
        metadata: the video's :class:`VideoMetadata` (``None`` for a clip made from frames decoded elsewhere).
        candidate_indices: `(N_c,)` frame indices of the candidate frames (:func:`sample_candidate_indices`).
        candidate_frames: `(N_c, H, W, 3)` uint8 RGB candidate frames.
        candidate_timestamps: `(N_c,)` float64 presentation times in seconds, counted from the first frame.
        flow_indices: `(L,)` first frames of the optical-flow steps (:func:`sample_flow_indices`).
        flow_frames: `(L, H, W, 3)` uint8 RGB first frames of the flow steps.
        flow_next_frames: `(L, H, W, 3)` uint8 RGB second frames (:func:`flow_pair_ends`): step ``k`` is the motion
            from ``flow_frames[k]`` to ``flow_next_frames[k]``.
        flow_timestamps: `(L,)` float64 presentation times in seconds of the first frames, counted from the first frame.
        alignment: how the frames were placed: ``"exact"`` (bin midpoints, :func:`sample_candidate_indices` and
            :func:`sample_flow_indices`) or ``"keyframe"`` (each moved to a keyframe, :func:`snap_to_keyframes`).
        alignment_shift_s: with ``"keyframe"``, the largest distance in seconds between a frame read and the exact
            place it stands for (candidates and flow steps); 0 for exact reading.
        alignment_note: why keyframe-aligned reading was asked for but exact reading was used (``None`` otherwise).

    The frame arrays are views of one array: a frame in several sets is decoded once.
    """

    metadata: VideoMetadata | None
    candidate_indices: list[int]
    candidate_frames: np.ndarray
    candidate_timestamps: np.ndarray
    flow_indices: list[int]
    flow_frames: np.ndarray
    flow_next_frames: np.ndarray
    flow_timestamps: np.ndarray
    alignment: str = "exact"
    alignment_shift_s: float = 0.0
    alignment_note: str | None = None


def sample_candidate_indices(num_frames: int, num_candidates: int = 32) -> list[int]:
    """Indices of the ``num_candidates`` candidate frames: the bin-midpoint rule of the original.

    ``[0, num_frames)`` is cut into ``num_candidates`` bins with integer edges ``floor(linspace(0, T, N_c + 1))``
    and each bin ``[a, b)`` gives ``(a + b - 1) // 2`` (:func:`videotgb.keyframes.bin_midpoints`). Videos shorter
    than ``num_candidates`` frames repeat indices, so there are always exactly ``num_candidates``.

    Examples:
        >>> sample_candidate_indices(320, 4)
        [39, 119, 199, 279]
        >>> sample_candidate_indices(3, 4)
        [0, 0, 1, 2]
        >>> sample_candidate_indices(1)[:3]
        [0, 0, 0]
    """
    _check_count("num_frames", num_frames)
    _check_count("num_candidates", num_candidates)
    return bin_midpoints(num_frames, num_candidates)


def sample_flow_indices(num_frames: int, max_steps: int = 64) -> list[int]:
    """First frames of the optical-flow steps: step ``k`` is the motion from frame ``f_k`` to frame ``f_k + 1``.

    As in the original, flow is the motion between *consecutive video frames* at evenly spaced places, not between
    the sampled frames (seconds apart in a long video, far beyond what flow estimators follow). The places are
    ``bin_midpoints(num_frames, min(num_frames, max_steps))`` (every frame when there are at most ``max_steps``),
    each clamped to ``num_frames - 2``, the last frame that starts a pair: so the last flow is repeated, as the
    original repeated its last flow to have one per frame. A one-frame video has the single step ``0`` (paired with
    itself: zero flow). See :func:`flow_pair_ends` for the second frames.

    Examples:
        >>> sample_flow_indices(5)
        [0, 1, 2, 3, 3]
        >>> sample_flow_indices(1000, 4)
        [124, 374, 624, 874]
        >>> sample_flow_indices(10, 4)
        [0, 3, 5, 8]
        >>> sample_flow_indices(1)
        [0]
    """
    _check_count("num_frames", num_frames)
    _check_count("max_steps", max_steps)
    last_start = max(num_frames - 2, 0)
    return [min(index, last_start) for index in bin_midpoints(num_frames, min(num_frames, max_steps))]


def flow_pair_ends(flow_indices: Sequence[int], num_frames: int) -> list[int]:
    """Second frame of each flow step: ``f + 1``, or ``f`` itself in a one-frame video.

    Examples:
        >>> flow_pair_ends([0, 1, 2, 3, 3], 5)
        [1, 2, 3, 4, 4]
        >>> flow_pair_ends([0], 1)
        [0]
    """
    _check_count("num_frames", num_frames)
    _check_indices("flow_indices", flow_indices, num_frames)
    return [min(index + 1, num_frames - 1) for index in flow_indices]


def snap_to_keyframes(targets: Sequence[int], keyframes: Sequence[int]) -> list[int]:
    """Move each of the increasing frame indices `targets` to a keyframe, keeping them distinct and in order.

    Target ``i`` goes to the keyframe nearest to it, unless that would put it on or before target ``i - 1``'s
    keyframe, or leave too few keyframes for the targets after it: its keyframe's position ``j_i`` in `keyframes` is
    ``clamp(nearest, j_{i-1} + 1, len(keyframes) - len(targets) + i)``.

    Args:
        targets: increasing frame indices (the exact places).
        keyframes: increasing frame indices of keyframes, at least as many as `targets`.

    Examples:
        >>> snap_to_keyframes([10, 40, 70], [0, 30, 60, 90])
        [0, 30, 60]
        >>> snap_to_keyframes([10, 12, 14], [0, 30, 60, 90])  # distinct: the later ones move on
        [0, 30, 60]
        >>> snap_to_keyframes([80, 85], [0, 30, 60, 90])  # room kept for the last one
        [60, 90]
    """
    keys = np.asarray(keyframes, dtype=np.int64)
    if len(keys) < len(targets):
        raise ValueError(f"{len(targets)} targets need at least as many keyframes, got {len(keys)}")
    snapped: list[int] = []
    previous = -1
    for i, target in enumerate(targets):
        after = int(np.searchsorted(keys, target))
        nearest = (
            after
            if after == 0 or (after < len(keys) and keys[after] - target < target - keys[after - 1])
            else after - 1
        )
        position = min(max(nearest, previous + 1), len(keys) - len(targets) + i)
        snapped.append(int(keys[position]))
        previous = position
    return snapped


def probe_video(
    source: VideoSource,
    *,
    max_duration_s: float | None = DEFAULT_MAX_DURATION_S,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> VideoMetadata:
    """Describe a video without decoding more than its first frame.

    The frame count comes from the header for MP4/MOV files that state one, and from a packet scan (no decoding)
    otherwise; see :attr:`VideoMetadata.num_frames`.

    Args:
        source: path, bytes or binary file object.
        max_duration_s: longest accepted video in seconds (``None``: no limit).
        max_pixels: largest accepted ``width * height`` (``None``: no limit).

    Raises:
        VideoDecodeError: the input is not a readable video, or is beyond the limits.
    """
    return _open_and_index(source, max_duration_s, max_pixels, header_count=True)[2]


def read_frames(
    source: VideoSource,
    indices: Sequence[int],
    *,
    strategy: Strategy = "auto",
    size: tuple[int, int] | None = None,
    max_duration_s: float | None = DEFAULT_MAX_DURATION_S,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    threads: int | None = None,
) -> np.ndarray:
    """Decode the frames at ``indices`` (presentation order, duplicates allowed) as upright RGB.

    Strategies (all return identical pixels, or raise the same error for a frame of a damaged file that does not
    decode):

    - ``"seek"``: for each target, in increasing order, seek to the last keyframe before it
      (``container.seek(pts, stream=s, backward=True)``) and decode forward, matching frames to indices by timestamp;
      a target whose keyframe the decoder has already passed is reached by decoding on, without a seek.
    - ``"sequential"``: one pass from the start that counts decoded frames, up to the last target.
    - ``"auto"``: like ``"seek"``, but seek only when that skips decoding more than ``_SEEK_COST_FRAMES`` (8) frames
      beyond the current position, i.e. when the next target lies in a later keyframe group and far enough ahead.
      Targets far apart relative to the keyframe interval are reached by seeking; targets denser than the keyframe
      interval (e.g. 96 frames in a 1-minute clip with x264's 250-frame GOP) make it one sequential pass.
      MPEG-TS/PS inputs (unreliable seeking) and streams with missing, duplicate or jumping timestamps always read
      sequentially, whatever the strategy.

    Only the requested frames are converted to RGB; memory holds the output plus the decoder's own buffers.

    When a read seeks more than once, its seek groups (a seek and the targets reached by decoding on from there) are
    shared among ``threads`` threads, each with its own decoder: the same frames, sooner on several cores. A file
    object is read by one thread (it cannot be opened twice at once); paths and bytes by several.

    Args:
        source: path, bytes or binary file object.
        indices: frame indices in ``[0, num_frames)``, in any order, repeats allowed.
        strategy: ``"auto"``, ``"seek"`` or ``"sequential"``.
        size: ``(height, width)`` of the returned frames (after rotation), scaled bilinearly by PyAV's reformat;
            ``None`` keeps the stored resolution.
        max_duration_s: longest accepted video in seconds (``None``: no limit).
        max_pixels: largest accepted ``width * height`` (``None``: no limit).
        threads: decoding threads for seeking reads; ``None``: as many as PyTorch's intra-op threads
            (``torch.get_num_threads()``, which PyTorch sets to 1 in DataLoader workers) or, if PyTorch is not
            imported, the CPUs this process may use; at most 4.

    Returns:
        `(len(indices), H, W, 3)` uint8 RGB array, frame ``k`` being video frame ``indices[k]``.

    Raises:
        VideoDecodeError: the input is not a readable video, is beyond the limits, or ends before a requested frame.
        IndexError: an index is outside ``[0, num_frames)`` (``num_frames`` as :func:`probe_video` reports it).
    """
    _check_arguments(strategy, size, threads)
    opened, scan, metadata = _open_and_index(source, max_duration_s, max_pixels)
    indices = [int(index) for index in indices]
    for index in indices:
        if not 0 <= index < metadata.num_frames:
            raise IndexError(f"{opened.name}: frame index {index} is out of range for {metadata.num_frames} frames")
    return _Reader(opened, scan, size, _decoding_threads(threads)).read(indices, strategy)


def read_video(
    source: VideoSource,
    num_candidates: int = 32,
    max_flow_steps: int = 64,
    *,
    strategy: Strategy = "auto",
    size: tuple[int, int] | None = None,
    max_duration_s: float | None = DEFAULT_MAX_DURATION_S,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    alignment: Alignment = "exact",
    threads: int | None = None,
) -> VideoClip:
    """Read a video's candidate frames and optical-flow frames in one decoding plan.

    The candidate indices (:func:`sample_candidate_indices`) and flow indices (:func:`sample_flow_indices`) are read
    together by :func:`read_frames`'s machinery, so a frame in both sets is decoded once and the video is traversed
    once. If some of those frames turn out not to decode (a damaged or truncated file), the stream is decoded to its
    end to find the frames that do, the indices are drawn again among those, and the timestamps are those of the
    frames used.

    With ``alignment="keyframe"`` each candidate frame and each flow step is moved to a keyframe
    (:func:`snap_to_keyframes`; a flow step then compares the keyframe with the frame after it), so that each frame
    read is at most a keyframe plus a few frames of decoding after a seek: the cost follows the number of frames
    read, not the keyframe interval. The timestamps returned are those of the frames read, and
    :attr:`VideoClip.alignment_shift_s` says how far they moved. Exact reading is used instead, and
    :attr:`VideoClip.alignment_note` says why, when the keyframes are fewer than the candidates or the flow steps,
    when the video's timestamps cannot index its keyframes, or when its container cannot seek reliably (MPEG-TS/PS).

    Args:
        source: path, bytes or binary file object.
        num_candidates: number of candidate frames ``N_c``.
        max_flow_steps: most optical-flow steps ``L`` (fewer for videos shorter than that).
        strategy, size, max_duration_s, max_pixels, threads: as in :func:`read_frames`.
        alignment: ``"exact"`` (bin midpoints) or ``"keyframe"`` (moved to keyframes, see above).

    Returns:
        A :class:`VideoClip` with `(N_c, H, W, 3)` candidate frames and `(L, H, W, 3)` flow frames.

    Raises:
        VideoDecodeError: the input is not a readable video or is beyond the limits.
    """
    _check_arguments(strategy, size, threads)
    if alignment not in ("exact", "keyframe"):
        raise ValueError(f"alignment must be 'exact' or 'keyframe', got {alignment!r}")
    opened, scan, metadata = _open_and_index(source, max_duration_s, max_pixels)
    reader = _Reader(opened, scan, size, _decoding_threads(threads))
    shift, note = 0.0, None
    for attempt in (1, 2):
        candidates = sample_candidate_indices(metadata.num_frames, num_candidates)
        flows = sample_flow_indices(metadata.num_frames, max_flow_steps)
        if alignment == "keyframe":
            if attempt == 1:
                aligned = _keyframe_aligned(scan, metadata, candidates, flows)
            else:
                aligned = "some frames do not decode; the frames that do were read exactly"
            if isinstance(aligned, str):
                note = aligned
                logger.info(f"{opened.name}: exact reading instead of keyframe-aligned: {note}")
            else:
                candidates, flows, shift = aligned
        ends = flow_pair_ends(flows, metadata.num_frames)
        try:
            frames = reader.read(candidates + flows + ends, strategy, census=attempt == 1)
            break
        except _FramesLostError as lost:
            # The sequential pass that found lost frames went on to the end: sample again among the frames that decode.
            if not len(lost.decoded):
                raise VideoDecodeError(f"{opened.name}: no frame decodes on a second reading") from None
            logger.warning(
                f"{opened.name}: only {len(lost.decoded)} of the {metadata.num_frames} indexed frames decode; "
                "sampling frames again from those"
            )
            scan.keep(lost.decoded)
            metadata = scan.metadata()
            strategy = "sequential"
    return VideoClip(
        metadata=metadata,
        candidate_indices=candidates,
        candidate_frames=frames[: len(candidates)],
        candidate_timestamps=scan.timestamps(candidates, metadata.fps),
        flow_indices=flows,
        flow_frames=frames[len(candidates) : len(candidates) + len(flows)],
        flow_next_frames=frames[len(candidates) + len(flows) :],
        flow_timestamps=scan.timestamps(flows, metadata.fps),
        alignment="keyframe" if alignment == "keyframe" and note is None else "exact",
        alignment_shift_s=shift if note is None else 0.0,
        alignment_note=note,
    )


def _keyframe_aligned(
    scan: _Scan, metadata: VideoMetadata, candidates: list[int], flows: list[int]
) -> tuple[list[int], list[int], float] | str:
    """The candidates and flow steps moved to keyframes, with the largest shift in seconds; or why they cannot be."""
    if not scan.trusted:
        return "the video's timestamps cannot index its keyframes"
    if not scan.seek_reliable:
        return "seeking is unreliable in this container"
    keyframes = scan.keyframe_indices()
    if len(keyframes) == metadata.num_frames:
        return "every frame is a keyframe, so exact reading costs the same"
    starts = keyframes[keyframes <= metadata.num_frames - 2]  # a flow step needs the frame after it
    if len(keyframes) < len(candidates) or len(starts) < len(flows):
        return (
            f"{len(keyframes)} keyframes are too few for {len(candidates)} candidate frames and {len(flows)} flow "
            "steps at distinct keyframes"
        )
    moved_candidates = snap_to_keyframes(candidates, keyframes)
    moved_flows = snap_to_keyframes(flows, starts)
    shift = max(
        float(np.max(np.abs(scan.timestamps(moved, metadata.fps) - scan.timestamps(exact, metadata.fps))))
        for moved, exact in ((moved_candidates, candidates), (moved_flows, flows))
    )
    return moved_candidates, moved_flows, shift


def _check_arguments(strategy: str, size: tuple[int, int] | None, threads: int | None) -> None:
    if strategy not in ("auto", "seek", "sequential"):
        raise ValueError(f"strategy must be 'auto', 'seek' or 'sequential', got {strategy!r}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"size must be two positive integers (height, width), got {size}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")


def _decoding_threads(threads: int | None) -> int:
    """``threads``, or for ``None`` PyTorch's intra-op thread count (1 in a DataLoader worker) if PyTorch is imported,
    else the CPUs this process may use; at most ``_MAX_AUTO_THREADS``."""
    if threads is not None:
        return threads
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        available = torch.get_num_threads()
    elif hasattr(os, "sched_getaffinity"):
        available = len(os.sched_getaffinity(0))
    else:
        available = os.cpu_count() or 1
    return max(1, min(available, _MAX_AUTO_THREADS))


def _open_and_index(
    source: VideoSource,
    max_duration_s: float | None,
    max_pixels: int | None,
    header_count: bool = False,
) -> tuple[_Source, _Scan, VideoMetadata]:
    """Resolve and check ``source``, decode its first frame and index its packets (``header_count``: skip the
    packet scan when the MP4/MOV header's frame count can be trusted)."""
    opened = _Source.resolve(source)
    with opened.open() as container:
        stream = _video_stream(container, opened.name)
        _check_header_limits(stream, container, opened.name, max_duration_s, max_pixels)
        header_frames = _trusted_header_frame_count(container, stream) if header_count else None
        scan = _scan(container, stream, opened, count_packets=header_frames is None)
    metadata = scan.metadata(header_frames)
    _check_limits(metadata, opened.name, max_duration_s, max_pixels)
    return opened, scan, metadata


class _FramesLostError(Exception):
    """Requested frames do not decode (``reason`` says which); ``decoded`` lists the frames that do when the stream
    was decoded to its end (``None`` otherwise)."""

    def __init__(self, reason: str, decoded: np.ndarray | None):
        super().__init__(reason)
        self.reason = reason
        self.decoded = decoded


class _IndexMismatchError(Exception):
    """Decoded frames disagree with the packet index; the read restarts sequentially."""


# --------------------------------------------------------------------------------------------------------------------
# Opening


class _Source:
    """A resolved ``source`` that can be opened several times, and its name for messages.

    Paths and bytes can be open several times at once (:attr:`concurrent`); a caller's file object only once.
    """

    def __init__(
        self, name: str, path: str | None = None, fileobj: IO[bytes] | None = None, data: bytes | None = None
    ):
        self.name = name
        self.path = path
        self.fileobj = fileobj
        self.data = data

    @property
    def concurrent(self) -> bool:
        return self.fileobj is None

    @classmethod
    def resolve(cls, source: VideoSource) -> _Source:
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            if not data:
                raise VideoDecodeError("<bytes>: the input is empty (0 bytes)")
            return cls("<bytes>", data=data)
        if isinstance(source, (str, os.PathLike)):
            path = os.fspath(source)
            if not os.path.exists(path):
                raise VideoDecodeError(f"{path}: no such file")
            if os.path.isdir(path):
                raise VideoDecodeError(f"{path}: is a directory, not a video file")
            if os.path.getsize(path) == 0:
                raise VideoDecodeError(f"{path}: the file is empty (0 bytes)")
            return cls(path, path=path)
        if hasattr(source, "read"):
            name = "<file object>"
            if not (hasattr(source, "seekable") and source.seekable()):
                logger.debug(f"{name}: not seekable, reading it into memory")
                data = source.read()
                if isinstance(data, str):
                    raise VideoDecodeError(f"{name}: opened in text mode; open the file in binary mode ('rb')")
                if not data:
                    raise VideoDecodeError(f"{name}: the input is empty (0 bytes)")
                return cls(name, data=data)
            source.seek(0)
            head = source.read(1)
            if isinstance(head, str):
                raise VideoDecodeError(f"{name}: opened in text mode; open the file in binary mode ('rb')")
            if not head:
                raise VideoDecodeError(f"{name}: the input is empty (0 bytes)")
            return cls(name, fileobj=source)
        raise TypeError(f"source must be a path, bytes or a binary file object, got {type(source).__name__}")

    def open(self) -> InputContainer:
        import av

        if self.fileobj is not None:
            self.fileobj.seek(0)
        if self.path is not None:
            target: str | IO[bytes] = self.path
        elif self.data is not None:
            target = io.BytesIO(self.data)
        else:
            target = self.fileobj
        try:
            return av.open(target, mode="r", metadata_errors="ignore")
        except av.FFmpegError as error:
            raise VideoDecodeError(
                f"{self.name}: cannot be opened as a media file; it is truncated, corrupt or not a video "
                f"(FFmpeg: {error.strerror})"
            ) from error


def _video_stream(container: InputContainer, name: str) -> VideoStream:
    """The first video stream that is not cover art, after rejecting inputs that are not videos."""
    import av

    format_name = container.format.name
    if format_name in _TEXT_FORMATS:
        raise VideoDecodeError(f"{name}: is a text file (FFmpeg reads it as '{format_name}' ANSI art), not a video")
    if format_name in _IMAGE_FORMATS or format_name.endswith("_pipe"):
        raise VideoDecodeError(f"{name}: is a still image ('{format_name}'), not a video")
    videos = list(container.streams.video)
    if not videos:
        kinds = [stream.type for stream in container.streams]
        found = ", ".join(f"{kinds.count(kind)} {kind}" for kind in sorted(set(kinds))) or "no streams at all"
        raise VideoDecodeError(f"{name}: has no video stream ({found})")
    moving = [stream for stream in videos if not stream.disposition & av.stream.Disposition.attached_pic]
    if not moving:
        raise VideoDecodeError(f"{name}: its only picture is an attached cover image, not a video")
    stream = moving[0]
    if stream.codec_context is None:
        raise VideoDecodeError(f"{name}: video stream #{stream.index} uses a codec this FFmpeg build cannot decode")
    return stream


def _header_duration_s(stream: VideoStream, container: InputContainer) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _trusted_header_frame_count(container: InputContainer, stream: VideoStream) -> int | None:
    """The frame count of an MP4/MOV sample table whose last sample lies in the file (``None`` for other files).

    Samples outside the edit list (the tail left by a stream-copied cut, the lead-in of a shifted start) are flagged
    for discarding: they are decoded for reference but never presented, so they do not count, as in the packet scan.
    """
    if stream.frames <= 0 or container.format.name.split(",")[0] not in _TRUSTED_FRAME_COUNT_FORMATS:
        return None
    entries = stream.index_entries
    if len(entries) != stream.frames:
        return None
    last = entries[len(entries) - 1]
    if container.size > 0 and last.pos + last.size > container.size:
        return None  # truncated: the sample table lists frames beyond the end of the file
    presented = [entry.is_keyframe for entry in entries if entry.size and not entry.is_discard]
    if not presented or not presented[0]:
        return None  # no frame, or frames before the first keyframe, which the packet scan leaves out
    return len(presented)


def _check_header_limits(
    stream: VideoStream,
    container: InputContainer,
    name: str,
    max_duration_s: float | None,
    max_pixels: int | None,
) -> None:
    """Reject videos beyond the limits from their headers, before any scanning."""
    width, height = stream.codec_context.width, stream.codec_context.height
    if max_pixels is not None and width * height > max_pixels:
        raise VideoDecodeError(f"{name}: resolution {width}x{height} exceeds max_pixels={max_pixels}")
    duration = _header_duration_s(stream, container)
    if max_duration_s is not None and duration is not None and duration > max_duration_s:
        raise VideoDecodeError(f"{name}: duration {duration:.1f} s exceeds max_duration_s={max_duration_s}")


def _check_limits(metadata: VideoMetadata, name: str, max_duration_s: float | None, max_pixels: int | None) -> None:
    if max_pixels is not None and metadata.width * metadata.height > max_pixels:
        raise VideoDecodeError(
            f"{name}: resolution {metadata.width}x{metadata.height} exceeds max_pixels={max_pixels}"
        )
    if max_duration_s is not None and metadata.duration_s > max_duration_s:
        raise VideoDecodeError(f"{name}: duration {metadata.duration_s:.1f} s exceeds max_duration_s={max_duration_s}")


# --------------------------------------------------------------------------------------------------------------------
# Decoding packet by packet


def _demuxed_packets(container: InputContainer, stream: VideoStream, name: str) -> Iterator[Packet | None]:
    """The stream's packets in decode order from the container's current position.

    A demuxer error (a truncated file) is logged and ends the packets with a ``None``, which flushes a decoder.
    """
    import av

    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.FFmpegError as error:
            logger.warning(f"{name}: stopped reading after a demuxer error, the file may be truncated ({error})")
            yield None
            return
        yield packet


def _decoded_frames(
    container: InputContainer, stream: VideoStream, name: str, drain_after: int | None = None
) -> Iterator[VideoFrame]:
    """Frames decoded from the container's current position to the end of the stream.

    Packets that fail to decode are skipped (the decoder resynchronises at the next keyframe), and a demuxer error
    (a truncated file) ends the stream after the decoder's buffered frames; both are logged. With ``drain_after``,
    the frames end once the packet with that timestamp is decoded: the decoder is drained of the frames its
    reordering delay holds back instead of being fed the packets it would wait for (it must be flushed before reuse,
    which a seek does).
    """
    import av

    failed = 0
    for packet in _demuxed_packets(container, stream, name):
        drain = drain_after is not None and packet is not None and packet.pts == drain_after
        try:
            yield from stream.codec_context.decode(packet)
            if drain:
                yield from stream.codec_context.decode(None)
        except av.FFmpegError as error:
            failed += 1
            if failed == 1:
                logger.warning(f"{name}: skipping a video packet that fails to decode ({error})")
        if drain:
            break
    if failed > 1:
        logger.warning(f"{name}: {failed} video packets failed to decode")


# --------------------------------------------------------------------------------------------------------------------
# Packet index


class _Scan:
    """What one pass over the video packets (without decoding beyond the first frame) tells.

    Frame ``i`` (presentation order) has timestamp ``pts[i]`` and comes from the packet at decode position
    ``decode_pos[i]``. Keyframe packets are listed by decode position with their timestamps.
    """

    def __init__(self, container: InputContainer, stream: VideoStream, first_frame: VideoFrame, name: str):
        self.seek_reliable = container.format.name not in _UNRELIABLE_SEEK_FORMATS
        self.time_base = stream.time_base
        self.average_rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        # The rate the codec itself states (H.264/HEVC SPS timing, MPEG sequence header), for streams whose packets
        # carry no timestamps: their demuxer's rate is a placeholder (25 fps for raw H.264).
        self.codec_rate = stream.codec_context.framerate or stream.guessed_rate
        self.header_duration_s = _header_duration_s(stream, container)
        self.codec = stream.codec_context.name
        self.pix_fmt = first_frame.format.name
        rotation = first_frame.rotation  # counter-clockwise degrees, in [-180, 180]
        quarter_turns = round(rotation / 90)
        if rotation != 90 * quarter_turns:
            logger.warning(f"{name}: display rotation of {rotation} degrees rounded to {90 * quarter_turns}")
        self.ccw_quarter_turns = quarter_turns % 4
        stored = (first_frame.height, first_frame.width)
        self.displayed_size = stored[::-1] if self.ccw_quarter_turns % 2 else stored
        self.num_frames = 0
        self.trusted = False
        self.pts = np.zeros(0, dtype=np.int64)
        self.decode_pos = np.zeros(0, dtype=np.int64)
        self.key_pos = np.zeros(0, dtype=np.int64)
        self.key_pts = np.zeros(0, dtype=np.int64)

    def index_packets(
        self, pts: Sequence[int | None] | np.ndarray, key: Sequence[bool] | np.ndarray, name: str
    ) -> None:
        """Build the frame index from the stream's packets, in decode order."""
        self.num_frames = len(pts)
        if _has_none(pts):
            logger.info(f"{name}: packets without timestamps; frames will be counted by decoding sequentially")
            self.average_rate = self.codec_rate or self.average_rate
            return
        pts_array = np.asarray(pts, dtype=np.int64)
        order = np.argsort(pts_array, kind="stable")
        self.pts = pts_array[order]
        self.decode_pos = order
        if np.any(np.diff(self.pts) == 0):
            logger.info(f"{name}: duplicate timestamps; frames will be counted by decoding sequentially")
            return
        if len(order) and np.max(np.abs(order - np.arange(len(order)))) > _MAX_REORDER:
            logger.info(f"{name}: timestamps jump backwards; frames will be counted by decoding sequentially")
            return
        self.key_pos = np.flatnonzero(np.asarray(key, dtype=bool))
        self.key_pts = pts_array[self.key_pos]
        self.trusted = True

    def keep(self, frames: np.ndarray) -> None:
        """Forget every frame but ``frames`` (increasing indices): the others do not decode.

        Frame ``i`` becomes the ``i``-th of ``frames``, with its timestamp (and keyframes that remain) when indexed.
        """
        self.num_frames = len(frames)
        if self.trusted:
            remaining = np.isin(self.key_pts, self.pts[frames])
            self.key_pos, self.key_pts = self.key_pos[remaining], self.key_pts[remaining]
            self.pts, self.decode_pos = self.pts[frames], self.decode_pos[frames]

    def metadata(self, stream_frames: int | None = None) -> VideoMetadata:
        num_frames = stream_frames or self.num_frames
        fps = 0.0
        if self.trusted and num_frames >= 2 and stream_frames is None:
            span = float((self.pts[-1] - self.pts[0]) * self.time_base)
            fps = (num_frames - 1) / span if span > 0 else 0.0
        if fps <= 0 and self.average_rate:
            fps = float(self.average_rate)
        if fps > 0:
            duration = num_frames / fps
        else:
            duration = self.header_duration_s or 0.0
            fps = num_frames / duration if duration > 0 else 0.0
        height, width = self.displayed_size
        return VideoMetadata(
            num_frames=num_frames,
            fps=fps,
            duration_s=duration,
            width=width,
            height=height,
            rotation=(-90 * self.ccw_quarter_turns) % 360,
            codec=self.codec,
            pix_fmt=self.pix_fmt,
        )

    def timestamps(self, indices: Sequence[int], fps: float) -> np.ndarray:
        """`(len(indices),)` presentation times in seconds from the first frame (from ``fps`` if not indexed)."""
        indices_array = np.asarray(indices, dtype=np.int64)
        if self.trusted:
            return ((self.pts[indices_array] - self.pts[0]) * float(self.time_base)).astype(np.float64)
        return indices_array / fps if fps > 0 else np.zeros(len(indices_array))

    def keyframe_indices(self) -> np.ndarray:
        """Increasing indices of the frames that are keyframes (needs a trusted index)."""
        return np.unique(np.searchsorted(self.pts, self.key_pts))

    def frame_of(self, pts: int | None) -> int | None:
        """Index of the frame with timestamp ``pts``, ``None`` if no frame has it."""
        if pts is None:
            return None
        position = int(np.searchsorted(self.pts, pts))
        return position if position < self.num_frames and self.pts[position] == pts else None

    def keyframe_before(self, index: int) -> int:
        """Index of the keyframe to seek to for frame ``index`` (``-1`` if none precedes it).

        It is the last keyframe that precedes the frame in decode order *and* in presentation order, so that a
        leading picture of an open GOP is decoded from the previous keyframe, with its references. Seeking to that
        keyframe's presentation timestamp lands on it (or earlier) whether the demuxer indexes packets by
        presentation or by decode timestamp, since a keyframe's decode timestamp is never after its presentation.
        """
        k = int(np.searchsorted(self.key_pos, self.decode_pos[index], side="right")) - 1
        while k >= 0 and self.key_pts[k] > self.pts[index]:
            k -= 1
        return -1 if k < 0 else int(np.searchsorted(self.pts, self.key_pts[k]))


def _scan(container: InputContainer, stream: VideoStream, opened: _Source, count_packets: bool) -> _Scan:
    """Decode the first frame and, if ``count_packets``, index every video packet (not decoded).

    MP4/MOV files are indexed from their sample tables (:func:`_mp4_sample_index`) when those agree with the packets
    demuxed up to the first frame; other files, and MP4s whose tables cannot be used, by demuxing every packet.
    """
    import av

    name = opened.name
    pts: list[int | None] = []
    key: list[bool] = []
    first_key = None  # how many indexed packets precede the first keyframe packet (discarded or not)
    first_frame = None
    last_corrupt = False
    failed = 0
    last_error = ""
    packets = _demuxed_packets(container, stream, name)
    sample_index = None
    for packet in packets:
        if packet is None:
            break
        if packet.size and first_key is None and packet.is_keyframe:
            first_key = len(pts)
        if packet.size and not packet.is_discard:
            pts.append(packet.pts)
            key.append(packet.is_keyframe)
            last_corrupt = packet.is_corrupt
        if first_frame is None:
            try:
                frames = stream.codec_context.decode(packet if packet.size else None)
            except av.FFmpegError as error:
                failed, last_error = failed + 1, str(error)
                frames = []
            if frames:
                first_frame = frames[0]
                if not count_packets:
                    break
                sample_index = _mp4_sample_index(container, stream, opened, pts, key)
                if sample_index is not None:
                    break
    if first_frame is None:
        try:
            frames = stream.codec_context.decode(None)
        except av.FFmpegError:
            frames = []
        if not frames:
            reason = f"all {failed} packets failed to decode, last error: {last_error}" if failed else "no packets"
            raise VideoDecodeError(f"{name}: no frame of video stream #{stream.index} decodes ({reason})")
        first_frame = frames[0]
    scan = _Scan(container, stream, first_frame, name)
    if count_packets:
        if sample_index is not None:
            pts, key = sample_index
        elif last_corrupt:
            # A file cut short ends in a partial packet, which does not decode. (Corrupt packets elsewhere, e.g. at a
            # broken MPEG-TS continuity counter, usually still decode, with errors concealed: they count.)
            pts.pop()
            key.pop()
        keep = _decodable_packets(pts, first_key or 0, first_frame.pts)
        if len(keep) < len(pts):
            logger.info(f"{name}: the stream starts in a keyframe group; skipping {len(pts) - len(keep)} frames")
        if isinstance(pts, np.ndarray):
            scan.index_packets(pts[keep], np.asarray(key)[keep], name)
        else:
            scan.index_packets([pts[i] for i in keep], [key[i] for i in keep], name)
    return scan


# --------------------------------------------------------------------------------------------------------------------
# MP4 sample tables


def _mp4_sample_index(
    container: InputContainer, stream: VideoStream, opened: _Source, pts: list[int | None], key: list[bool]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Every packet's presentation timestamp and keyframe flag, in decode order, without demuxing an MP4/MOV file.

    FFmpeg's MP4 demuxer builds its index of samples (decode timestamps, keyframe and discard flags, file positions)
    from the file's sample tables when it opens the file; a sample's presentation timestamp is its decode timestamp
    plus its composition offset from the ``ctts`` box, which PyAV does not expose and :func:`_mp4_composition_offsets`
    reads. This replaces a pass that demuxes every packet (0.07 s for 10 minutes at 30 fps, 0.42 s for an hour, on
    the machine of BENCHMARKS.md) by a pass over FFmpeg's index and a read of the tables (0.02 s and 0.08 s).

    ``pts`` and ``key`` are the packets already demuxed (up to the first decoded frame, empty and discarded packets
    left out): the index must give exactly these first, which also fixes the constant by which the demuxer may shift
    presentation timestamps (negative composition offsets). ``None``, and the caller demuxes every packet, when the
    container is not MP4/MOV, when the source is a caller's file object (which must not be read while FFmpeg reads
    it), when the file is fragmented or its tables do not cover FFmpeg's index one to one, when a sample lies beyond
    the end of the file (a truncated file), or when the index disagrees with the demuxed packets.
    """
    if "mov" not in container.format.name.split(",") or opened.fileobj is not None:
        return None
    if not pts or any(value is None for value in pts):
        return None
    entries = stream.index_entries
    count = len(entries)
    if count < len(pts):
        return None
    timestamps = np.empty(count, dtype=np.int64)
    flags = np.empty(count, dtype=np.int64)
    ends = np.empty(count, dtype=np.int64)
    sizes = np.empty(count, dtype=np.int64)
    for i, entry in enumerate(entries):
        timestamps[i], flags[i], sizes[i] = entry.timestamp, entry.flags, entry.size
        ends[i] = entry.pos + entry.size
    file_size = len(opened.data) if opened.data is not None else os.path.getsize(opened.path)
    if np.any(ends > file_size):
        return None
    with io.BytesIO(opened.data) if opened.data is not None else open(opened.path, "rb") as file:
        offsets = _mp4_composition_offsets(file, file_size, stream.id)
    if offsets is None or len(offsets) != count:
        return None
    indexed = (sizes > 0) & (flags & _AVINDEX_DISCARD_FRAME == 0)
    presentation = (timestamps + offsets)[indexed]
    keyframes = (flags & _AVINDEX_KEYFRAME != 0)[indexed]
    if len(presentation) < len(pts):
        return None
    shift = int(pts[0]) - int(presentation[0])
    presentation += shift
    if not (np.array_equal(presentation[: len(pts)], pts) and np.array_equal(keyframes[: len(key)], key)):
        logger.debug(f"{opened.name}: the MP4 sample tables disagree with the demuxed packets; demuxing them all")
        return None
    return presentation, keyframes


def _mp4_boxes(file: IO[bytes], start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """``(type, payload start, payload end)`` of the ISO base media boxes between byte offsets ``start`` and ``end``."""
    position = start
    while position + 8 <= end:
        file.seek(position)
        header = file.read(8)
        if len(header) < 8:
            return
        size, kind = struct.unpack(">I4s", header)
        payload = position + 8
        if size == 1:  # a 64-bit size follows the type
            large = file.read(8)
            if len(large) < 8:
                return
            size, payload = struct.unpack(">Q", large)[0], position + 16
        elif size == 0:  # the box runs to the end of its parent
            size = end - position
        if size < payload - position:
            return
        yield kind, payload, min(position + size, end)
        position += size


def _mp4_child(file: IO[bytes], parent: tuple[int, int] | None, path: Sequence[bytes]) -> tuple[int, int] | None:
    """The payload range of the first box along ``path`` (types, nested) inside ``parent``'s payload."""
    for kind in path:
        if parent is None:
            return None
        parent = next(((start, end) for found, start, end in _mp4_boxes(file, *parent) if found == kind), None)
    return parent


def _mp4_composition_offsets(file: IO[bytes], size: int, track_id: int) -> np.ndarray | None:
    """Per-sample composition offsets (presentation minus decode time, decode order) of track ``track_id``.

    Read from the track's ``ctts`` box (all zeros without one: no reordering); offsets are signed whatever the box's
    version, as FFmpeg reads them. ``None`` for a fragmented file (``mvex``: samples are described in each fragment),
    a track or box that is missing, or a table that does not add up to the track's sample count (``stsz``).
    """
    moov = _mp4_child(file, (0, size), [b"moov"])
    if moov is None or _mp4_child(file, moov, [b"mvex"]) is not None:
        return None
    for kind, start, end in _mp4_boxes(file, *moov):
        if kind != b"trak":
            continue
        header = _mp4_child(file, (start, end), [b"tkhd"])
        if header is None:
            return None
        file.seek(header[0])
        version = file.read(1)
        file.seek(header[0] + (20 if version == b"\x01" else 12))  # after version, flags and the two times
        if struct.unpack(">I", file.read(4).rjust(4, b"\0"))[0] != track_id:
            continue
        table = _mp4_child(file, (start, end), [b"mdia", b"minf", b"stbl"])
        sample_sizes = _mp4_child(file, table, [b"stsz"]) or _mp4_child(file, table, [b"stz2"])
        if sample_sizes is None:
            return None
        file.seek(sample_sizes[0] + 8)  # version and flags, then the constant size (stsz) or field size (stz2)
        (count,) = struct.unpack(">I", file.read(4).rjust(4, b"\0"))
        offsets_box = _mp4_child(file, table, [b"ctts"])
        if offsets_box is None:
            return np.zeros(count, dtype=np.int64)
        file.seek(offsets_box[0] + 4)
        (runs,) = struct.unpack(">I", file.read(4).rjust(4, b"\0"))
        if 8 + 8 * runs > offsets_box[1] - offsets_box[0]:
            return None
        pairs = np.frombuffer(file.read(8 * runs), dtype=">i4").reshape(runs, 2).astype(np.int64)
        if np.any(pairs[:, 0] < 0) or pairs[:, 0].sum() != count:
            return None
        return np.repeat(pairs[:, 1], pairs[:, 0])
    return None


def _has_none(values: Sequence[int | None] | np.ndarray) -> bool:
    return not isinstance(values, np.ndarray) and any(value is None for value in values)


def _decodable_packets(pts: Sequence[int | None] | np.ndarray, first_key: int, first_pts: int | None) -> np.ndarray:
    """Positions (decode order) of the packets whose frames a decoder outputs, from a stream's start.

    A stream cut in the middle of a keyframe group (an MPEG-TS segment, a cut by stream copy) starts with packets
    whose reference frames are missing, and so do the leading pictures of its first keyframe in an open keyframe
    group (decoded after the keyframe, presented before it). Decoders output nothing for them (H.264 and HEVC wait
    for the keyframe), or garbage (some MPEG-4 decoders). With timestamps, the packets near the start presented
    before the first frame the decoder output (``first_pts``) are the ones it dropped; without, the packets before
    the first keyframe packet (``first_key``) are left out.
    """
    if first_pts is None or _has_none(pts):
        return np.arange(first_key, len(pts))
    presented = np.asarray(pts, dtype=np.int64) >= first_pts
    return np.flatnonzero(presented | (np.arange(len(pts)) >= first_key + _MAX_REORDER))


# --------------------------------------------------------------------------------------------------------------------
# Reading frames


def _frame_buffer(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised uint8 array of ``shape`` for decoded frames, its memory mapped in one system call.

    Filling a fresh large array otherwise takes a page fault per page as the frames arrive, and numpy asks for
    transparent huge pages for large arrays, whose compaction on first touch can stall (kernels default to compacting
    on fault for memory advised so). For the 160 frames of a 640x360 video (110 MiB), in fresh processes on the
    2-CPU machine of BENCHMARKS.md, that took 0.02-0.25 s against a steady 0.06 s mapped up front (``MAP_POPULATE``,
    Linux). Elsewhere, and for small arrays, it is ``np.empty``.
    """
    nbytes = int(np.prod(shape))
    populate = getattr(mmap, "MAP_POPULATE", None)
    if populate is None or nbytes < _POPULATE_MIN_BYTES:
        return np.empty(shape, dtype=np.uint8)
    mapping = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | populate)
    return np.frombuffer(mapping, dtype=np.uint8).reshape(shape)


class _Reader:
    """Decodes a set of frames from an indexed video into one output array."""

    def __init__(self, opened: _Source, scan: _Scan, size: tuple[int, int] | None, threads: int = 1):
        self.opened = opened
        self.scan = scan
        self.threads = threads if opened.concurrent else 1
        self.height, self.width = scan.displayed_size if size is None else (int(size[0]), int(size[1]))
        # PyAV scales the stored (unrotated) frame; quarter turns swap its sides.
        self.scaled = (self.height, self.width) if scan.ccw_quarter_turns % 2 else (self.width, self.height)

    def read(self, indices: list[int], strategy: Strategy, census: bool = False) -> np.ndarray:
        """`(len(indices), H, W, 3)` uint8 frames; see :func:`read_frames` for the strategies.

        A requested frame that does not decode raises a :class:`VideoDecodeError`, or with ``census`` a
        :class:`_FramesLostError` listing every frame that decodes (the stream is then decoded to its end).
        """
        output = _frame_buffer((len(indices), self.height, self.width, 3))
        if not indices:
            return output
        slots: dict[int, list[int]] = {}
        for slot, index in enumerate(indices):
            slots.setdefault(index, []).append(slot)
        if strategy != "sequential" and not self.scan.trusted:
            logger.debug(f"{self.opened.name}: timestamps cannot index frames, reading sequentially")
            strategy = "sequential"
        elif strategy == "auto" and not self.scan.seek_reliable:
            logger.debug(f"{self.opened.name}: seeking is unreliable in this container, reading sequentially")
            strategy = "sequential"
        try:
            if strategy != "sequential":
                try:
                    self._read_seeking_parallel(
                        slots, output, seek_cost=0 if strategy == "seek" else _SEEK_COST_FRAMES
                    )
                    return output
                except _IndexMismatchError as mismatch:
                    logger.warning(f"{self.opened.name}: {mismatch}; reading sequentially instead")
            if self.scan.trusted:
                try:
                    self._read_by_timestamp(slots, output, census)
                    return output
                except _IndexMismatchError as mismatch:
                    logger.warning(f"{self.opened.name}: {mismatch}; counting frames instead")
            self._read_counting(slots, output)
        except _FramesLostError as lost:
            if census:
                raise
            raise VideoDecodeError(f"{self.opened.name}: {lost.reason} (the file is truncated or damaged)") from None
        return output

    def _store(self, frame: VideoFrame, index: int, slots: dict[int, list[int]], output: np.ndarray) -> None:
        width, height = self.scaled
        rgb = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
        if self.scan.ccw_quarter_turns:
            rgb = np.rot90(rgb, self.scan.ccw_quarter_turns)
        for slot in slots[index]:
            output[slot] = rgb

    def _read_by_timestamp(self, slots: dict[int, list[int]], output: np.ndarray, census: bool) -> None:
        """One pass from the start that identifies decoded frames by their timestamps.

        Frames that do not decode (damaged packets, a truncated end) leave gaps, and the frames after them keep
        their indices, as when seeking past the damage. A timestamp the index lacks, or one that goes backwards, means
        the index does not describe the frames: :class:`_IndexMismatchError`.
        """
        scan, name = self.scan, self.opened.name
        last = max(slots)
        decoded = np.zeros(scan.num_frames, dtype=bool)
        previous = -1
        reached_end = True
        with self.opened.open() as container:
            stream = _video_stream(container, name)
            for frame in _decoded_frames(container, stream, name):
                index = scan.frame_of(frame.pts)
                if index is None:
                    raise _IndexMismatchError(f"decoded a frame with timestamp {frame.pts} that the index lacks")
                if index <= previous:
                    raise _IndexMismatchError(f"decoded frame {index} after frame {previous}")
                if index in slots:
                    self._store(frame, index, slots, output)
                decoded[index] = True
                # Past the last target, stop unless a census of the frames that decode is wanted after a loss.
                if index >= last and previous < last and not (census and not all(decoded[t] for t in slots)):
                    reached_end = False
                    break
                previous = index
        lost = [target for target in sorted(slots) if not decoded[target]]
        if lost:
            reason = f"frame {lost[0]} of {scan.num_frames} does not decode"
            raise _FramesLostError(reason, np.flatnonzero(decoded) if reached_end else None)

    def _read_counting(self, slots: dict[int, list[int]], output: np.ndarray) -> None:
        """One pass from the start in which the ``i``-th decoded frame is frame ``i``."""
        last = max(slots)
        index = -1
        with self.opened.open() as container:
            stream = _video_stream(container, self.opened.name)
            for index, frame in enumerate(_decoded_frames(container, stream, self.opened.name)):
                if index in slots:
                    self._store(frame, index, slots, output)
                if index == last:
                    return
        reason = f"the stream ends after {index + 1} decodable frames, before frame {last}"
        raise _FramesLostError(reason, np.arange(index + 1))

    def _seek_groups(self, targets: list[int], seek_cost: int) -> list[list[int]]:
        """``targets`` (increasing, distinct) cut where reading them seeks: a target starts a group when its keyframe
        lies more than ``seek_cost`` frames beyond the frame after the previous target; the other targets of a group
        are reached by decoding on. The first group seeks only if its keyframe is that far from the start."""
        groups: list[list[int]] = []
        expected = 0
        for target in targets:
            if not groups or self.scan.keyframe_before(target) > expected + seek_cost:
                groups.append([])
            groups[-1].append(target)
            expected = target + 1
        return groups

    def _drain_point(self, keyframe: int, group: list[int]) -> int | None:
        """Timestamp of the packet after which the decoder can be drained, having sought ``keyframe`` for ``group``.

        It is the last packet in decode order among the frames from the keyframe to the group's last target, so that
        every target of the group is decoded by then. ``None`` when the group runs to the end of the stream anyway.
        """
        scan = self.scan
        if group[-1] == scan.num_frames - 1:
            return None
        frames = np.arange(keyframe, group[-1] + 1)
        return int(scan.pts[frames[np.argmax(scan.decode_pos[frames])]])

    def _read_seeking_parallel(self, slots: dict[int, list[int]], output: np.ndarray, seek_cost: int) -> None:
        """:meth:`_read_seeking`, with the seek groups shared among up to ``threads`` threads, each with its own
        container and decoder (PyAV releases the GIL while it decodes and converts).

        The groups are cut into contiguous runs of about equal decoding work (frames from each group's keyframe to
        its last target). An :class:`_IndexMismatchError` in any thread is raised once all have stopped.
        """
        groups = self._seek_groups(sorted(slots), seek_cost)
        threads = min(self.threads, len(groups))
        if threads < 2:
            self._read_seeking(groups, slots, output, seek_cost)
            return
        work = np.cumsum([group[-1] - max(self.scan.keyframe_before(group[0]), 0) + 1 for group in groups])
        # group g goes to the run in which its cumulative work ends
        runs = np.minimum((work - 1) * threads // work[-1], threads - 1)
        parts: list[list[list[int]]] = [[] for _ in range(threads)]
        for group, run in zip(groups, runs, strict=True):
            parts[run].append(group)
        with concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="videotgb-decode") as pool:
            futures = [pool.submit(self._read_seeking, part, slots, output, seek_cost) for part in parts if part]
            concurrent.futures.wait(futures)
        for future in futures:
            future.result()

    def _read_seeking(
        self, groups: list[list[int]], slots: dict[int, list[int]], output: np.ndarray, seek_cost: int
    ) -> None:
        """Read the targets of ``groups`` (consecutive seek groups of :meth:`_seek_groups`) with one decoder."""
        from av.video.frame import PictureType

        scan, name = self.scan, self.opened.name
        with self.opened.open() as container:
            stream = _video_stream(container, name)
            frames = _decoded_frames(container, stream, name)
            # Frames before `floor` are ignored (leading pictures of the keyframe sought, or frames decoded on the
            # way); from it on, decoded frames must follow the index one by one, starting at `floor`. After a seek,
            # the first frame that is not a leading picture must be a keyframe: a packet flagged as a keyframe that
            # is not one would otherwise decode into garbage without an error.
            floor = expected = 0
            awaiting_keyframe = False
            for group in groups:
                keyframe = scan.keyframe_before(group[0])
                if keyframe > expected + seek_cost:
                    logger.debug(f"{name}: seeking to keyframe {keyframe} for frame {group[0]}")
                    frames.close()
                    container.seek(int(scan.pts[keyframe]), stream=stream, backward=True)
                    frames = _decoded_frames(container, stream, name, self._drain_point(keyframe, group))
                    floor = expected = keyframe
                    awaiting_keyframe = True
                for target in group:
                    for frame in frames:
                        index = scan.frame_of(frame.pts)
                        if index is None:
                            raise _IndexMismatchError(
                                f"decoded a frame with timestamp {frame.pts} that the index lacks"
                            )
                        if awaiting_keyframe:
                            if frame.key_frame or frame.pict_type == PictureType.I:
                                awaiting_keyframe = False
                            elif index >= floor:
                                raise _IndexMismatchError(f"seeking for frame {floor} did not land on a keyframe")
                        if index < floor:
                            continue
                        if index != expected:
                            raise _IndexMismatchError(f"expected frame {expected}, decoded frame {index}")
                        expected = index + 1
                        if index in slots:
                            self._store(frame, index, slots, output)
                        if index == target:
                            break
                    else:
                        raise _IndexMismatchError(f"the stream ended before frame {target} after a seek")
