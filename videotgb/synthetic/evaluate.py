"""The benchmark of the synthetic data: `videotgb synthetic eval` (docs/synthetic.md#evaluating).

A VideoTGB answers every question of one split of a generated folder in several **modes**, which differ only in the
frames the language model sees; each video is decoded once and its batch built once for all of them:

- ``uniform``: the K bin-midpoint candidates, whatever the question (what a plain video-LLM with K frames reads);
- ``dense``: all candidate frames (a second instance of the model, loaded with ``num_keyframes`` = candidates);
- ``bridge``: the K keyframes that the Temporal Grounding Bridge picks from optical flow and the question (VideoTGB);
- ``oracle``: the candidates inside the asked event's true span, brought to K.

Answers are scored by exact match of their words with the gold answer. The bridge's most likely span is compared
with the true span (IoU in frames, against a span of the true length placed at random), and every mode's keyframes
are checked against the true span. Costs (frames through the vision tower, visual tokens through the language
model, seconds per answer, and the reading time per video that all modes share) come with the accuracies.

Not remote code: the model, processor and video files never import this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..evaluation.metrics import IOU_THRESHOLDS, answers_match, interval_iou
from ..keyframes import bin_midpoints, draw_spans, reduce_to_k
from .generator import SPLITS, load_index, samples

MODES = ("uniform", "dense", "bridge", "oracle")
"""Every mode, in the order of the report (cheapest first; ``oracle`` is the upper bound of K keyframes)."""

MAX_NEW_TOKENS = 4
"""Answers are single words: a few tokens are enough, and greedy decoding makes them deterministic."""


class EvaluationError(ValueError):
    """An impossible evaluation setting, named by its flag."""


# ---- pure functions --------------------------------------------------------------------------------------------


def bridge_span_frames(start_step: int, end_step: int, flow_indices: Sequence[int]) -> tuple[int, int]:
    """The frames ``[first, last + 1)`` a flow-step span covers: from the first frame of flow step `start_step` to
    that of `end_step`, both included; empty (``(first, first)``) when the end comes before the start.

    Examples:
        >>> bridge_span_frames(1, 2, [0, 4, 8, 12])
        (4, 9)
        >>> bridge_span_frames(2, 1, [0, 4, 8, 12])
        (8, 8)
    """
    first = int(flow_indices[start_step])
    if end_step < start_step:
        return first, first
    return first, int(flow_indices[end_step]) + 1


def random_span_baseline(start: int, end: int, num_frames: int, thresholds: Sequence[float] = IOU_THRESHOLDS) -> dict:
    """Expected IoU and recalls of a span as long as ``[start, end)`` placed uniformly at random in the video.

    Every placement ``[p, p + L)``, ``0 <= p <= num_frames - L``, is equally likely; the expectations are exact
    averages over them (no sampling).

    Returns:
        ``{"miou": float, "r@0.3": float, "r@0.5": float}`` (one recall per threshold).

    Example (a 2-frame span in a 4-frame video: placements 0, 1, 2 give IoU 1, 1/3, 0):
        >>> random_span_baseline(0, 2, 4)
        {'miou': 0.4444444444444444, 'r@0.3': 0.6666666666666666, 'r@0.5': 0.3333333333333333}
    """
    length = end - start
    if not 0 <= start < end <= num_frames:
        raise ValueError(f"span [{start}, {end}) must be a non-empty part of the video's {num_frames} frames")
    placements = np.arange(num_frames - length + 1)
    overlap = np.clip(np.minimum(placements + length, end) - np.maximum(placements, start), 0, None)
    iou = overlap / (2 * length - overlap)
    return {"miou": float(iou.mean()), **{_recall_key(t): float((iou >= t).mean()) for t in thresholds}}


def oracle_candidates(
    candidate_frames: Sequence[int], start: int, end: int, num_keyframes: int
) -> tuple[list[int], bool]:
    """The oracle's keyframes: the candidates whose frame lies in ``[start, end)``, brought to `num_keyframes` with
    :func:`videotgb.keyframes.reduce_to_k`; when none does (a span shorter than the candidates' spacing), the
    candidate nearest the span's middle.

    Returns:
        The candidate indices and whether the nearest candidate had to stand in.

    Examples:
        >>> oracle_candidates([0, 4, 8, 12, 16], 3, 10, 4)
        ([1, 1, 2, 2], False)
        >>> oracle_candidates([0, 4, 8, 12, 16], 9, 11, 4)
        ([2, 2, 2, 2], True)
    """
    inside = [index for index, frame in enumerate(candidate_frames) if start <= frame < end]
    fallback = not inside
    if fallback:
        middle = (start + end - 1) / 2
        inside = [min(range(len(candidate_frames)), key=lambda index: abs(candidate_frames[index] - middle))]
    return reduce_to_k(inside, len(candidate_frames), num_keyframes), fallback


def _recall_key(threshold: float) -> str:
    return f"r@{threshold:g}"


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


# ---- evaluation ------------------------------------------------------------------------------------------------


def check_modes(modes: str | Iterable[str]) -> tuple[str, ...]:
    """The modes to run, in :data:`MODES` order, from a comma-separated string or a list; EvaluationError naming
    ``--modes`` for an unknown or empty choice."""
    chosen = [mode.strip() for mode in (modes.split(",") if isinstance(modes, str) else modes)]
    unknown = [mode for mode in chosen if mode not in MODES]
    if unknown or not chosen:
        raise EvaluationError(
            f"--modes {','.join(chosen)!r}: unknown mode(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"choose from {', '.join(MODES)}"
        )
    return tuple(mode for mode in MODES if mode in chosen)


def _check_positive(flag: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise EvaluationError(f"{flag} {value!r}: must be a positive integer")


def check_new_file(path: str | os.PathLike | None, flag: str, overwrite: bool) -> None:
    """Refuse to replace an existing file (FileExistsError naming `flag`) unless `overwrite`."""
    if path is not None and Path(path).exists() and not overwrite:
        raise FileExistsError(f"{flag} {path}: the file exists; choose another name or pass --overwrite")


def _load_models(
    model_path: str,
    modes: tuple[str, ...],
    max_flow_steps: int | None,
    device: str | None,
    frame_alignment: str | None = None,
):
    """The processor, the model and (for ``dense``) a second instance that reads every candidate frame."""
    from ..cli import load_model, load_processor
    from ..configuration_videotgb import VideoTGBConfig

    processor = load_processor(model_path, frame_alignment=frame_alignment)
    if max_flow_steps is not None:
        limit = VideoTGBConfig.from_pretrained(model_path).bridge_config.max_flow_steps
        if max_flow_steps > limit:
            raise EvaluationError(
                f"--max-flow-steps {max_flow_steps}: the bridge of {model_path} reads at most {limit} flow steps "
                "(bridge_config.max_position_embeddings - 2)"
            )
        processor.max_flow_steps = max_flow_steps
    model = load_model(model_path, device=device)
    processor.check_model_config(model.config)
    dense = None
    if "dense" in modes:
        dense = load_model(model_path, device=model.device, num_keyframes=model.config.num_candidate_frames)
    return processor, model, dense


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine_description(device: torch.device) -> dict[str, Any]:
    """Where the timings were measured."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


def evaluate(
    model_path: str | os.PathLike,
    data: str | os.PathLike,
    split: str = "test",
    modes: str | Iterable[str] = MODES,
    batch_size: int = 8,
    max_flow_steps: int | None = None,
    limit: int | None = None,
    predictions_path: str | os.PathLike | None = None,
    progress: bool = False,
    device: str | None = None,
    overwrite: bool = False,
    frame_alignment: str | None = None,
) -> dict[str, Any]:
    """Answer every question of `split` of a generated folder in every mode, and measure answers, grounding and cost.

    Args:
        model_path: VideoTGB checkpoint (folder or Hub id) with its processor.
        data: a folder written by `videotgb synthetic generate`.
        split: ``train``, ``validation``, ``test`` or ``held_out``.
        modes: some of :data:`MODES` (a list or a comma-separated string).
        batch_size: videos decoded and answered together.
        max_flow_steps: flow steps the bridge reads per video, instead of the processor's (at most the bridge's
            ``max_flow_steps``); more than in training is the extrapolation test on longer videos.
        limit: answer only the first `limit` samples of the split.
        predictions_path: JSONL file, one line per sample, written as the samples are answered.
        progress: show a progress bar over batches.
        device: cpu, cuda, cuda:1 ... (default: CUDA when available).
        overwrite: replace an existing `predictions_path`.
        frame_alignment: ``"exact"`` or ``"keyframe"`` reading of the videos (default: the processor's setting); the
            results' ``alignment`` says how many videos were read aligned and how far their frames moved.

    Returns:
        A JSON-ready dict: ``settings``, ``modes`` (per mode: accuracy overall and per question type, cost, keyframes
        inside the true span), ``grounding`` (the bridge's span against the true span), ``baselines`` (a random
        span of the true length), ``timing`` (reading time per video) and ``machine``.
    """
    modes = check_modes(modes)
    _check_positive("--batch-size", batch_size)
    _check_positive("--limit", limit)
    _check_positive("--max-flow-steps", max_flow_steps)
    if split not in SPLITS:
        raise EvaluationError(f"--split {split!r}: expected one of {', '.join(SPLITS)}")
    data = Path(data)
    chosen = samples(load_index(data), split)[:limit]
    for sample in chosen:
        if sample.get("start_frame") is None:
            raise EvaluationError(
                f"{data} --split {split}: sample {sample['id']} has no event (made with --events-per-video 0), so "
                "there is no span to ground or keyframes to choose; evaluate on videos with events"
            )
        if not (data / sample["file"]).is_file():
            raise FileNotFoundError(f"{data / sample['file']}: no such video file (sample {sample['id']} of {data})")
    check_new_file(predictions_path, "--predictions", overwrite)

    started = time.perf_counter()
    processor, model, dense_model = _load_models(str(model_path), modes, max_flow_steps, device, frame_alignment)
    load_seconds = time.perf_counter() - started
    instances = {mode: dense_model if mode == "dense" else model for mode in modes}
    state = _Accumulator(modes)
    with (
        contextlib.ExitStack() as stack,
        tqdm(total=len(chosen), desc="synthetic eval", unit="video", disable=not progress) as bar,
    ):
        predictions = None
        if predictions_path is not None:
            Path(predictions_path).parent.mkdir(parents=True, exist_ok=True)
            predictions = stack.enter_context(open(predictions_path, "w", encoding="utf-8"))
        for first in range(0, len(chosen), batch_size):
            batch_samples = chosen[first : first + batch_size]
            for line in _answer_batch(batch_samples, data, processor, model, instances, state):
                if predictions is not None:
                    predictions.write(json.dumps(line) + "\n")
                    predictions.flush()
            bar.update(len(batch_samples))
    bridge_limit = model.config.bridge_config.max_flow_steps
    settings = {
        "model": str(model_path),
        "data": str(data),
        "split": split,
        "samples": len(chosen),
        "num_frames": sorted({sample["num_frames"] for sample in chosen}),
        "fps": sorted({sample["fps"] for sample in chosen}),
        "max_flow_steps": processor.max_flow_steps,
        "bridge_max_flow_steps": bridge_limit,
        "mean_flow_steps": _mean(state.flow_steps),
        "num_keyframes": model.config.num_keyframes,
        "num_candidates": model.config.num_candidate_frames,
        "batch_size": batch_size,
        "modes": list(modes),
        "max_new_tokens": MAX_NEW_TOKENS,
        "frame_alignment": processor.frame_alignment,
    }
    return {
        "settings": settings,
        "modes": {mode: state.mode_metrics(mode, instances[mode]) for mode in modes},
        "grounding": state.grounding(),
        "baselines": {"random_span": state.random_span()},
        "timing": {**state.reading_times(), "model_load_s": load_seconds},
        "alignment": state.alignment(),
        "machine": machine_description(model.device),
    }


class _Accumulator:
    """What `evaluate` counts while it answers: per mode and per sample."""

    def __init__(self, modes: tuple[str, ...]):
        self.correct: dict[str, list[tuple[str, bool]]] = {mode: [] for mode in modes}
        self.vit_frames: dict[str, list[int]] = {mode: [] for mode in modes}
        self.inside: dict[str, list[float]] = {mode: [] for mode in modes}
        self.seconds: dict[str, float] = dict.fromkeys(modes, 0.0)
        self.warmed_up: set[str] = set()
        self.oracle_fallbacks = 0
        self.ious: list[float] = []
        self.baselines: list[dict] = []
        self.flow_steps: list[int] = []
        self.shifts: list[float | None] = []  # per video: how far keyframe alignment moved its frames (None: exact)
        self.reading = {"decode_s": 0.0, "flow_s": 0.0, "inputs_s": 0.0}

    def mode_metrics(self, mode: str, model) -> dict[str, Any]:
        results = self.correct[mode]
        types = sorted({kind for kind, _ in results})
        per_type = {
            kind: {
                "accuracy": _mean([ok for k, ok in results if k == kind]),
                "answers": sum(k == kind for k, _ in results),
            }
            for kind in types
        }
        metrics = {
            "accuracy": _mean([ok for _, ok in results]),
            "correct": sum(ok for _, ok in results),
            "answers": len(results),
            "per_type": per_type,
            "vit_frames_per_answer": _mean(self.vit_frames[mode]),
            "visual_tokens": model.config.num_visual_tokens,
            "seconds_per_answer": self.seconds[mode] / max(len(results), 1),
            "keyframes_in_span": _mean(self.inside[mode]),
            "samples_with_keyframe_in_span": _mean([fraction > 0 for fraction in self.inside[mode]]),
        }
        if mode == "oracle":
            metrics["oracle_fallbacks"] = self.oracle_fallbacks
        return metrics

    def grounding(self) -> dict[str, Any]:
        return {
            "miou": _mean(self.ious),
            **{_recall_key(t): _mean([iou >= t for iou in self.ious]) for t in IOU_THRESHOLDS},
            "samples": len(self.ious),
        }

    def random_span(self) -> dict[str, float]:
        return {key: _mean([baseline[key] for baseline in self.baselines]) for key in self.baselines[0]}

    def reading_times(self) -> dict[str, float]:
        videos = max(len(self.ious), 1)
        per_video = {f"{name}_per_video": seconds / videos for name, seconds in self.reading.items()}
        return {**per_video, "reading_s_per_video": sum(self.reading.values()) / videos}

    def alignment(self) -> dict[str, Any]:
        """How many videos were read aligned to keyframes, and how far (seconds) their frames moved."""
        shifts = [shift for shift in self.shifts if shift is not None]
        return {
            "keyframe_aligned_videos": len(shifts),
            "exact_videos": len(self.shifts) - len(shifts),
            "mean_shift_s": _mean(shifts),
            "max_shift_s": max(shifts, default=float("nan")),
        }


def _mode_keyframes(
    mode: str, clips: list, batch_samples: list[dict], num_candidates: int, num_keyframes: int, state: _Accumulator
) -> torch.LongTensor | None:
    """`(batch, K)` keyframe indices that `mode` gives the model (None: the bridge chooses)."""
    if mode == "bridge":
        return None
    if mode == "dense":
        rows = [list(range(num_candidates))] * len(clips)
    elif mode == "uniform":
        rows = [bin_midpoints(num_candidates, num_keyframes)] * len(clips)
    else:
        rows = []
        for clip, sample in zip(clips, batch_samples, strict=True):
            row, fallback = oracle_candidates(
                clip.candidate_indices, sample["start_frame"], sample["end_frame"], num_keyframes
            )
            state.oracle_fallbacks += fallback
            rows.append(row)
    return torch.tensor(rows, dtype=torch.long)


@torch.no_grad()
def _generate(model, inputs: dict[str, torch.Tensor]):
    """Greedy answers of a batch, with the keyframes they were read from."""
    inputs = {key: value.to(model.device) for key, value in inputs.items()}
    return model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, return_dict_in_generate=True)


