"""Time and peak memory of reading VideoTGB's frames (32 candidates + 64 flow pairs) from long videos.

Compares, on generated 640x360 H.264 videos of 1, 10 and 60 minutes (30 fps, x264 ``veryfast`` with its default
250-frame keyframe interval and B-frames, a scene change every 5 s):

- ``full_rgb``: the original code's method: decode every frame and convert each to RGB, keep the 160 needed
  (32 candidates and the 64 pairs of consecutive frames that the flow steps compare);
- ``auto``, ``seek``, ``sequential``: :func:`videotgb.video_io.read_video` with that strategy;
- ``keyframe``: :func:`videotgb.video_io.read_video` with ``alignment="keyframe"`` (other frames by design: each
  candidate and flow step moved to a keyframe; the table adds how far they moved), its seek groups decoded by as
  many threads as the machine's CPUs allow (at most 4); ``keyframe_1thread``: the same on one thread;
- ``pyav_seek_each``: PyAV's plain seek per target: for each of the 160 frames, ``container.seek`` to its timestamp
  (``backward=True``, landing on the keyframe before it) and decode until that frame, nothing reused;
- ``torchcodec``: ``torchcodec.decoders.VideoDecoder(path).get_frames_at(indices)``, the same 160 indices;
- ``decord``: ``decord.VideoReader(path).get_batch(indices)``, the same 160 indices.

Each measurement runs in a fresh subprocess, so its peak resident memory (``ru_maxrss``) is its own; the table shows
the peak minus the process's resident memory after imports. Every method's frames are checked against
``full_rgb``'s: checksums, and where they differ the largest and mean absolute pixel difference. The keyframe mode is
checked against the frames ``full_rgb`` decodes at the indices the keyframe clip reports (one more, untimed, run).
Videos are generated once into a cache folder (~20 s per minute of video on 2 cores).

Usage::

    python benchmarks/bench_video_io.py                 # 1, 10 and 60 minutes
    python benchmarks/bench_video_io.py --minutes 1 10  # a subset
    python benchmarks/bench_video_io.py --minutes 1 --repeats 3 --cache-dir /tmp/videos
    python benchmarks/bench_video_io.py --json results.json --plot time.png  # also write the rows and a plot
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, FPS = 640, 360, 30
NUM_CANDIDATES, MAX_FLOW_STEPS = 32, 64
METHODS = (
    "full_rgb",
    "auto",
    "seek",
    "sequential",
    "keyframe",
    "keyframe_1thread",
    "pyav_seek_each",
    "torchcodec",
    "decord",
)


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


def _exact_indices(path: str) -> list[int]:
    """The 160 frames VideoTGB reads exactly: 32 candidates, then the 64 flow steps' first and second frames."""
    from videotgb.video_io import flow_pair_ends, probe_video, sample_candidate_indices, sample_flow_indices

    num_frames = probe_video(path).num_frames
    flows = sample_flow_indices(num_frames, MAX_FLOW_STEPS)
    return sample_candidate_indices(num_frames, NUM_CANDIDATES) + flows + flow_pair_ends(flows, num_frames)


def _full_rgb(path: str, wanted: list[int]) -> list[np.ndarray]:
    """The original's method: every frame decoded and converted to RGB; the needed ones kept."""
    import av

    wanted_set = set(wanted)
    kept = {}
    with av.open(path) as container:
        for index, frame in enumerate(container.decode(video=0)):
            rgb = frame.to_ndarray(format="rgb24")
            if index in wanted_set:
                kept[index] = rgb
    return [kept[index] for index in wanted]


def _pyav_seek_each(path: str, wanted: list[int]) -> list[np.ndarray]:
    """PyAV's plain seek per target: seek to the frame's timestamp and decode until it, for each frame anew."""
    import av

    frames = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        start = stream.start_time or 0
        ticks_per_frame = 1 / (stream.average_rate * stream.time_base)
        for index in wanted:
            target = start + round(index * ticks_per_frame)
            container.seek(target, stream=stream, backward=True)
            frame = next(frame for frame in container.decode(stream) if frame.pts >= target)
            frames.append(frame.to_ndarray(format="rgb24"))
    return frames


def _torchcodec(path: str, wanted: list[int]) -> np.ndarray:
    from torchcodec.decoders import VideoDecoder

    return VideoDecoder(path).get_frames_at(wanted).data.permute(0, 2, 3, 1).numpy()


