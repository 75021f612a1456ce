"""Pure arithmetic of VideoTGB's frame sampling and keyframe selection (the method is described in docs/method.md).

Everything here is deterministic integer arithmetic on indices, shared by the video reader (candidate frames),
the model (keyframes chosen from the bridge's spans) and training (pseudo spans). It imports only torch so that it
can travel with the remote-code files of a checkpoint.

The original code had five copies of keyframe selection that disagreed on the end of a span (inclusive or
exclusive) and on how a flow step maps to a candidate frame. This module is the one place where those rules live:

1. ``num_spans`` (start, end) pairs are drawn from the start / end distributions over the *valid* flow steps
   (padding and the EOS position are masked out first; ``argmax`` at evaluation, a categorical draw when sampling —
   the original's "Gumbel-softmax with tau = 0.5 followed by argmax" is exactly a categorical draw).
2. A pair with ``start`` or ``end`` outside the video's flow steps, or equal to (0, 0), means "the whole video".
3. Flow step ``p`` of a video with ``n`` steps maps to candidate ``floor(p * (N_c - 1) / (n - 1))`` (``0`` when
   ``n == 1``, where the original divided by zero). Spans include their end by default (``end_inclusive``); a pair
   with ``start > end`` selects nothing.
4. The union of the spans' candidates, sorted, is brought to exactly ``K`` indices: empty -> all candidates;
   fewer than ``K`` -> every index duplicated until there are at least ``K``; more than ``K`` -> the ``K``
   bin-midpoints of the sorted list.

Every public function checks its arguments and raises a ``ValueError`` naming the argument and its value.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

__all__ = [
    "bin_midpoints",
    "flow_step_to_candidate",
    "reduce_to_k",
    "spans_to_candidates",
    "select_keyframes",
    "draw_spans",
]


def bin_midpoints(total: int, num: int) -> list[int]:
    """Indices of the middle element of ``num`` equal bins over ``range(total)``.

    The bins have the integer edges ``floor(linspace(0, total, num + 1))`` and bin ``[a, b)`` contributes
    ``(a + b - 1) // 2``. When ``total < num`` some bins are empty (``a == b``); the rule then gives ``a - 1``, which
    repeats the previous index — except for a leading empty bin, where the original returned ``-1`` (Python's "last
    frame"); here it is clamped to ``0``.

    Examples:
        >>> bin_midpoints(32, 4)
        [3, 11, 19, 27]
        >>> bin_midpoints(6, 4)
        [0, 1, 3, 4]
        >>> bin_midpoints(3, 4)
        [0, 0, 1, 2]
    """
    _check_count("total", total)
    _check_count("num", num)
    edges = [(total * i) // num for i in range(num + 1)]
    return [max((edges[i] + edges[i + 1] - 1) // 2, 0) for i in range(num)]


def flow_step_to_candidate(step: int, num_flow_steps: int, num_candidates: int) -> int:
    """Candidate-frame index ``floor(step * (num_candidates - 1) / (num_flow_steps - 1))`` of a flow step."""
    _check_count("num_flow_steps", num_flow_steps)
    _check_count("num_candidates", num_candidates)
    _check_indices("step", [step], num_flow_steps)
    if num_flow_steps == 1:
        return 0
    return (step * (num_candidates - 1)) // (num_flow_steps - 1)


def spans_to_candidates(
    spans: Sequence[tuple[int, int]],
    num_flow_steps: int,
    num_candidates: int,
    end_inclusive: bool = True,
) -> list[int]:
    """Sorted union of the candidate indices covered by ``spans`` (flow-step (start, end) pairs).

    A span with ``start`` or ``end`` outside ``[0, num_flow_steps)``, or equal to ``(0, 0)``, stands for the whole
    video (every candidate). A span with ``start > end`` covers nothing.

    Examples:
        >>> spans_to_candidates([(2, 3)], num_flow_steps=8, num_candidates=8)
        [2, 3]
        >>> spans_to_candidates([(0, 0)], num_flow_steps=8, num_candidates=4)
        [0, 1, 2, 3]
    """
    _check_count("num_flow_steps", num_flow_steps)
    _check_count("num_candidates", num_candidates)
    for span in spans:
        if len(span) != 2:
            raise ValueError(f"spans must be (start, end) pairs, got {tuple(span)}")
    selected: set[int] = set()
    for start, end in spans:
        if start >= num_flow_steps or end >= num_flow_steps or start < 0 or end < 0 or (start, end) == (0, 0):
            selected.update(range(num_candidates))
            continue
        first = flow_step_to_candidate(start, num_flow_steps, num_candidates)
        last = flow_step_to_candidate(end, num_flow_steps, num_candidates)
        selected.update(range(first, last + 1 if end_inclusive else last))
    return sorted(selected)


def reduce_to_k(indices: Sequence[int], num_candidates: int, k: int) -> list[int]:
    """Bring a list of candidate indices in ``[0, num_candidates)`` to exactly ``k`` sorted entries.

    An empty list stands for every candidate; a shorter list has each entry repeated (doubling until there are at
    least ``k``); a longer one is thinned to the ``k`` bin midpoints of its sorted entries.

    Examples (k = 4):
        >>> reduce_to_k([5], 32, 4)
        [5, 5, 5, 5]
        >>> reduce_to_k([3, 4, 5], 32, 4)
        [3, 3, 4, 5]
        >>> reduce_to_k(list(range(32)), 32, 4)
        [3, 11, 19, 27]
        >>> reduce_to_k(list(range(10, 20)), 32, 4)
        [10, 13, 15, 18]
    """
    _check_count("num_candidates", num_candidates)
    _check_count("k", k)
    _check_indices("indices", indices, num_candidates)
    chosen = sorted(indices) if len(indices) else list(range(num_candidates))
    while len(chosen) < k:
        chosen = [index for index in chosen for _ in range(2)]
    if len(chosen) > k:
        chosen = [chosen[i] for i in bin_midpoints(len(chosen), k)]
    return chosen


def draw_spans(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    lengths: torch.Tensor,
    num_spans: int,
    strategy: str = "argmax",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw (start, end) flow-step pairs from the bridge's span logits.

    Args:
        start_logits, end_logits: `(batch, steps)` logits over flow steps.
        lengths: `(batch,)` number of valid flow steps per video; positions at or after it are never drawn.
        num_spans: pairs per video.
        strategy: ``"argmax"`` (deterministic, one distinct pair repeated) or ``"sample"`` (categorical draws).
        generator: random generator for ``"sample"``.

    Returns:
        `(batch, num_spans, 2)` long tensor of (start, end) flow-step indices.
    """
    if strategy not in ("argmax", "sample"):
        raise ValueError(f"strategy must be 'argmax' or 'sample', got {strategy!r}")
    _check_count("num_spans", num_spans)
    if start_logits.dim() != 2 or start_logits.shape != end_logits.shape:
        raise ValueError(
            "start_logits and end_logits must have the same shape (batch, steps), got "
            f"{tuple(start_logits.shape)} and {tuple(end_logits.shape)}"
        )
    batch, steps = start_logits.shape
    if lengths.shape != (batch,):
        raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
    if ((lengths < 1) | (lengths > steps)).any():
        raise ValueError(f"lengths must lie in [1, {steps}], got {lengths.tolist()}")
    valid = torch.arange(steps, device=start_logits.device)[None, :] < lengths.to(start_logits.device)[:, None]
    pairs = []
    for logits in (start_logits, end_logits):
        logits = logits.detach().float().masked_fill(~valid, float("-inf"))
        if strategy == "argmax":
            drawn = logits.argmax(dim=-1, keepdim=True).expand(-1, num_spans)
        else:
            probs = torch.softmax(logits, dim=-1)
            drawn = torch.multinomial(probs, num_spans, replacement=True, generator=generator)
        pairs.append(drawn)
    return torch.stack(pairs, dim=-1)


def select_keyframes(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    lengths: torch.Tensor,
    num_candidates: int,
    num_keyframes: int,
    num_spans: int = 2,
    strategy: str = "argmax",
    end_inclusive: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose ``num_keyframes`` candidate indices per video from the bridge's span logits.

    Args:
        start_logits, end_logits: `(batch, steps)` logits over flow steps (padded positions are ignored).
        lengths: `(batch,)` number of valid flow steps per video, each >= 1.
        num_candidates: number of candidate frames ``N_c`` the flow steps map onto.
        num_keyframes: ``K``.
        num_spans: spans drawn per video.
        strategy: ``"argmax"`` or ``"sample"``.
        end_inclusive: whether a span's end candidate is selected.
        generator: random generator for ``"sample"``.

    Returns:
        `(batch, num_keyframes)` long tensor of sorted candidate indices (repeats allowed).
    """
    _check_count("num_candidates", num_candidates)
    _check_count("num_keyframes", num_keyframes)
    if (lengths < 1).any():
        raise ValueError(
            f"every video needs at least one flow step to select keyframes, got lengths={lengths.tolist()}"
        )
    spans = draw_spans(start_logits, end_logits, lengths, num_spans, strategy=strategy, generator=generator)
    rows = []
    for video_spans, length in zip(spans.tolist(), lengths.tolist(), strict=True):
        candidates = spans_to_candidates(
            [tuple(pair) for pair in video_spans], int(length), num_candidates, end_inclusive=end_inclusive
        )
        rows.append(reduce_to_k(candidates, num_candidates, num_keyframes))
    return torch.tensor(rows, dtype=torch.long, device=start_logits.device)


def _check_count(name: str, value: object, minimum: int = 1) -> None:
    """Raise a ``ValueError`` naming ``name`` unless ``value`` is an integer ``>= minimum`` (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_indices(name: str, indices: Sequence[int], size: int) -> None:
    """Raise a ``ValueError`` naming ``name`` and the first entry of ``indices`` outside ``[0, size)``."""
    for index in indices:
        if not 0 <= index < size:
            raise ValueError(f"{name} must lie in [0, {size}), got {index}")