def _answer_batch(batch_samples, data: Path, processor, model, instances: dict, state: _Accumulator) -> list[dict]:
    """Decode the batch's videos once, answer them in every mode, and ground them; return their prediction lines."""
    device = model.device
    started = time.perf_counter()
    clips = [processor.load_video(data / sample["file"], str(data / sample["file"])) for sample in batch_samples]
    decoded = time.perf_counter()
    flows = [processor.video_flow(clip) for clip in clips]
    flowed = time.perf_counter()
    inputs = processor([sample["question"] for sample in batch_samples], videos=clips, flows=flows).to(device)
    inputs = {key: value.to(model.dtype) if value.is_floating_point() else value for key, value in inputs.items()}
    state.reading["decode_s"] += decoded - started
    state.reading["flow_s"] += flowed - decoded
    state.reading["inputs_s"] += time.perf_counter() - flowed
    state.flow_steps += [len(clip.flow_indices) for clip in clips]
    state.shifts += [clip.alignment_shift_s if clip.alignment == "keyframe" else None for clip in clips]

    lines = [
        {
            "id": sample["id"],
            "question_type": sample["question_type"],
            "question": sample["question"],
            "gold": sample["answer"],
            "span_frames": [sample["start_frame"], sample["end_frame"]],
            "modes": {},
        }
        for sample in batch_samples
    ]
    without_flow = {key: value for key, value in inputs.items() if key not in ("flow", "flow_mask")}
    for mode, instance in instances.items():
        keyframe_indices = _mode_keyframes(
            mode,
            clips,
            batch_samples,
            model.config.num_candidate_frames,
            instance.config.num_keyframes,
            state,
        )
        mode_inputs = inputs if keyframe_indices is None else without_flow | {"keyframe_indices": keyframe_indices}
        if mode not in state.warmed_up:  # a mode's first call pays one-off setup: run it once untimed
            _generate(instance, mode_inputs)
            state.warmed_up.add(mode)
        _synchronize(device)
        started = time.perf_counter()
        output = _generate(instance, mode_inputs)
        _synchronize(device)
        state.seconds[mode] += time.perf_counter() - started
        texts = processor.batch_decode(output.sequences, skip_special_tokens=True)
        for line, sample, clip, text, chosen in zip(
            lines, batch_samples, clips, texts, output.keyframe_indices.tolist(), strict=True
        ):
            correct = answers_match(text, sample["answer"])
            frames = [int(clip.candidate_indices[index]) for index in chosen]
            inside = [sample["start_frame"] <= frame < sample["end_frame"] for frame in frames]
            state.correct[mode].append((sample["question_type"], correct))
            state.vit_frames[mode].append(len(set(chosen)))
            state.inside[mode].append(sum(inside) / len(inside))
            line["modes"][mode] = {
                "answer": text.strip(),
                "correct": correct,
                "keyframes": chosen,
                "keyframe_frames": frames,
                "keyframe_seconds": [float(clip.candidate_timestamps[index]) for index in chosen],
            }

    with torch.no_grad():
        bridge = model.run_bridge(
            inputs["flow"],
            inputs["flow_mask"],
            inputs["bridge_input_ids"],
            inputs["bridge_attention_mask"],
            len(clips),
        )
    spans = draw_spans(bridge.start_logits, bridge.end_logits, bridge.flow_lengths, num_spans=1)[:, 0].tolist()
    for line, sample, clip, (start_step, end_step) in zip(lines, batch_samples, clips, spans, strict=True):
        predicted = bridge_span_frames(start_step, end_step, clip.flow_indices)
        target = (sample["start_frame"], sample["end_frame"])
        iou = interval_iou(predicted, target)
        state.ious.append(iou)
        state.baselines.append(random_span_baseline(*target, sample["num_frames"]))
        line.update(bridge_span_steps=[start_step, end_step], bridge_span_frames=list(predicted), bridge_iou=iou)
    return lines


