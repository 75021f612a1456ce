"""`videotgb demo`: the tiny trained VideoTGB shipped with the package answers a question about a synthetic video.

The shipped model (``videotgb/default_model``) was made by `videotgb synthetic train` (its ``recipe.json`` holds the
settings and commands). With no arguments the demo encodes a synthetic video like those of the benchmark's test
split (a still textured scene where a few shapes appear and move; one of them is asked about), answers its
question from the 4 keyframes the bridge picks among 32 candidates, prints the answer against the gold answer and
the keyframe times against the true time of the event, and draws a picture: the keyframe strip and the bridge's
span probability over the whole video with the true span marked. ``--model``, ``--video`` and ``--question`` run the
same on any checkpoint and video.

Not remote code: the model, processor and video files never import this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

DEFAULT_MODEL = Path(__file__).resolve().parent / "default_model"
"""The tiny trained VideoTGB shipped in the package (safetensors, processor and ``recipe.json``)."""

DEMO_SPLIT, DEMO_NUMBER = "test", 0
"""The default video: this scene of the benchmark's test split, with the shipped model's recipe settings."""


@dataclass
class DemoResult:
    """What `run_demo` found: the answer, the keyframes and the bridge's span probability, with the truth when the
    video is synthetic."""

    video: str
    question: str
    answer: str
    keyframe_indices: list[int]
    keyframe_timestamps: list[float]
    keyframe_frames: np.ndarray  # (K, H, W, 3) uint8
    candidate_timestamps: list[float]
    flow_timestamps: list[float]
    span_probability: list[float]  # per flow step: probability that the step lies in the bridge's span
    duration_s: float
    gold: str | None = None
    true_span_s: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def correct(self) -> bool | None:
        if self.gold is None:
            return None
        from .evaluation.metrics import answers_match

        return answers_match(self.answer, self.gold)

    @property
    def keyframes_inside(self) -> int | None:
        if self.true_span_s is None:
            return None
        start, end = self.true_span_s
        return sum(start <= seconds < end for seconds in self.keyframe_timestamps)


def span_probability(start_logits: torch.Tensor, end_logits: torch.Tensor) -> torch.Tensor:
    """Probability that each flow step lies inside the bridge's span, `(steps,)`, from one video's valid start and
    end logits `(steps,)`: with start ``s`` and end ``e`` drawn independently from their softmaxes, a step ``t`` is
    inside when ``s <= t <= e``, so ``P = P(s <= t) * P(e >= t)``.

    >>> span_probability(torch.tensor([0.0, -1e4, -1e4]), torch.tensor([-1e4, 0.0, -1e4])).tolist()
    [1.0, 1.0, 0.0]
    """
    start = torch.softmax(start_logits.float(), -1)
    end = torch.softmax(end_logits.float(), -1)
    started = torch.cumsum(start, -1)
    not_ended = torch.flip(torch.cumsum(torch.flip(end, [-1]), -1), [-1])
    return (started * not_ended).clamp(0, 1)


def recipe_of(model_folder: str | Path) -> dict[str, Any] | None:
    """The ``recipe.json`` of a checkpoint folder made by `videotgb synthetic train`, or None."""
    path = Path(model_folder) / "recipe.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def demo_scene(recipe: dict[str, Any], number: int = DEMO_NUMBER):
    """The default demo video's scene: test video `number` (default 0) generated with the recipe's long-video
    settings."""
    from .synthetic import SyntheticConfig, make_scene

    settings = recipe["settings"]
    config = SyntheticConfig(
        seed=settings["seed"],
        num_videos={DEMO_SPLIT: number + 1},
        num_frames=settings["frames"],
        fps=settings["fps"],
        size=settings["size"],
        events_per_video=settings["events_per_video"],
        event_frames=settings["event_frames"],
        question_types=tuple(settings["question_types"]),
    )
    return make_scene(config, DEMO_SPLIT, number)


def check_question(question: str, recipe: dict[str, Any] | None) -> None:
    """ValueError naming `--question` when it is empty, or when a model of the synthetic recipe (which only ever saw
    questions about motion) is asked a question without a motion word."""
    from .pseudo_spans import words
    from .synthetic import MOTION_WORDS

    if not question.strip():
        raise ValueError("--question is empty")
    if recipe is not None and not set(words(question)) & set(MOTION_WORDS):
        raise ValueError(
            f"--question {question!r}: this model was trained only on questions about motion; ask one with "
            f"{' / '.join(MOTION_WORDS)} (e.g. 'What colour is the shape that moves up?')"
        )


def run_demo(model, processor, video, question: str, max_new_tokens: int = 8) -> DemoResult:
    """Answer `question` about `video` (a path or a `VideoClip`) with `model`; the bridge's span probability too."""
    clip = video if hasattr(video, "candidate_frames") else processor.load_video(video)
    batch = processor([question], videos=[clip]).to(model.device)
    with torch.inference_mode():
        output = model.generate(**batch, return_dict_in_generate=True, max_new_tokens=max_new_tokens, do_sample=False)
        bridge = model.run_bridge(
            batch["flow"], batch["flow_mask"], batch["bridge_input_ids"], batch["bridge_attention_mask"], 1
        )
    steps = int(bridge.flow_lengths[0])
    probability = span_probability(bridge.start_logits[0, :steps], bridge.end_logits[0, :steps])
    indices = output.keyframe_indices[0].tolist()
    metadata = clip.metadata
    duration = metadata.duration_s if metadata is not None and metadata.duration_s else float(clip.flow_timestamps[-1])
    return DemoResult(
        video=str(video) if not hasattr(video, "candidate_frames") else "<clip>",
        question=question,
        answer=processor.batch_decode(output.sequences, skip_special_tokens=True)[0].strip(),
        keyframe_indices=indices,
        keyframe_timestamps=[float(clip.candidate_timestamps[index]) for index in indices],
        keyframe_frames=np.stack([clip.candidate_frames[index] for index in indices]),
        candidate_timestamps=[float(t) for t in clip.candidate_timestamps],
        flow_timestamps=[float(t) for t in clip.flow_timestamps[:steps]],
        span_probability=probability.tolist(),
        duration_s=float(duration),
    )


