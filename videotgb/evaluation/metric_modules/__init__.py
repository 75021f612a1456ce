"""`evaluate` metric modules shipped with the package, loadable offline (docs/evaluation.md#metric-modules).

Each folder holds one metric script of the same name; load it with ``evaluate.load(metric_path(name))``:

- ``videochatgpt_judge``: the Video-ChatGPT judge (:mod:`videotgb.evaluation.judge`);
- ``video_qa_match``: exact match and token F1 of open-ended answers;
- ``multiple_choice_accuracy``: accuracy of predicted option letters;
- ``temporal_iou``: mIoU, R@0.3 and R@0.5 of predicted spans in seconds.
"""

from __future__ import annotations

from pathlib import Path

METRICS = ("videochatgpt_judge", "video_qa_match", "multiple_choice_accuracy", "temporal_iou")
"""The metric modules in this folder."""


def metric_path(name: str) -> str:
    """The folder of metric module `name`, for ``evaluate.load``; ValueError naming the known modules otherwise.

    Example:
        >>> Path(metric_path("temporal_iou")).name
        'temporal_iou'
    """
    if name not in METRICS:
        raise ValueError(f"no metric module {name!r}; the package ships {', '.join(METRICS)}")
    return str(Path(__file__).resolve().parent / name)


__all__ = ["METRICS", "metric_path"]