# ---- report and plot -------------------------------------------------------------------------------------------


def _percent(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.1f}%"


def format_report(results: dict[str, Any]) -> str:
    """The results of :func:`evaluate` as Markdown: a table of the modes, then grounding, baselines and timing."""
    settings = results["settings"]
    modes = results["modes"]
    types = sorted({kind for metrics in modes.values() for kind in metrics["per_type"]})
    frames = "/".join(map(str, settings["num_frames"]))
    lines = [
        f"## {settings['split']} split of {settings['data']}: {settings['samples']} videos of {frames} frames",
        "",
        f"model {settings['model']}; K = {settings['num_keyframes']} of {settings['num_candidates']} candidates; "
        f"the bridge read {settings['mean_flow_steps']:.0f} flow steps per video (--max-flow-steps "
        f"{settings['max_flow_steps']}, limit {settings['bridge_max_flow_steps']})",
        "",
        "| mode | accuracy | " + " | ".join(types) + " | frames through ViT | visual tokens | s / answer |",
        "|---|---|" + "---|" * len(types) + "---|---|---|",
    ]
    for mode, metrics in modes.items():
        per_type = " | ".join(
            _percent(metrics["per_type"].get(kind, {}).get("accuracy", float("nan"))) for kind in types
        )
        lines.append(
            f"| {mode} | {_percent(metrics['accuracy'])} ({metrics['correct']}/{metrics['answers']}) | {per_type} | "
            f"{metrics['vit_frames_per_answer']:.1f} | {metrics['visual_tokens']} | "
            f"{metrics['seconds_per_answer']:.4f} |"
        )
    grounding, random_span = results["grounding"], results["baselines"]["random_span"]
    recalls = [_recall_key(t) for t in IOU_THRESHOLDS]

    def summary(values: dict) -> str:
        return ", ".join([f"mIoU {values['miou']:.3f}", *(f"R@{key[2:]} {_percent(values[key])}" for key in recalls)])

    lines += [
        "",
        f"- grounding (the bridge's most likely span against the true span, in frames): {summary(grounding)}",
        f"- baseline (a span of the true length placed at random, exact expectation): {summary(random_span)}",
        "- keyframes inside the true span: "
        + "; ".join(
            f"{mode} {_percent(metrics['keyframes_in_span'])} of keyframes, "
            f"{_percent(metrics['samples_with_keyframe_in_span'])} of videos with at least one"
            for mode, metrics in modes.items()
        ),
    ]
    if "oracle" in modes:
        lines.append(
            f"- oracle: {modes['oracle']['oracle_fallbacks']} videos had no candidate inside the true span "
            "(the candidate nearest its middle was used)"
        )
    timing, machine = results["timing"], results["machine"]
    lines.append(
        f"- reading per video (all modes share it): {timing['reading_s_per_video']:.3f} s (decode "
        f"{timing['decode_s_per_video']:.3f} s, flow {timing['flow_s_per_video']:.3f} s, inputs "
        f"{timing['inputs_s_per_video']:.3f} s); on {machine['device_name'] or machine['processor']}, "
        f"{machine['cpu_count']} CPUs, {machine['torch_threads']} torch threads, torch {machine['torch']}"
    )
    alignment = results.get("alignment")
    if alignment and alignment["keyframe_aligned_videos"]:
        lines.append(
            f"- keyframe-aligned reading: {alignment['keyframe_aligned_videos']} videos (frames moved "
            f"{alignment['mean_shift_s']:.3f} s on average, at most {alignment['max_shift_s']:.3f} s), "
            f"{alignment['exact_videos']} read exactly (too few keyframes)"
        )
    return "\n".join(lines) + "\n"