def demo_figure(result: DemoResult):
    """A matplotlib `Figure` of the keyframe strip (with timestamps) over the bridge's span probability across the
    whole video, the true span shaded when known. Made without pyplot (no global figure to close): it is freed
    with its last reference."""
    from matplotlib.figure import Figure

    count = len(result.keyframe_timestamps)
    figure = Figure(figsize=(2.2 * max(count, 4), 5.2), layout="constrained")
    grid = figure.add_gridspec(2, count, height_ratios=[1.1, 1.0])
    for position, (frame, seconds) in enumerate(zip(result.keyframe_frames, result.keyframe_timestamps, strict=True)):
        axis = figure.add_subplot(grid[0, position])
        axis.imshow(frame, interpolation="nearest")
        axis.set_title(f"keyframe {position + 1}: {seconds:.2f} s", fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    axis = figure.add_subplot(grid[1, :])
    if result.true_span_s is not None:
        axis.axvspan(*result.true_span_s, color="tab:green", alpha=0.25, label="true event")
    axis.plot(result.flow_timestamps, result.span_probability, color="tab:blue", label="bridge: P(in span)")
    for number, seconds in enumerate(result.keyframe_timestamps):
        axis.axvline(seconds, color="tab:red", linestyle="--", linewidth=1, label="keyframes" if number == 0 else None)
    axis.plot(result.candidate_timestamps, [-0.04] * len(result.candidate_timestamps), "|", color="grey",
              label="candidate frames")  # fmt: skip
    axis.set_xlim(0, result.duration_s)
    axis.set_ylim(-0.08, 1.05)
    axis.set_xlabel("time (s)")
    axis.set_ylabel("probability")
    axis.legend(loc="upper right", fontsize=8)
    verdict = "" if result.correct is None else f" (gold: {result.gold})"
    figure.suptitle(f"Q: {result.question}   A: {result.answer}{verdict}", fontsize=11)
    return figure


def plot_demo(result: DemoResult, path: str | Path) -> Path:
    """Save :func:`demo_figure` as PNG at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    demo_figure(result).savefig(path, dpi=100)
    return path


def format_result(result: DemoResult) -> str:
    """The lines `videotgb demo` prints."""
    lines = [f"question: {result.question}"]
    verdict = "" if result.gold is None else f"   (gold: {result.gold}, {'correct' if result.correct else 'wrong'})"
    lines.append(f"answer: {result.answer}{verdict}")
    stamps = ", ".join(f"{seconds:.2f}s" for seconds in result.keyframe_timestamps)
    line = f"keyframes: {stamps} (candidates {result.keyframe_indices})"
    if result.true_span_s is not None:
        start, end = result.true_span_s
        line += (
            f"; true event {start:.2f}s-{end:.2f}s: {result.keyframes_inside} of {len(result.keyframe_indices)} inside"
        )
    lines.append(line)
    return "\n".join(lines)


__all__ = [
    "DEFAULT_MODEL",
    "DemoResult",
    "check_question",
    "demo_figure",
    "demo_scene",
    "format_result",
    "plot_demo",
    "recipe_of",
    "run_demo",
    "span_probability",
]
