"""Small synthetic videos for tests, written in memory with PyAV in a few milliseconds.

Shared by the video-reading and optical-flow tests:

- :func:`make_video` encodes frames (a numbered test pattern by default) with a chosen codec, container, keyframe
  interval, pixel format, rotation tag and (optionally) variable frame rate, and returns the file's bytes or writes it.
- :func:`pattern_frame` / :func:`pattern_index` draw and read back a frame number, so a test can check *which*
  frame it got without trusting any decoder.
- :func:`moving_square_frames` makes frames with known motion (a textured square moving over a static textured
  background) for optical-flow tests.
- :func:`decode_all_frames` is the reference reader: decode every frame with plain PyAV, in order, as RGB.
- :func:`damage_packets`, :func:`shorten_edit_list` and :func:`cut_mpegts` turn an encoded file into the kinds of
  broken or cut files met in the wild: packets overwritten with noise, an MP4 cut by stream copy whose edit list ends
  before its last samples, an MPEG-TS segment that starts in the middle of a keyframe group.

PyAV is imported inside the functions, like the library does, so importing this module costs nothing.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

CONTAINER_FORMATS = {
    "mp4": "mp4",
    "mov": "mov",
    "mkv": "matroska",
    "webm": "webm",
    "avi": "avi",
    "ts": "mpegts",
    "h264": "h264",  # a raw Annex B stream: no container, no timestamps
}

_BIT_BLOCK = 4  # minimum side of one bit's block in the pattern (pixels)
_MAX_BITS = 12


def _bit_geometry(width: int, height: int) -> tuple[int, int, int]:
    """(number of bits, block width, block height) of the frame-number code drawn in the top-left corner."""
    block_w = max(_BIT_BLOCK, width // (_MAX_BITS + 2))
    block_h = max(_BIT_BLOCK, height // 4)
    return min(_MAX_BITS, width // block_w), block_w, block_h


def pattern_frame(index: int, width: int, height: int) -> np.ndarray:
    """A `(height, width, 3)` uint8 frame that encodes ``index``.

    A colour gradient whose blue level and phase depend on ``index``, with ``index`` written in binary as black/white
    blocks along the top-left edge (least significant bit first) and a white marker in the bottom-left corner, so that
    orientation (rotation) can be checked too.
    """
    ys, xs = np.mgrid[0:height, 0:width]
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[..., 0] = (xs * 255 // max(width - 1, 1) + 7 * index) % 256
    frame[..., 1] = ys * 255 // max(height - 1, 1)
    frame[..., 2] = (40 + 23 * index) % 256
    bits, block_w, block_h = _bit_geometry(width, height)
    for bit in range(bits):
        frame[:block_h, bit * block_w : (bit + 1) * block_w] = 255 if (index >> bit) & 1 else 0
    frame[height - block_h :, :block_w] = 255
    return frame


def pattern_index(frame: np.ndarray) -> int:
    """Read back the frame number drawn by :func:`pattern_frame` from a decoded `(H, W, 3)` RGB frame."""
    height, width = frame.shape[:2]
    bits, block_w, block_h = _bit_geometry(width, height)
    luma = frame.astype(np.float32).mean(axis=-1)
    index = 0
    for bit in range(bits):
        block = luma[1 : block_h - 1, bit * block_w + 1 : (bit + 1) * block_w - 1]
        if block.mean() > 128:
            index |= 1 << bit
    return index


def moving_square_frames(
    num_frames: int = 8,
    size: tuple[int, int] = (64, 64),
    square: int = 16,
    velocity: tuple[int, int] = (2, 1),
    start: tuple[int, int] = (8, 8),
    seed: int = 0,
) -> np.ndarray:
    """Frames with known motion: a textured square moving over a static textured background.

    Args:
        num_frames: number of frames ``T``.
        size: ``(width, height)``.
        square: side of the square in pixels.
        velocity: ``(dx, dy)`` displacement of the square per frame, in pixels (so the true flow from frame ``t`` to
            ``t + 1`` is ``(dx, dy)`` on the square and ``(0, 0)`` on the background where it stays visible).
        start: ``(x, y)`` of the square's top-left corner in frame 0.
        seed: seed of the random textures.

    Returns:
        `(T, height, width, 3)` uint8 RGB frames. The square must stay inside the frame (``ValueError`` otherwise).
    """
    width, height = size
    x_end = start[0] + velocity[0] * (num_frames - 1)
    y_end = start[1] + velocity[1] * (num_frames - 1)
    for x, y in ((start[0], start[1]), (x_end, y_end)):
        if x < 0 or y < 0 or x + square > width or y + square > height:
            raise ValueError(f"the square leaves the {width}x{height} frame at ({x}, {y})")
    rng = np.random.default_rng(seed)
    # Smooth textures (blurred noise) so that flow estimators have gradients to follow.
    background = _smooth_noise(rng, height, width)
    texture = _smooth_noise(rng, square, square)
    texture[..., 0] = 255 - texture[..., 0]
    frames = np.repeat(background[None], num_frames, axis=0)
    for t in range(num_frames):
        x, y = start[0] + velocity[0] * t, start[1] + velocity[1] * t
        frames[t, y : y + square, x : x + square] = texture
    return frames


def _smooth_noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    noise = rng.uniform(0, 255, size=(height + 4, width + 4, 3))
    kernel = np.ones(5) / 5
    for axis in (0, 1):
        noise = np.apply_along_axis(lambda line: np.convolve(line, kernel, mode="valid"), axis, noise)
    return noise.astype(np.uint8)


def vfr_pts(num_frames: int, fps: float, time_base: Fraction) -> list[int]:
    """Variable-frame-rate presentation timestamps: intervals cycle through 0.5, 1, 2 and 1 nominal frame durations."""
    step = 1 / (fps * time_base)
    pts, now = [], 0.0
    for i in range(num_frames):
        pts.append(round(now))
        now += step * (0.5, 1.0, 2.0, 1.0)[i % 4]
    return pts


def make_video(
    path: str | os.PathLike | None = None,
    *,
    codec: str = "libx264",
    frames: int | np.ndarray = 24,
    fps: int = 24,
    size: tuple[int, int] = (64, 48),
    gop: int = 12,
    pix_fmt: str = "yuv420p",
    container: str = "mp4",
    rotation: int | None = None,
    vfr: bool = False,
    bframes: int | None = None,
    options: dict[str, str] | None = None,
) -> bytes | Path:
    """Encode a small video.

    Args:
        path: where to write the file; ``None`` returns the file's bytes instead.
        codec: encoder name (``libx264``, ``libx265``, ``libvpx-vp9``, ``mpeg4``, ``ffv1``, ...).
        frames: number of frames of the numbered test pattern (:func:`pattern_frame`), or `(T, H, W, 3)` uint8 RGB
            frames to encode (``size`` is then taken from them).
        fps: nominal frame rate.
        size: ``(width, height)`` of the pattern.
        gop: keyframe interval (``1`` = every frame is a keyframe). Scene-cut keyframes are disabled for x264/x265 so
            the interval is exact.
        pix_fmt: encoder pixel format (``yuv420p``, ``yuv444p``, ``yuv420p10le``, ...).
        container: one of :data:`CONTAINER_FORMATS` (``mp4``, ``mov``, ``mkv``, ``webm``, ``avi``, ``ts``).
        rotation: clockwise display rotation written as the stream's display matrix (``90`` = a phone held upright:
            the stored frames must be turned 90° clockwise to be viewed), or ``None``.
        vfr: use the irregular timestamps of :func:`vfr_pts` (time base 1/1000) instead of a constant rate.
        bframes: maximum consecutive B-frames (encoder default when ``None``).
        options: extra encoder options.

    Returns:
        The file's bytes when ``path`` is ``None``, else ``Path(path)``.
    """
    import av

    if isinstance(frames, np.ndarray):
        images = frames
        num_frames, height, width = frames.shape[:3]
    else:
        images = None
        num_frames, (width, height) = frames, size
    target = io.BytesIO() if path is None else str(path)
    time_base = Fraction(1, 1000) if vfr else Fraction(1, fps)
    pts = vfr_pts(num_frames, fps, time_base) if vfr else list(range(num_frames))

    codec_options = dict(options or {})
    if codec == "libx264":
        codec_options.setdefault("x264-params", f"keyint={gop}:scenecut=0")
        codec_options.setdefault("crf", "16")
    elif codec == "libx265":
        codec_options.setdefault("x265-params", f"keyint={gop}:scenecut=0:log-level=none")
        codec_options.setdefault("crf", "16")
        codec_options.setdefault("preset", "ultrafast")
    elif codec.startswith("libvpx"):
        codec_options.setdefault("deadline", "realtime")
        codec_options.setdefault("cpu-used", "8")
        codec_options.setdefault("crf", "10")
        codec_options.setdefault("b", "0")
    elif codec == "mpeg4":
        codec_options.setdefault("qscale", "2")

    with av.open(target, mode="w", format=CONTAINER_FORMATS[container]) as output:
        stream = output.add_stream(codec, rate=fps, options=codec_options)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.time_base = time_base
        stream.gop_size = gop
        if bframes is not None:
            stream.codec_context.max_b_frames = bframes
        if rotation:
            stream.set_display_rotation(-rotation)
        for i in range(num_frames):
            image = images[i] if images is not None else pattern_frame(i, width, height)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = pts[i], time_base
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return target.getvalue() if path is None else Path(path)


def decode_all_frames(source: str | os.PathLike | bytes, rotate: bool = True) -> np.ndarray:
    """Reference decode: every frame in presentation order as RGB, `(T, H, W, 3)` uint8, turned upright if asked.

    Plain PyAV (``container.decode``, ``to_ndarray(format="rgb24")``), the way the original code read videos.
    """
    import av

    target = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    with av.open(target) as container:
        frames = []
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            if rotate and frame.rotation:
                rgb = np.rot90(rgb, k=round(frame.rotation / 90))
            frames.append(np.ascontiguousarray(rgb))
    return np.stack(frames)


def damage_packets(data: bytes, packets: Sequence[int], skip: int = 0) -> bytes:
    """Overwrite video packets with random bytes (seeded): the file still demuxes, those packets do not decode.

    Args:
        data: the file's bytes.
        packets: positions of the packets to damage among the non-empty video packets, in decode order.
        skip: bytes left intact at the start of each packet (``8`` keeps an AVI chunk header, which ``packet.pos``
            points at).
    """
    import av

    damaged = bytearray(data)
    with av.open(io.BytesIO(data)) as container:
        chunks = [(packet.pos, packet.size) for packet in container.demux(video=0) if packet.size]
    rng = np.random.default_rng(0)
    for position, size in (chunks[k] for k in packets):
        damaged[position + skip : position + skip + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    return bytes(damaged)


def shorten_edit_list(data: bytes, frames: int) -> bytes:
    """An MP4 whose edit list presents only its first ``frames`` frames, although all its samples stay in the file.

    This is what cutting by stream copy leaves (a cut must keep the samples up to the next keyframe): the demuxer
    flags the samples past the edit list as discarded. ``data`` must be a constant-rate MP4 with a one-entry edit
    list (what :func:`make_video` writes with B-frames); the entry's duration is scaled down in place.
    """
    import av

    with av.open(io.BytesIO(data)) as container:
        total = container.streams.video[0].frames
    start = data.find(b"elst")
    version, entries = data[start + 4], struct.unpack(">I", data[start + 8 : start + 12])[0]
    if version != 0 or entries != 1 or not 0 < frames < total:
        raise ValueError(f"cannot shorten an edit list of version {version} with {entries} entries to {frames} frames")
    (duration,) = struct.unpack(">I", data[start + 12 : start + 16])
    shortened = bytearray(data)
    struct.pack_into(">I", shortened, start + 12, duration * frames // total)
    return bytes(shortened)


def cut_mpegts(data: bytes, packet: int) -> bytes:
    """An MPEG-TS file cut, at a 188-byte transport packet boundary, where video packet ``packet`` (decode order)
    starts: like a recorded or downloaded segment that begins in the middle of a keyframe group."""
    import av

    with av.open(io.BytesIO(data)) as container:
        positions = [p.pos for p in container.demux(video=0) if p.size]
    return data[positions[packet] // 188 * 188 :]