def result_label(results: dict[str, Any]) -> str:
    """A short name of a result set for plots: split and video length."""
    settings = results["settings"]
    return f"{settings['split']}, {'/'.join(map(str, settings['num_frames']))} frames"


def plot_results(
    results_list: Sequence[dict[str, Any]], path: str | os.PathLike, labels: Sequence[str] | None = None
) -> Path:
    """Bar chart of the accuracy of every mode, one group of bars per mode and one bar per result set (e.g. 1x, 8x
    and 16x longer videos, the held-out split), saved as PNG at `path`.

    Args:
        results_list: dicts returned by :func:`evaluate`.
        labels: one legend entry per result set (default: :func:`result_label`).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not results_list:
        raise ValueError("plot_results needs at least one result set")
    labels = list(labels) if labels is not None else [result_label(results) for results in results_list]
    if len(labels) != len(results_list):
        raise ValueError(f"got {len(labels)} labels for {len(results_list)} result sets")
    modes = [mode for mode in MODES if any(mode in results["modes"] for results in results_list)]
    figure = Figure(figsize=(1.6 + 1.4 * len(modes), 3.6))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    width = 0.8 / len(results_list)
    positions = np.arange(len(modes))
    for number, (results, label) in enumerate(zip(results_list, labels, strict=True)):
        accuracies = [100 * results["modes"].get(mode, {}).get("accuracy", float("nan")) for mode in modes]
        bars = axes.bar(positions + (number - (len(results_list) - 1) / 2) * width, accuracies, width, label=label)
        axes.bar_label(bars, fmt="%.0f", fontsize=7)
    axes.set_xticks(positions, modes)
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, 105)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=120)
    return path


# ---- command line ----------------------------------------------------------------------------------------------

_EVAL_DESCRIPTION = """\
Evaluate a VideoTGB checkpoint on one split of a folder written by `videotgb synthetic generate`.
Every video is decoded once; its question is answered (greedy, a few tokens) in each mode:

  uniform  the K bin-midpoint candidate frames, whatever the question
  dense    all candidate frames (the model loaded again with num_keyframes = candidates)
  bridge   the K keyframes the bridge picks from optical flow and the question (VideoTGB)
  oracle   the candidates inside the asked event's true span, brought to K

