"""Pseudo spans: span targets for the bridge made without temporal annotations (docs/method.md#pseudo-spans).

The model answers the question from each candidate frame alone; each answer is scored by the recall of the gold
answer's words (:func:`unigram_recall`); the scores over the candidates form a histogram whose largest rectangle
(:func:`largest_rectangle`) is the span; the span is written as ratios of the video (:func:`span_to_ratios`), the
form `VideoTGBForConditionalGeneration.forward(span_targets=...)` takes.

- :func:`pseudo_span_from_answers` does the arithmetic for one video from its per-frame answers (pure).
- :func:`answer_frames` runs the model: every candidate frame as an image sample, greedy decoding.
- :func:`pseudo_spans_from_model` does both for a list of videos.

This module is for training: it is not one of the remote-code files and they never import it
(docs/development.md#remote-code-and-optional-imports). Every public function checks its arguments and raises a
``ValueError`` naming the argument.
"""

from __future__ import annotations

import math
import numbers
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .keyframes import _check_count, flow_step_to_candidate

__all__ = [
    "words",
    "unigram_recall",
    "largest_rectangle",
    "span_to_ratios",
    "pseudo_span_from_answers",
    "answer_frames",
    "pseudo_spans_from_model",
]

_WORD = re.compile(r"[^\W_]+")
"""A word token: a maximal run of Unicode letters and digits. Whitespace, punctuation, symbols and ``_`` separate
words, so a token made only of punctuation never counts."""

PLACEHOLDER_QUESTION = "?"
"""The question of the placeholder sample (a black frame) with which a process that has no more frames to answer
takes part in synced `generate` calls (:func:`answer_frames`); its answer is discarded."""

_TIE_TOLERANCE = 1e-9
"""Relative difference under which two rectangle areas count as equal (they are products of float scores)."""


