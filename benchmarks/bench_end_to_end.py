"""End-to-end answer time and peak memory against video length: VideoTGB's bridge against uniform and dense frames.

For generated 640x360 H.264 videos of 1, 10 and 60 minutes (``bench_video_io.generate_video``: 30 fps, x264
``veryfast``, a scene change every 5 s), the same model (the shipped tiny VideoTGB by default, or ``--model``)
answers one question per video with:

- ``bridge_exact``: 32 candidates and 64 flow steps read at their exact places, flow, the bridge picks K = 4;
- ``bridge_keyframe``: the same with keyframe-aligned reading (``frame_alignment="keyframe"``);
- ``uniform``: K evenly spaced frames read and answered from (no flow, no bridge);
- ``dense``: all 32 candidates read and answered from (no flow, no bridge; 8x the visual tokens).

Each (video, method) runs in a fresh subprocess after one untimed warm-up answer on a short clip, so memory and
timings are its own: the process's peak resident memory during the answer (sampled every 2 ms), and the part of it
above the process after imports, model load and warm-up (``+MiB``, what the answer itself needs). The answer time is split into
decode, flow, inputs (tokenising, normalising), bridge, vision tower + Q-Former (with the projection) and language
model, timed with forward hooks. The table reports each method's 60-min / 1-min ratio of time and memory.

``--cli`` also times what a user waits for ``videotgb answer`` from the shell on the 1-minute video (a new process:
imports, model load, reading, answering), next to ``python -c "import videotgb.cli"`` alone.

Usage::

    python benchmarks/bench_end_to_end.py --minutes 1 10 60 --repeats 3 --cli
    python benchmarks/bench_end_to_end.py --minutes 1 10 --methods bridge_exact bridge_keyframe
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
METHODS = ("bridge_exact", "bridge_keyframe", "uniform", "dense")
QUESTION = "What colour is the square that moves right?"
STAGES = ("decode", "flow", "inputs", "bridge", "vision_qformer", "language_model")


class StageTimer:
    """Wall time spent inside the model's top-level modules, with forward hooks (outermost calls only)."""

    GROUPS = {
        "bridge": "bridge",
        "vision_model": "vision_qformer",
        "qformer": "vision_qformer",
        "language_projection": "vision_qformer",
        "language_model": "language_model",
    }

    def __init__(self, model):
        self.seconds = dict.fromkeys(set(self.GROUPS.values()), 0.0)
        self.started: dict[str, float] = {}
        for name, group in self.GROUPS.items():
            module = getattr(model, name)
            module.register_forward_pre_hook(self._pre(group))
            module.register_forward_hook(self._post(group))

    def _pre(self, group):
        def hook(module, args):
            self.started.setdefault(group, time.perf_counter())

        return hook

    def _post(self, group):
        def hook(module, args, output):
            self.seconds[group] += time.perf_counter() - self.started.pop(group)

        return hook


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakMemory:
    """Highest resident memory (MiB) of this process while the block runs, sampled every 2 ms by a thread
    (``ru_maxrss`` cannot be reset, and model loading already set it)."""

    def __enter__(self) -> PeakMemory:
        self.peak = _rss_mib()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.002):
            self.peak = max(self.peak, _rss_mib())

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mib())