reported: accuracy (exact match of the answer's words) overall and per question type; frames
through the vision tower, visual tokens and seconds per answer; the bridge's most likely span
against the true span (mIoU, R@0.3, R@0.5 in frames) and the same for a span of the true length
placed at random; how many keyframes of each mode lie inside the true span; reading time per video.

extrapolation: on videos generated 8x or 16x longer (with events as much longer), let the bridge
read up to its limit of flow steps with --max-flow-steps 510.

example:
  videotgb synthetic eval --model tiny-videotgb --data synthetic --split test --output results.json

See docs/synthetic.md.
"""


def add_eval_parser(synthetic_commands) -> None:
    """Register `videotgb synthetic eval` on the `synthetic` command's subparsers."""
    import argparse

    parser = synthetic_commands.add_parser(
        "eval",
        help="answer a split in uniform / dense / bridge / oracle modes; accuracy, grounding and cost",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_EVAL_DESCRIPTION,
    )
    parser.add_argument("--model", required=True, help="VideoTGB checkpoint folder or Hub id, with its processor")
    parser.add_argument("--data", required=True, metavar="DIR", help="folder written by videotgb synthetic generate")
    parser.add_argument("--split", default="test", choices=SPLITS, help="split to answer (default: %(default)s)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated modes to run (default: %(default)s)")
    parser.add_argument(
        "--batch-size", type=int, default=8, help="videos decoded and answered together (default: %(default)s)"
    )
    parser.add_argument(
        "--max-flow-steps",
        type=int,
        default=None,
        help="flow steps the bridge reads per video, up to the bridge's limit (default: the processor's)",
    )
    parser.add_argument(
        "--frame-alignment",
        choices=["exact", "keyframe"],
        default=None,
        help="read frames at their exact places or moved to keyframes (default: the processor's saved setting)",
    )
    parser.add_argument("--limit", type=int, default=None, help="answer only the first N samples of the split")
    parser.add_argument("--output", default=None, metavar="FILE", help="write the results as JSON")
    parser.add_argument(
        "--predictions", default=None, metavar="FILE", help="write one JSON line per sample as it is answered"
    )
    parser.add_argument("--plot", default=None, metavar="FILE", help="bar chart of the accuracy per mode (PNG)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing --output, --predictions, --plot")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=_eval_command)