def _decord(path: str, wanted: list[int]) -> np.ndarray:
    import decord

    return decord.VideoReader(path).get_batch(wanted).asnumpy()


def _shift_stats(path: str, clip) -> dict:
    """How far the keyframe clip's candidates and flow steps moved from their exact places, in seconds."""
    from videotgb.video_io import _open_and_index, sample_candidate_indices, sample_flow_indices

    _, scan, metadata = _open_and_index(path, None, None)
    exact = sample_candidate_indices(metadata.num_frames, NUM_CANDIDATES) + sample_flow_indices(
        metadata.num_frames, MAX_FLOW_STEPS
    )
    read = np.concatenate([clip.candidate_timestamps, clip.flow_timestamps])
    shifts = np.abs(read - scan.timestamps(exact, metadata.fps))
    bin_s = metadata.duration_s / NUM_CANDIDATES
    return {
        "shift_max_s": float(shifts.max()),
        "shift_mean_s": float(shifts.mean()),
        "bin_s": bin_s,
        "shift_max_bins": float(shifts.max() / bin_s),
        "shift_mean_bins": float(shifts.mean() / bin_s),
        "alignment": clip.alignment,
        "alignment_note": clip.alignment_note,
    }


def worker(method: str, path: str, save: str | None = None, indices: str | None = None) -> dict:
    """Run one method in this process; report seconds, memory and a checksum of the frames.

    ``indices`` (comma-separated) replaces the 160 exact frames (``full_rgb`` only: the keyframe mode's check);
    ``save`` names a ``.npy`` file to write the frames to, after the measurement.
    """
    import av  # noqa: F401  (imports are not part of the measurement)

    from videotgb.video_io import flow_pair_ends, read_video

    if method == "torchcodec":
        import torchcodec.decoders  # noqa: F401  (imports are not part of the measurement)
    elif method == "decord":
        import decord  # noqa: F401
    wanted = [int(index) for index in indices.split(",")] if indices else _exact_indices(path)
    baseline = _rss_mib()
    start = time.perf_counter()
    extra = {}
    if method in READERS:
        frames = READERS[method](path, wanted)
    else:
        keyframe = method.startswith("keyframe")
        clip = read_video(
            path,
            NUM_CANDIDATES,
            MAX_FLOW_STEPS,
            strategy="auto" if keyframe else method,
            alignment="keyframe" if keyframe else "exact",
            threads=1 if method.endswith("_1thread") else None,
        )
        frames = [*clip.candidate_frames, *clip.flow_frames, *clip.flow_next_frames]
        if keyframe:
            ends = flow_pair_ends(clip.flow_indices, clip.metadata.num_frames)
            extra = {"indices": clip.candidate_indices + clip.flow_indices + ends}
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stacked = np.stack([np.ascontiguousarray(frame) for frame in frames])
    if method.startswith("keyframe"):
        extra.update(_shift_stats(path, clip))
    if save:
        np.save(save, stacked)
    digest = hashlib.sha1(stacked.tobytes()).hexdigest()[:12]
    return {"seconds": seconds, "peak_mib": peak, "extra_mib": peak - baseline, "sha1": digest, **extra}