def _answer(method: str, video: str, model, processor, dense_model) -> dict:
    """Answer QUESTION about `video` with `method`; stage seconds and the answer."""
    import torch

    from videotgb.video_io import read_video

    stages = dict.fromkeys(STAGES, 0.0)
    k = model.config.num_keyframes
    started = time.perf_counter()
    if method.startswith("bridge"):
        clip = processor.load_video(video)
    else:
        count = k if method == "uniform" else model.config.num_candidate_frames
        clip = read_video(
            video,
            count,
            1,
            size=processor._decode_size(),
            max_duration_s=processor.max_video_duration_s,
            max_pixels=processor.max_video_pixels,
        )
    stages["decode"] = time.perf_counter() - started

    started = time.perf_counter()
    if method.startswith("bridge"):
        flows = [processor.video_flow(clip)]
    else:
        size = processor.flow_settings().size
        flows = [torch.zeros(1, 2, size, size)]  # not read: the bridge does not run
    stages["flow"] = time.perf_counter() - started

    started = time.perf_counter()
    instance = model
    keyframe_indices = None
    if method == "uniform":  # the K frames read fill the first K candidate slots (the rest are masked)
        keyframe_indices = torch.arange(k)[None]
    elif method == "dense":
        instance = dense_model
        keyframe_indices = torch.arange(model.config.num_candidate_frames)[None]
    inputs = processor([QUESTION], videos=[clip], flows=flows)
    if keyframe_indices is not None:
        inputs = {key: value for key, value in inputs.items() if key not in ("flow", "flow_mask")}
        inputs["keyframe_indices"] = keyframe_indices
    stages["inputs"] = time.perf_counter() - started

    timer = instance._bench_timer
    timer.seconds = dict.fromkeys(timer.seconds, 0.0)
    started = time.perf_counter()
    with torch.inference_mode():
        output = instance.generate(**inputs, max_new_tokens=8, do_sample=False, return_dict_in_generate=True)
    generate_s = time.perf_counter() - started
    timers = timer.seconds
    stages["bridge"] = timers["bridge"]
    stages["vision_qformer"] = timers["vision_qformer"]
    stages["language_model"] = generate_s - timers["bridge"] - timers["vision_qformer"]
    answer = processor.batch_decode(output.sequences, skip_special_tokens=True)[0].strip()
    seconds = [float(clip.candidate_timestamps[i]) for i in output.keyframe_indices[0].tolist()]
    return {"stages": stages, "answer": answer, "keyframe_seconds": seconds, "alignment": clip.alignment}


def worker(method: str, video: str, model_path: str, warmup: str) -> dict:
    """One method on one video in this process: a warm-up answer on `warmup`, then the timed answer."""
    from videotgb.cli import load_model, load_processor

    alignment = "keyframe" if method == "bridge_keyframe" else "exact"
    processor = load_processor(model_path, frame_alignment=alignment)
    model = load_model(model_path, device="cpu")
    dense = None
    if method == "dense":
        dense = load_model(model_path, device="cpu", num_keyframes=model.config.num_candidate_frames)
    for instance in filter(None, (model, dense)):
        instance._bench_timer = StageTimer(instance)
    _answer(method, warmup, model, processor, dense)
    baseline = _rss_mib()
    with PeakMemory() as memory:
        result = _answer(method, video, model, processor, dense)
    result["extra_mib"] = memory.peak - baseline
    result["peak_mib"] = memory.peak
    result["seconds"] = sum(result["stages"].values())
    return result