def words(text: str) -> list[str]:
    """The lowercased word tokens of ``text``, as :func:`unigram_recall` counts them.

    A word is a maximal run of Unicode letters and digits (the regular expression ``[^\\W_]+`` on the lowercased
    text); everything else separates words and is dropped, so punctuation-only tokens are ignored and ``don't``
    gives ``don`` and ``t`` on both sides of a comparison.

    Examples:
        >>> words("A man, a plan: 2 canals!")
        ['a', 'man', 'a', 'plan', '2', 'canals']
        >>> words("... ?!")
        []
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    return _WORD.findall(text.lower())


def unigram_recall(prediction: str, reference: str) -> float:
    """Fraction of the reference's words that the prediction contains (ROUGE-1 recall).

    Both texts are split into lowercased words with :func:`words` (runs of letters and digits; punctuation-only
    tokens are ignored). Repeated words count with multiplicity, clipped: a word that occurs ``r`` times in the
    reference and ``p`` times in the prediction contributes ``min(p, r)`` matches, and the recall is the number of
    matches divided by the number of reference words. A reference without words (empty, or punctuation only) gives
    ``0.0``: there is nothing to recall, and every frame of the video then scores alike.

    Examples:
        >>> unigram_recall("A dog.", "the dog")
        0.5
        >>> unigram_recall("a red car", "A red and a blue car")  # 'a' is matched once of twice
        0.5
        >>> unigram_recall("Yes!", "yes")
        1.0
        >>> unigram_recall("anything", "?")
        0.0
    """
    if not isinstance(prediction, str):
        raise ValueError(f"prediction must be a str, got {type(prediction).__name__}")
    if not isinstance(reference, str):
        raise ValueError(f"reference must be a str, got {type(reference).__name__}")
    reference_counts = Counter(words(reference))
    total = sum(reference_counts.values())
    if total == 0:
        return 0.0
    prediction_counts = Counter(words(prediction))
    matches = sum(min(count, prediction_counts[word]) for word, count in reference_counts.items())
    return matches / total


def largest_rectangle(scores: Sequence[float], subtract_min: bool = False) -> tuple[int, int]:
    """``(start, end)``, both included, of the largest rectangle under the histogram ``scores``.

    The area of a span is its width times its lowest score. The search is the monotone-stack algorithm, O(n): each
    score is popped once, with the widest span in which it is the lowest.

    - ``subtract_min=True`` subtracts the lowest score from every score first, so that only what rises above the
      floor counts.
    - A negative score (possible only without ``subtract_min``) counts as height 0: any span over it has area 0.
      (The original variant without min-subtraction crashed on negative scores.)
    - When no span has a positive area (every score is ``<= 0``, or all scores are equal with ``subtract_min``), no
      frame stands out and the span is the whole range ``(0, n - 1)``.
    - Ties (areas equal up to a relative ``1e-9``) go to the leftmost span: the smallest start, then the smallest
      end.

    Examples:
        >>> largest_rectangle([0.2, 0.9, 0.8, 0.9, 0.1])
        (1, 3)
        >>> largest_rectangle([0.5, 0.5, 1.0, 0.5])
        (0, 3)
        >>> largest_rectangle([0.5, 0.5, 1.0, 0.5], subtract_min=True)
        (2, 2)
        >>> largest_rectangle([1.0, 0.0, 1.0])  # a tie: the leftmost span wins
        (0, 0)
        >>> largest_rectangle([0.0, 0.0, 0.0])
        (0, 2)
        >>> largest_rectangle([-1.0, 0.5, -2.0])
        (1, 1)
    """
    if isinstance(scores, (str, bytes)) or not isinstance(scores, Sequence):
        raise ValueError(f"scores must be a sequence of numbers, got {type(scores).__name__}")
    if len(scores) == 0:
        raise ValueError("scores must not be empty")
    for score in scores:
        if isinstance(score, bool) or not isinstance(score, numbers.Real) or not math.isfinite(score):
            raise ValueError(f"scores must be finite real numbers, got {score!r}")
    if not isinstance(subtract_min, bool):
        raise ValueError(f"subtract_min must be a bool, got {subtract_min!r}")
    floor = min(scores) if subtract_min else 0.0
    heights = [max(float(score) - floor, 0.0) for score in scores]
    n = len(heights)
    if max(heights) <= 0.0:
        return 0, n - 1

    best_area, best_span = 0.0, (0, n - 1)
    stack: list[int] = []  # indices of strictly increasing heights
    for right in range(n + 1):
        height = heights[right] if right < n else -1.0  # the sentinel pops everything
        while stack and heights[stack[-1]] >= height:
            top = heights[stack.pop()]
            left = stack[-1] + 1 if stack else 0
            # `top` is the lowest score of [left, right - 1]; an equal score at `right` makes this span one of
            # equal height but narrower than the one found when that score is popped, so never a spurious tie.
            area = top * (right - left)
            span = (left, right - 1)
            if area > 0.0 and (_greater(area, best_area) or (not _greater(best_area, area) and span < best_span)):
                best_area, best_span = area, span
        stack.append(right)
    return best_span


def _greater(a: float, b: float) -> bool:
    """``a > b`` beyond the relative tie tolerance."""
    return a - b > _TIE_TOLERANCE * max(abs(a), abs(b))


def span_to_ratios(
    span: tuple[int, int], num_candidates: int, *, num_flow_steps: int | None = None
) -> tuple[float, float]:
    """A span of candidate frames, ``(start, end)`` both included, as ``(start, end)`` ratios in ``[0, 1]``.

    The ratios are the form of `forward(span_targets=...)`, which maps a ratio to the flow step
    ``round(ratio * (n - 1))`` of a video with ``n`` flow steps (`span_targets_to_positions`); keyframe selection
    maps flow step ``p`` back to candidate ``floor(p * (N_c - 1) / (n - 1))`` (`keyframes.flow_step_to_candidate`).
    The ratios are chosen so that this round trip gives back the span (docs/method.md#pseudo-spans). This package
    rounds ratios to flow steps everywhere; the original truncated in this mapping.

    - With ``num_flow_steps`` (the ``n`` the model will see, ``len(clip.flow_indices)``): the ratios of the first
      flow step whose candidate is ``>= start`` and of the last whose candidate is ``<= end``, so the target covers
      every flow step of the span. A video with fewer flow steps than candidates has candidates that no flow step
      maps to; a span made only of those becomes the single flow step nearest to its middle. One flow step gives
      ``(0.0, 0.0)``.
    - Without it, the ratios do not depend on ``n``: the first candidate starts at ``0.0``, the last ends at ``1.0``,
      and any other end sits just before the middle of its candidate's share of the video,
      ``(c + 1/2 - 1/(4 (N_c - 1))) / (N_c - 1)``. For every ``n >= N_c`` both ends land on flow steps of their own
      candidates, so the round trip gives back the span, but not necessarily its first and last flow steps; for
      ``n < N_c`` an end whose candidate has no flow step moves to a neighbouring one. One candidate gives
      ``(0.0, 1.0)``.

    Examples:
        >>> span_to_ratios((0, 31), 32)
        (0.0, 1.0)
        >>> [round(ratio, 4) for ratio in span_to_ratios((9, 14), 32)]
        [0.3062, 0.4675]
        >>> [round(ratio * 63, 4) for ratio in span_to_ratios((9, 14), 32, num_flow_steps=64)]  # flow steps 19..30
        [19.0, 30.0]
    """
    _check_count("num_candidates", num_candidates)
    if num_flow_steps is not None:
        _check_count("num_flow_steps", num_flow_steps)
    if isinstance(span, (str, bytes)) or not isinstance(span, Sequence) or len(span) != 2:
        raise ValueError(f"span must be a (start, end) pair, got {span!r}")
    start, end = span
    for value in (start, end):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"span must hold integer candidate indices, got {span!r}")
    if not 0 <= start <= end < num_candidates:
        raise ValueError(f"span must satisfy 0 <= start <= end < num_candidates={num_candidates}, got {span!r}")
    start, end = int(start), int(end)

    if num_flow_steps is not None:
        return _flow_step_ratios(start, end, num_candidates, num_flow_steps)
    last = num_candidates - 1
    if last == 0:
        return 0.0, 1.0

    def inside(candidate: int) -> float:
        return min((candidate + 0.5 - 0.25 / last) / last, 1.0)

    return (0.0 if start == 0 else inside(start)), (1.0 if end == last else inside(end))


def _flow_step_ratios(start: int, end: int, num_candidates: int, num_flow_steps: int) -> tuple[float, float]:
    """The exact ratios of :func:`span_to_ratios` for a video of ``num_flow_steps`` flow steps."""
    if num_flow_steps == 1:
        return 0.0, 0.0
    steps = [
        step
        for step in range(num_flow_steps)
        if start <= flow_step_to_candidate(step, num_flow_steps, num_candidates) <= end
    ]
    if steps:
        first, last = steps[0], steps[-1]
    else:
        # only candidates that no flow step maps to (fewer steps than candidates): the step nearest the middle
        middle = (start + end + 1) / 2 * (num_flow_steps - 1) / (num_candidates - 1)
        first = last = min(int(middle + 0.5), num_flow_steps - 1)
    return first / (num_flow_steps - 1), last / (num_flow_steps - 1)


def pseudo_span_from_answers(
    frame_answers: Sequence[str],
    reference: str,
    *,
    subtract_min: bool = False,
    num_flow_steps: int | None = None,
) -> tuple[float, float]:
    """The pseudo span of one video, as ratios, from the answers given by each of its candidate frames alone.

    Scores every answer with :func:`unigram_recall` against ``reference``, takes the :func:`largest_rectangle` of
    the scores (``subtract_min`` as there) and returns :func:`span_to_ratios` of it (``num_flow_steps`` as there).

    Examples:
        >>> answers = ["a cat", "a dog", "the red dog", "a dog", "cat"]  # recall 1/3, 2/3, 2/3, 2/3, 0
        >>> pseudo_span_from_answers(answers, "a red dog", num_flow_steps=5)
        (0.25, 0.75)
        >>> pseudo_span_from_answers(["no", "no", "no"], "yes")  # nothing matches: the whole video
        (0.0, 1.0)
    """
    if isinstance(frame_answers, (str, bytes)) or not isinstance(frame_answers, Sequence) or not frame_answers:
        raise ValueError(f"frame_answers must be a non-empty sequence of str, got {frame_answers!r}")
    if not all(isinstance(answer, str) for answer in frame_answers):
        raise ValueError("frame_answers must hold str answers, one per candidate frame")
    scores = [unigram_recall(answer, reference) for answer in frame_answers]
    span = largest_rectangle(scores, subtract_min=subtract_min)
    return span_to_ratios(span, len(frame_answers), num_flow_steps=num_flow_steps)


def answer_frames(
    model: Any,
    processor: Any,
    clips: Sequence[Any],
    questions: Sequence[str],
    *,
    max_new_tokens: int = 128,
    batch_size: int = 32,
    synced_gpus: bool | None = None,
) -> list[list[str]]:
    """Answer each question from each candidate frame of its video alone.

    Every candidate frame (``clip.candidate_frames``, `(N_c, H, W, 3)` uint8) becomes an image sample of the
    processor, ``processor([question, ...], images=[frame, ...])``, and the model answers it greedily
    (``do_sample=False``, one beam, at most ``max_new_tokens`` new tokens). Samples of all videos are batched
    together, ``batch_size`` at a time; a frame that is a candidate several times (videos shorter than ``N_c``
    frames) is answered once. The model runs in eval mode under ``torch.no_grad()``; the training mode of each of
    its modules is restored afterwards.

    With ``synced_gpus`` (several processes sharing the parameters under ZeRO-3 or FSDP, where every `generate` call
    gathers them from all ranks) the processes first agree on the largest number of `generate` calls any of them
    needs (an all-reduce over the default process group); one that needs fewer, or none (no video: empty
    ``clips``), makes the rest on a placeholder, one black frame with the question ``"?"``, whose answer is
    discarded, and every call gets ``synced_gpus`` so that a process whose answers end early keeps stepping with
    the others. Every process of the group must call this function the same number of times.

    Args:
        model: a `VideoTGBForConditionalGeneration` (or anything with its `generate` and `runs_every_module`).
        processor: the model's `VideoTGBProcessor`.
        clips: per question a video: a `VideoClip` from ``processor.load_video`` or anything it accepts; may be
            empty (then no answer is made, but the process takes part in the synced calls).
        questions: the questions, one per video.
        max_new_tokens: most tokens per answer.
        batch_size: frames per `generate` call.
        synced_gpus: whether the processes must make their `generate` calls together; defaults to
            ``model.runs_every_module()`` (on when several processes run under ZeRO-3 or FSDP). Off, one process
            answers exactly as alone.

    Returns:
        Per video, the ``N_c`` answers of its candidate frames, in candidate order, stripped of surrounding spaces.
    """
    _check_count("max_new_tokens", max_new_tokens)
    _check_count("batch_size", batch_size)
    clips, questions = _check_batch(clips=clips, questions=questions)
    synced = model.runs_every_module() if synced_gpus is None else synced_gpus
    clips = [processor.load_video(clip, f"clips[{row}]") for row, clip in enumerate(clips)]

    # (row, candidate position) of every distinct frame to answer; `owner` points repeats at their first position
    jobs: list[tuple[int, int]] = []
    owners: list[list[int]] = []
    for row, clip in enumerate(clips):
        first_position: dict[int, int] = {}
        owner = []
        for position, index in enumerate(clip.candidate_indices):
            if index not in first_position:
                first_position[index] = position
                jobs.append((row, position))
            owner.append(first_position[index])
        owners.append(owner)

    chunks = [jobs[begin : begin + batch_size] for begin in range(0, len(jobs), batch_size)]
    calls = _agreed_call_count(len(chunks), model.device) if synced else len(chunks)
    placeholder = np.zeros((processor.image_size, processor.image_size, 3), dtype=np.uint8)

    answers: dict[tuple[int, int], str] = {}
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            for call in range(calls):
                chunk = chunks[call] if call < len(chunks) else []
                batch = processor(
                    [questions[row] for row, _ in chunk] or [PLACEHOLDER_QUESTION],
                    images=[clips[row].candidate_frames[position] for row, position in chunk] or [placeholder],
                ).to(model.device)
                floating = {key: value.to(model.dtype) for key, value in batch.items() if value.is_floating_point()}
                sequences = model.generate(
                    **batch | floating,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    synced_gpus=synced,
                )
                if chunk:
                    texts = processor.batch_decode(sequences, skip_special_tokens=True)
                    answers.update((job, text.strip()) for job, text in zip(chunk, texts, strict=True))
    finally:
        for module, training in modes:
            module.train(training)
    return [[answers[row, position] for position in owner] for row, owner in enumerate(owners)]


def pseudo_spans_from_model(
    model: Any,
    processor: Any,
    clips: Sequence[Any],
    questions: Sequence[str],
    answers: Sequence[str],
    *,
    max_new_tokens: int = 128,
    batch_size: int = 32,
    subtract_min: bool = False,
    synced_gpus: bool | None = None,
) -> list[tuple[float, float]]:
    """Pseudo spans of a batch of videos, as ``(start, end)`` ratios for `forward(span_targets=...)`.

    :func:`answer_frames` answers each question from each candidate frame of its video alone, and
    :func:`pseudo_span_from_answers` turns each video's answers and gold answer into a span, with ratios exact for the
    video's own number of flow steps (``len(clip.flow_indices)``, see :func:`span_to_ratios`).

    Args:
        model, processor, clips, questions, max_new_tokens, batch_size, synced_gpus: as in :func:`answer_frames`
            (``clips`` may be empty: the process then takes part in the synced calls and gets no span).
        answers: the gold answers, one per video.
        subtract_min: as in :func:`largest_rectangle`.

    Returns:
        One ``(start, end)`` pair of ratios in ``[0, 1]`` per video; ``torch.tensor(result)`` is a `(batch, 2)`
        ``span_targets``.
    """
    clips, questions, answers = _check_batch(clips=clips, questions=questions, answers=answers)
    if not isinstance(subtract_min, bool):
        raise ValueError(f"subtract_min must be a bool, got {subtract_min!r}")
    clips = [processor.load_video(clip, f"clips[{row}]") for row, clip in enumerate(clips)]
    frame_answers = answer_frames(
        model,
        processor,
        clips,
        questions,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        synced_gpus=synced_gpus,
    )
    return [
        pseudo_span_from_answers(
            video_answers, reference, subtract_min=subtract_min, num_flow_steps=len(clip.flow_indices)
        )
        for video_answers, reference, clip in zip(frame_answers, answers, clips, strict=True)
    ]


def _agreed_call_count(local: int, device: torch.device) -> int:
    """The largest ``local`` over the processes of the default group (``local`` itself when there is no group or it
    has one process): how many synced `generate` calls every process makes."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not distributed or torch.distributed.get_world_size() == 1:
        return local
    # gloo reduces CPU tensors; NCCL and the other accelerator backends reduce tensors on the model's device
    on = torch.device("cpu") if torch.distributed.get_backend() == "gloo" else device
    count = torch.tensor([local], dtype=torch.long, device=on)
    torch.distributed.all_reduce(count, op=torch.distributed.ReduceOp.MAX)
    return int(count.item())


def _check_batch(**columns: Sequence[Any]) -> list[list[Any]]:
    """Each column as a list; raise a ``ValueError`` naming a column that is not a sequence, has text entries that
    are not ``str`` (every column but ``clips``), or differs in length from the first. Columns may be empty (a
    process without videos still takes part in synced `generate` calls)."""
    lists = []
    for name, column in columns.items():
        if isinstance(column, (str, bytes)) or not isinstance(column, Sequence):
            raise ValueError(f"{name} must be a sequence, one entry per video, got {type(column).__name__}")
        if name != "clips" and not all(isinstance(entry, str) for entry in column):
            raise ValueError(f"{name} must hold str entries")
        lists.append(list(column))
    first = next(iter(columns))
    for name, column in zip(columns, lists, strict=True):
        if len(column) != len(lists[0]):
            raise ValueError(f"{name} has {len(column)} entries but {first} has {len(lists[0])}")
    return lists
