"""Judge-free metrics of video QA answers and predicted spans (docs/evaluation.md#judge-free-metrics).

Plain functions over Python values, shared by `videotgb eval score`, the `evaluate` metric modules in
``videotgb/evaluation/metric_modules`` and the synthetic benchmark (`videotgb synthetic eval`):

- :func:`normalize_answer`, :func:`exact_match`, :func:`token_f1`: SQuAD-style answer comparison (lowercase, drop
  punctuation and the articles a / an / the, collapse whitespace);
- :func:`answers_match`: equal word lists (Unicode letters and digits), what the synthetic benchmark counts;
- :func:`multiple_choice_accuracy`: predicted option letters against gold letters;
- :func:`interval_iou`, :func:`temporal_iou`: IoU of spans, and mIoU / R@0.3 / R@0.5 over a set of spans.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

from ..pseudo_spans import words

IOU_THRESHOLDS = (0.3, 0.5)
"""Grounding recall is reported at these IoUs (R@0.3, R@0.5)."""

OPTION_LETTERS = "ABCDEFGHIJ"
"""Multiple-choice options are lettered in this order (at most 10 options)."""

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lowercase, remove ASCII punctuation, remove the articles a / an / the, and
    collapse whitespace.

    Examples:
        >>> normalize_answer("  The Man is COOKING!  ")
        'man is cooking'
        >>> normalize_answer("an apple, a pear")
        'apple pear'
    """
    if not isinstance(text, str):
        raise ValueError(f"an answer must be a str, got {type(text).__name__}")
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> bool:
    """Whether the normalised prediction equals the normalised gold answer (:func:`normalize_answer`).

    Examples:
        >>> exact_match("The cat.", "cat")
        True
        >>> exact_match("a black cat", "cat")
        False
    """
    return normalize_answer(prediction) == normalize_answer(gold)


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD's token F1 of the normalised answers: harmonic mean of the precision and recall of shared tokens
    (counted with multiplicity). When either side has no token, 1.0 if both have none, else 0.0.

    Examples:
        >>> token_f1("a black cat", "the cat")  # tokens [black, cat] vs [cat]: P 1/2, R 1
        0.6666666666666666
        >>> token_f1("", "the")
        1.0
    """
    predicted, target = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not target:
        return float(predicted == target)
    shared = sum((Counter(predicted) & Counter(target)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(predicted), shared / len(target)
    return 2 * precision * recall / (precision + recall)


def answers_match(prediction: str, gold: str) -> bool:
    """Whether an answer is the gold answer: equal word lists after lowercasing and dropping punctuation
    (:func:`videotgb.pseudo_spans.words`); unlike :func:`exact_match`, articles count.

    Examples:
        >>> answers_match(" Red.", "red")
        True
        >>> answers_match("red square", "red")
        False
    """
    return words(prediction) == words(gold)


def check_letter(letter: str, num_options: int | None = None) -> str:
    """An option letter (``"A"``, ``"b"`` ...) in upper case; ValueError when it is not a letter of
    :data:`OPTION_LETTERS` or lies past `num_options`.

    Examples:
        >>> check_letter("b", 4)
        'B'
    """
    letters = OPTION_LETTERS if num_options is None else OPTION_LETTERS[:num_options]
    normalized = letter.strip().upper() if isinstance(letter, str) else None
    if normalized is None or len(normalized) != 1 or normalized not in letters:
        raise ValueError(f"option letter {letter!r} is not one of {', '.join(letters)}")
    return normalized


def multiple_choice_accuracy(predicted_letters: Sequence[str | None], gold_letters: Sequence[str]) -> float:
    """Fraction of items whose predicted option letter is the gold letter; a prediction of None (no letter could be
    read from the answer) counts as wrong. Letters compare case-insensitively; NaN for no items.

    Examples:
        >>> multiple_choice_accuracy(["A", "c", None, "B"], ["A", "C", "D", "D"])
        0.5
    """
    if len(predicted_letters) != len(gold_letters):
        raise ValueError(f"got {len(predicted_letters)} predicted letters for {len(gold_letters)} gold letters")
    if not gold_letters:
        return float("nan")
    correct = sum(
        predicted is not None and check_letter(predicted) == check_letter(gold)
        for predicted, gold in zip(predicted_letters, gold_letters, strict=True)
    )
    return correct / len(gold_letters)


def interval_iou(predicted: tuple[float, float], target: tuple[float, float]) -> float:
    """IoU of two half-open intervals ``[start, end)`` (frames or seconds); an empty interval (``end <= start``)
    scores 0.

    Examples:
        >>> interval_iou((10, 20), (15, 25))  # overlap 15..19 (5 frames), union 10..24 (15)
        0.3333333333333333
        >>> interval_iou((10, 10), (10, 20))
        0.0
        >>> interval_iou((1.5, 4.0), (2.0, 6.0))  # seconds: overlap 2.0, union 4.5
        0.4444444444444444
    """
    (a, b), (c, d) = predicted, target
    if b <= a or d <= c:
        return 0.0
    overlap = max(0, min(b, d) - max(a, c))
    return overlap / ((b - a) + (d - c) - overlap)


def recall_key(threshold: float) -> str:
    """The results key of the recall at an IoU threshold: ``recall@0.3``."""
    return f"recall@{threshold:g}"


def temporal_iou(
    predicted_spans: Sequence[Sequence[float]],
    gold_spans: Sequence[Sequence[float]],
    thresholds: Sequence[float] = IOU_THRESHOLDS,
) -> dict[str, float]:
    """Mean IoU and recall at IoU thresholds of predicted spans against gold spans, both ``[start, end]`` in seconds.

    Returns:
        ``{"miou": float, "recall@0.3": float, "recall@0.5": float}`` (one recall per threshold: the fraction of
        spans with IoU >= the threshold); NaN values for no spans.

    Example (IoUs 1.0, 0.25 and 0.0):
        >>> temporal_iou([[0, 2], [0, 1], [5, 6]], [[0, 2], [0, 4], [0, 1]])
        {'miou': 0.4166666666666667, 'recall@0.3': 0.3333333333333333, 'recall@0.5': 0.3333333333333333}
    """
    if len(predicted_spans) != len(gold_spans):
        raise ValueError(f"got {len(predicted_spans)} predicted spans for {len(gold_spans)} gold spans")
    for span in (*predicted_spans, *gold_spans):
        if len(span) != 2:
            raise ValueError(f"a span must be [start, end], got {list(span)!r}")
    ious = [interval_iou(tuple(p), tuple(g)) for p, g in zip(predicted_spans, gold_spans, strict=True)]
    if not ious:
        return {"miou": float("nan"), **{recall_key(t): float("nan") for t in thresholds}}
    return {
        "miou": sum(ious) / len(ious),
        **{recall_key(t): sum(iou >= t for iou in ious) / len(ious) for t in thresholds},
    }


__all__ = [
    "IOU_THRESHOLDS",
    "OPTION_LETTERS",
    "answers_match",
    "check_letter",
    "exact_match",
    "interval_iou",
    "multiple_choice_accuracy",
    "normalize_answer",
    "recall_key",
    "temporal_iou",
    "token_f1",
]