def _run_worker(method: str, video: Path, model: str, warmup: Path) -> dict:
    command = [sys.executable, __file__, "--worker", method, str(video), model, str(warmup)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{method} on {video.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cli_wait(video: Path, model: str, repeats: int) -> dict:
    """Seconds from the shell: `videotgb answer` as a new process, and importing the CLI alone."""
    cli = [sys.executable, "-m", "videotgb.cli", "answer", "--model", model, "--video", str(video)]
    cli += ["--question", QUESTION, "--max-new-tokens", "8"]
    imports = [sys.executable, "-c", "import videotgb.cli"]
    times: dict[str, list[float]] = {"answer_command_s": [], "import_cli_s": []}
    for _ in range(repeats):
        for key, command in (("answer_command_s", cli), ("import_cli_s", imports)):
            started = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True)
            times[key].append(time.perf_counter() - started)
    return {key: statistics.median(values) for key, values in times.items()} | {"repeats": times}


def machine() -> str:
    import av
    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} CPUs ({cpu}), no GPU used; Python {platform.python_version()}, torch {torch.__version__}, "
        f"PyAV {av.__version__}, {torch.get_num_threads()} torch threads"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--model", default=None, help="checkpoint (default: the shipped tiny model)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per (video, method); medians are shown")
    parser.add_argument("--cli", action="store_true", help="also time `videotgb answer` from the shell")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "videotgb" / "bench_videos",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "end_to_end")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return

    sys.path.insert(0, str(HERE))
    from bench_video_io import generate_video

    from videotgb.demo import DEFAULT_MODEL

    model = args.model or str(DEFAULT_MODEL)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    warmup = args.cache_dir / "warmup_2s.mp4"
    if not warmup.exists():
        generate_video(warmup, 2 / 60)
    rows = []
    for minutes in args.minutes:
        video = args.cache_dir / f"h264_640x360_{minutes:g}min.mp4"
        if not video.exists():
            print(f"generating {video} ...", flush=True)
            generate_video(video, minutes)
        for method in args.methods:
            runs = [_run_worker(method, video, model, warmup) for _ in range(args.repeats)]
            median = sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]
            row = {"minutes": minutes, "method": method, **median, "all_seconds": [r["seconds"] for r in runs]}
            rows.append(row)
            print(f"{minutes:g} min {method}: {row['seconds']:.3f} s, +{row['extra_mib']:.0f} MiB", flush=True)
    results = {"machine": machine(), "model": model, "question": QUESTION, "rows": rows}
    if args.cli:
        results["cli"] = _cli_wait(args.cache_dir / f"h264_640x360_{args.minutes[0]:g}min.mp4", model, args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "table.md").write_text(table(results))
    plot(results, args.out / "end_to_end.png")
    print(table(results))


def table(results: dict) -> str:
    rows = results["rows"]
    lines = [
        "| video | method | answer (s) | " + " | ".join(STAGES) + " | +MiB | peak MiB | answer |",
        "|---|---|---|" + "---|" * len(STAGES) + "---|---|---|",
    ]
    for row in rows:
        stages = " | ".join(f"{row['stages'][stage]:.3f}" for stage in STAGES)
        lines.append(
            f"| {row['minutes']:g} min | `{row['method']}` | {row['seconds']:.3f} | {stages} | "
            f"{row['extra_mib']:.0f} | {row['peak_mib']:.0f} | {row['answer']} |"
        )
    minutes = sorted({row["minutes"] for row in rows})
    if len(minutes) > 1:
        lines += [
            "",
            f"| method | time {minutes[-1]:g} min / {minutes[0]:g} min | peak memory ratio | answer's own memory "
            f"{minutes[0]:g} min → {minutes[-1]:g} min |",
            "|---|---|---|---|",
        ]
        for method in dict.fromkeys(row["method"] for row in rows):
            first = next(r for r in rows if r["method"] == method and r["minutes"] == minutes[0])
            last = next(r for r in rows if r["method"] == method and r["minutes"] == minutes[-1])
            lines.append(
                f"| `{method}` | {last['seconds'] / first['seconds']:.2f} | {last['peak_mib'] / first['peak_mib']:.2f} "
                f"| +{first['extra_mib']:.0f} → +{last['extra_mib']:.0f} MiB |"
            )
    if "cli" in results:
        cli = results["cli"]
        lines += [
            "",
            f"`videotgb answer` from the shell, {minutes[0]:g}-min video: {cli['answer_command_s']:.1f} s, of which "
            f"importing the CLI {cli['import_cli_s']:.1f} s (medians).",
        ]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = results["rows"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for method in dict.fromkeys(row["method"] for row in rows):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["minutes"])
        minutes = [r["minutes"] for r in mine]
        left.plot(minutes, [r["seconds"] for r in mine], marker="o", label=method)
        right.plot(minutes, [r["peak_mib"] for r in mine], marker="o", label=method)
    for axis, label in ((left, "answer time (s)"), (right, "peak resident memory (MiB)")):
        axis.set_xscale("log")
        axis.set_xlabel("video length (min)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    left.legend(fontsize=8)
    figure.suptitle("One answer, shipped tiny model, 2 CPU cores")
    figure.savefig(path, dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    main()
