"""The synthetic benchmark of a model made by `videotgb synthetic train`: accuracy, grounding and cost on the test
split, the held-out colour-direction pairs, and videos 8 and 16 times longer than those trained on.

For each set it generates the videos (`videotgb synthetic generate`, the model's recipe settings, the test seed
given here), runs `videotgb.synthetic.evaluate.evaluate` in the four modes (uniform-K, dense, bridge-K, oracle-K) and
saves the results; then prints one Markdown table over all sets and draws the accuracy chart.

Sets (frames of the training videos ``T``, their events ``E`` frames long):

- ``test``, ``held_out``: ``T`` frames, as trained; the bridge reads the processor's 64 flow steps.
- ``8x``, ``16x``: ``8T`` / ``16T`` frames with the same events (``E`` frames, as much motion per frame), the bridge
  reading its limit of 510 flow steps (as dense in time as training at 8x); ``8x@64``: the same videos with the 64
  steps of training, for comparison.
- ``8x-slow``: ``8T`` frames with events ``8E`` long: the same fraction of the video, but 8 times slower motion.

Run from the repository root (about 15 minutes on 2 CPU cores with the defaults):

    python benchmarks/bench_synthetic.py --model videotgb/default_model --data outputs/bench-synthetic \\
        --output benchmarks/results/synthetic
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from videotgb.demo import recipe_of
from videotgb.synthetic import SyntheticConfig, generate, load_index
from videotgb.synthetic.evaluate import evaluate, plot_results


def sets(recipe: dict, videos: int, long_videos: int) -> list[tuple[str, dict, dict]]:
    """(name, generator settings, evaluate() keywords) of every set."""
    settings = recipe["settings"]
    frames, event = settings["frames"], settings["event_frames"]
    base = {
        "fps": settings["fps"],
        "size": settings["size"],
        "events_per_video": settings["events_per_video"],
        "question_types": tuple(settings["question_types"]),
    }
    return [
        ("test", base | {"num_videos": {"test": videos}, "num_frames": frames, "event_frames": event}, {}),
        # the test videos with a keyframe every 3 frames (86 in 256 frames: as dense per candidate bin as a long real
        # video's), read exactly and keyframe-aligned: the accuracy that aligned reading costs
        (
            "test@kf3",
            base
            | {"num_videos": {"test": videos}, "num_frames": frames, "event_frames": event, "keyframe_interval": 3},
            {"frame_alignment": "exact"},
        ),
        (
            "test@kf3-aligned",
            base
            | {"num_videos": {"test": videos}, "num_frames": frames, "event_frames": event, "keyframe_interval": 3},
            {"frame_alignment": "keyframe"},
        ),
        (
            "held_out",
            base | {"num_videos": {"held_out": videos}, "num_frames": frames, "event_frames": event},
            {"split": "held_out"},
        ),
        (
            "8x",
            base | {"num_videos": {"test": long_videos}, "num_frames": 8 * frames, "event_frames": event},
            {"max_flow_steps": 510},
        ),
        (
            "8x@64",
            base | {"num_videos": {"test": long_videos}, "num_frames": 8 * frames, "event_frames": event},
            {"max_flow_steps": 64},
        ),
        (
            "16x",
            base | {"num_videos": {"test": long_videos}, "num_frames": 16 * frames, "event_frames": event},
            {"max_flow_steps": 510},
        ),
        (
            "8x-slow",
            base | {"num_videos": {"test": long_videos}, "num_frames": 8 * frames, "event_frames": 8 * event},
            {"max_flow_steps": 510},
        ),
    ]


def table(results: dict[str, dict]) -> str:
    """One Markdown table over all sets: accuracy per mode, grounding, and the bridge's cost."""
    lines = [
        "| set | frames | flow steps | uniform-K | dense | bridge-K | oracle-K | bridge / oracle | bridge / uniform "
        "| mIoU | R@0.3 | R@0.5 | random R@0.5 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        accuracy = {mode: metrics["accuracy"] for mode, metrics in result["modes"].items()}
        grounding, random_span = result["grounding"], result["baselines"]["random_span"]
        settings = result["settings"]
        ratio_oracle = accuracy["bridge"] / accuracy["oracle"] if accuracy["oracle"] else float("nan")
        ratio_uniform = accuracy["bridge"] / accuracy["uniform"] if accuracy["uniform"] else float("inf")
        lines.append(
            f"| {name} | {'/'.join(map(str, settings['num_frames']))} | {settings['max_flow_steps']} "
            + " ".join(f"| {accuracy[mode]:.3f}" for mode in ("uniform", "dense", "bridge", "oracle"))
            + f" | {ratio_oracle:.2f} | {ratio_uniform:.1f} | {grounding['miou']:.3f} "
            f"| {grounding['r@0.3']:.3f} | {grounding['r@0.5']:.3f} | {random_span['r@0.5']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="videotgb/default_model", help="a model of videotgb synthetic train")
    parser.add_argument("--data", default="outputs/bench-synthetic", help="folder for the generated sets")
    parser.add_argument("--output", default="outputs/bench-synthetic/results", help="folder for results and plot")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated sets (default: %(default)s)")
    parser.add_argument("--videos", type=int, default=200, help="videos of test and held_out (default: %(default)s)")
    parser.add_argument(
        "--long-videos", type=int, default=100, help="videos of each longer set (default: %(default)s)"
    )
    parser.add_argument("--sets", default=None, help="comma-separated names of the sets to run (default: all)")
    arguments = parser.parse_args()

    recipe = recipe_of(arguments.model)
    if recipe is None:
        parser.error(
            f"--model {arguments.model}: no recipe.json; this benchmark needs a model of videotgb synthetic train"
        )
    output = Path(arguments.output)
    output.mkdir(parents=True, exist_ok=True)
    chosen = sets(recipe, arguments.videos, arguments.long_videos)
    if arguments.sets:
        wanted = arguments.sets.split(",")
        chosen = [entry for entry in chosen if entry[0] in wanted]
    results: dict[str, dict] = {}
    made: dict[str, Path] = {}
    for name, settings, keywords in chosen:
        key = json.dumps(settings, sort_keys=True)
        if key not in made:  # 8x and 8x@64 share their videos, as do test@kf3 and test@kf3-aligned
            folder = Path(arguments.data) / name
            config = SyntheticConfig(seed=arguments.seed, **settings)
            if not (folder / "index.json").is_file() or load_index(folder)["settings"] != config.to_dict():
                generate(config, folder, overwrite=True, progress=True)
            made[key] = folder
        results[name] = evaluate(arguments.model, made[key], progress=True, **keywords)
        (output / f"{name}.json").write_text(json.dumps(results[name], indent=1) + "\n", encoding="utf-8")
        print(f"{name}: " + ", ".join(f"{m} {v['accuracy']:.3f}" for m, v in results[name]["modes"].items()))
    summary = table(results)
    (output / "summary.md").write_text(summary + "\n", encoding="utf-8")
    plot_results(list(results.values()), output / "accuracy.png", labels=list(results))
    print(summary)
    machine = next(iter(results.values()))["machine"]
    print(f"\nmachine: {json.dumps(machine)}")


if __name__ == "__main__":
    main()