READERS = {"full_rgb": _full_rgb, "pyav_seek_each": _pyav_seek_each, "torchcodec": _torchcodec, "decord": _decord}


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _run_worker(
    env: dict, method: str, path: Path, save: Path | None = None, indices: list[int] | None = None
) -> dict:
    command = [sys.executable, __file__, "--worker", method, str(path)]
    if save is not None:
        command += ["--save", str(save)]
    if indices is not None:
        command += ["--indices", ",".join(map(str, indices))]
    completed = subprocess.run(command, capture_output=True, text=True, env=env)
    if completed.returncode:
        return {"error": (completed.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _compare(frames_file: Path, reference_file: Path) -> dict:
    """Largest and mean absolute difference between two saved frame stacks."""
    frames, reference = np.load(frames_file), np.load(reference_file)
    if frames.shape != reference.shape:
        return {"same": False, "diff": f"shape {frames.shape} vs {reference.shape}"}
    difference = np.abs(frames.astype(np.int16) - reference.astype(np.int16))
    return {"same": not difference.any(), "max_diff": int(difference.max()), "mean_diff": float(difference.mean())}


def _measure(minutes: float, path: Path, methods: list[str], repeats: int, env: dict, scratch: Path) -> list[dict]:
    """The rows for one video: the median of ``repeats`` runs per method, each compared with ``full_rgb``.

    The repeats are interleaved (every method once, then every method again, ...), so that a slow spell of the machine
    falls on all methods alike.
    """
    runs: dict[str, list[dict]] = {method: [] for method in methods}
    for repeat in range(repeats):
        for method in methods:
            if runs[method] and "error" in runs[method][-1]:
                continue
            save = scratch / f"{method}.npy" if repeat == 0 else None
            runs[method].append(_run_worker(env, method, path, save))
            print(f"{minutes:g} min {method}: {runs[method][-1]}", file=sys.stderr, flush=True)
    results = {}
    for method in methods:
        timed = sorted((run for run in runs[method] if "error" not in run), key=lambda run: run["seconds"])
        result = dict(timed[len(timed) // 2]) if timed else dict(runs[method][-1])
        result["all_seconds"] = [run["seconds"] for run in timed]
        results[method] = result
    aligned = [method for method in methods if method.startswith("keyframe") and "indices" in results[method]]
    checks: dict[tuple[int, ...], tuple[Path, str]] = {}  # one full decode per set of indices
    for method in aligned:
        indices = tuple(results[method]["indices"])
        if indices not in checks:
            reference_file = scratch / f"full_rgb_at_{method}.npy"
            checks[indices] = reference_file, _run_worker(env, "full_rgb", path, reference_file, list(indices))["sha1"]
        reference_file, results[method]["reference_sha1"] = checks[indices]
        results[method].update(_compare(scratch / f"{method}.npy", reference_file))
    reference = results.get("full_rgb")
    rows = []
    for method, result in results.items():
        result.pop("indices", None)
        if reference and "error" not in result:
            result["speedup"] = reference["seconds"] / result["seconds"]
            if method not in aligned:
                result.update(_compare(scratch / f"{method}.npy", scratch / "full_rgb.npy"))
        rows.append({"minutes": minutes, "method": method, **result})
    return rows


def _same(row: dict) -> str:
    if "same" not in row:
        return "-"
    if row["same"]:
        return "yes"
    if "max_diff" in row:
        return f"no (max {row['max_diff']}, mean {row['mean_diff']:.2f})"
    return f"no ({row['diff']})"


def format_table(rows: list[dict]) -> str:
    """A markdown table of the rows: time, spread, speed-up, memory, frames check, keyframe shift."""
    lines = [
        "| video | method | time (s) | runs (s) | × faster than `full_rgb` | +MiB | same frames | shift max / mean (s) "
        "| shift max / mean (bins) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['minutes']:g} min | `{row['method']}` | failed: {row['error']} |||||||")
            continue
        runs = ", ".join(f"{seconds:.2f}" for seconds in row["all_seconds"])
        shift = bins = "-"
        if "shift_max_s" in row:
            shift = f"{row['shift_max_s']:.2f} / {row['shift_mean_s']:.2f}"
            bins = f"{row['shift_max_bins']:.3f} / {row['shift_mean_bins']:.3f}"
        speedup = f"{row['speedup']:.1f}" if "speedup" in row else "-"
        lines.append(
            f"| {row['minutes']:g} min | `{row['method']}` | {row['seconds']:.2f} | {runs} | {speedup} "
            f"| {row['extra_mib']:.0f} | {_same(row)} | {shift} | {bins} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Reading time against video length, one line per method (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(row["method"] for row in rows):
        points = sorted(
            (row["minutes"], row["seconds"]) for row in rows if row["method"] == method and "error" not in row
        )
        if points:
            axes.plot([x for x, _ in points], [y for _, y in points], marker="o", label=method)
    axes.set(xscale="log", yscale="log", xlabel="video length (minutes)", ylabel="reading time (s)")
    axes.set_title("Reading 32 candidates + 64 flow pairs, 640x360 H.264")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


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
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--plot", type=Path, help="also plot reading time against video length to this image")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    parser.add_argument("--indices", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, save=args.save, indices=args.indices)))
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
        with tempfile.TemporaryDirectory() as scratch:
            rows += _measure(minutes, path, args.methods, args.repeats, env, Path(scratch))
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
