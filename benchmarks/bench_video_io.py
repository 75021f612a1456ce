"""Time and peak memory of reading VideoTGB's frames (32 candidates + 64 flow pairs) from long videos.

Compares, on generated 640x360 H.264 videos of 1, 10 and 60 minutes (30 fps, x264 ``veryfast`` with its default
250-frame keyframe interval and B-frames, a scene change every 5 s):

- ``full_rgb``: the original code's method: decode every frame and convert each to RGB, keep the 160 needed
  (32 candidates and the 64 pairs of consecutive frames that the flow steps compare);
- ``auto``, ``seek``, ``sequential``: :func:`videotgb.video_io.read_video` with that strategy.

Each measurement runs in a fresh subprocess, so its peak resident memory (``ru_maxrss``) is its own; the table shows
the peak minus the process's resident memory after imports. Every method's frames are checked against
``full_rgb``'s (checksum). Videos are generated once into a cache folder (~20 s per minute of video on 2 cores).

Usage::

    python benchmarks/bench_video_io.py                 # 1, 10 and 60 minutes
    python benchmarks/bench_video_io.py --minutes 1 10  # a subset
    python benchmarks/bench_video_io.py --minutes 1 --repeats 3 --cache-dir /tmp/videos
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, FPS = 640, 360, 30
NUM_CANDIDATES, MAX_FLOW_STEPS = 32, 64
METHODS = ("full_rgb", "auto", "seek", "sequential")


def _textures(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """Smooth random RGB textures twice as wide as the frame (panned across it)."""
    textures = []
    for _ in range(count):
        coarse = rng.uniform(0, 255, size=(HEIGHT // 8 + 1, WIDTH // 4 + 1, 3))
        texture = np.kron(coarse, np.ones((8, 8, 1)))[:HEIGHT, : 2 * WIDTH]
        texture += rng.normal(0, 6, size=texture.shape)  # sensor-like noise keeps the encoder honest
        textures.append(np.clip(texture, 0, 255).astype(np.uint8))
    return textures


def generate_video(path: Path, minutes: float) -> None:
    """Write a `minutes`-long 640x360 H.264 MP4: panning textures, a moving square, a new scene every 5 s."""
    import av

    rng = np.random.default_rng(0)
    textures = _textures(rng, 6)
    num_frames = round(minutes * 60 * FPS)
    tmp = path.with_suffix(".partial.mp4")
    with av.open(str(tmp), mode="w") as output:
        stream = output.add_stream("libx264", rate=FPS, options={"preset": "veryfast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(num_frames):
            scene, t = divmod(i, 5 * FPS)
            texture = textures[scene % len(textures)]
            offset = (3 * t) % WIDTH
            frame = texture[:, offset : offset + WIDTH].copy()
            x = (40 + 5 * t) % (WIDTH - 64)
            frame[140:204, x : x + 64] = (255, 255 - 2 * t % 256, 40)
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = i
            output.mux(stream.encode(video_frame))
        output.mux(stream.encode(None))
    tmp.rename(path)


def _full_rgb(path: str) -> list[np.ndarray]:
    """The original's method: every frame decoded and converted to RGB; the needed ones kept."""
    import av

    from videotgb.video_io import flow_pair_ends, probe_video, sample_candidate_indices, sample_flow_indices

    num_frames = probe_video(path).num_frames
    flows = sample_flow_indices(num_frames, MAX_FLOW_STEPS)
    wanted = sample_candidate_indices(num_frames, NUM_CANDIDATES) + flows + flow_pair_ends(flows, num_frames)
    wanted_set = set(wanted)
    kept = {}
    with av.open(path) as container:
        for index, frame in enumerate(container.decode(video=0)):
            rgb = frame.to_ndarray(format="rgb24")
            if index in wanted_set:
                kept[index] = rgb
    return [kept[index] for index in wanted]


def worker(method: str, path: str) -> dict:
    """Run one method in this process; report seconds, memory and a checksum of the frames."""
    from videotgb.video_io import read_video

    baseline = _rss_mib()
    start = time.perf_counter()
    if method == "full_rgb":
        frames = _full_rgb(path)
    else:
        clip = read_video(path, NUM_CANDIDATES, MAX_FLOW_STEPS, strategy=method)
        frames = [*clip.candidate_frames, *clip.flow_frames, *clip.flow_next_frames]
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    digest = hashlib.sha1()
    for frame in frames:
        digest.update(np.ascontiguousarray(frame).tobytes())
    return {"seconds": seconds, "peak_mib": peak, "extra_mib": peak - baseline, "sha1": digest.hexdigest()[:12]}


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60], help="video lengths to run")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "videotgb" / "bench_videos",
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs per method (the median time is shown)")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return

    args.cache_dir.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
    )
    rows = []
    for minutes in args.minutes:
        path = args.cache_dir / f"h264_{WIDTH}x{HEIGHT}_{minutes:g}min.mp4"
        if not path.exists():
            print(f"generating {path} ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            generate_video(path, minutes)
            print(f"  done in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        results = {}
        for method in args.methods:
            runs = []
            for _ in range(args.repeats):
                command = [sys.executable, __file__, "--worker", method, str(path)]
                completed = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
                runs.append(json.loads(completed.stdout.strip().splitlines()[-1]))
                print(f"{minutes:g} min {method}: {runs[-1]}", file=sys.stderr, flush=True)
            results[method] = sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]
        reference = results.get("full_rgb")
        for method, result in results.items():
            rows.append((minutes, method, result, reference))

    print(f"\n{'video':>7} {'method':>11} {'time s':>8} {'x faster':>9} {'peak MiB':>9} {'+MiB':>7}  same frames")
    for minutes, method, result, reference in rows:
        speedup = f"{reference['seconds'] / result['seconds']:.1f}" if reference else "-"
        same = "-" if reference is None else ("yes" if result["sha1"] == reference["sha1"] else "NO")
        print(
            f"{minutes:>5g} m {method:>11} {result['seconds']:>8.2f} {speedup:>9} {result['peak_mib']:>9.0f} "
            f"{result['extra_mib']:>7.0f}  {same}"
        )


if __name__ == "__main__":
    main()