def _eval_command(arguments) -> int:
    for path, flag in ((arguments.output, "--output"), (arguments.plot, "--plot")):
        check_new_file(path, flag, arguments.overwrite)
    results = evaluate(
        arguments.model,
        arguments.data,
        split=arguments.split,
        modes=arguments.modes,
        batch_size=arguments.batch_size,
        max_flow_steps=arguments.max_flow_steps,
        frame_alignment=arguments.frame_alignment,
        limit=arguments.limit,
        predictions_path=arguments.predictions,
        progress=not arguments.no_progress,
        device=arguments.device,
        overwrite=arguments.overwrite,
    )
    print(format_report(results), end="")
    if arguments.output:
        Path(arguments.output).parent.mkdir(parents=True, exist_ok=True)
        Path(arguments.output).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        print(f"results: {arguments.output}")
    if arguments.predictions:
        print(f"predictions: {arguments.predictions}")
    if arguments.plot:
        print(f"plot: {plot_results([results], arguments.plot)}")
    return 0


__all__ = [
    "IOU_THRESHOLDS",
    "MODES",
    "EvaluationError",
    "add_eval_parser",
    "answers_match",
    "bridge_span_frames",
    "check_modes",
    "check_new_file",
    "evaluate",
    "format_report",
    "interval_iou",
    "oracle_candidates",
    "plot_results",
    "random_span_baseline",
]
