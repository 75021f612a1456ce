"""Temporal IoU of predicted spans against gold spans (mIoU, R@0.3, R@0.5), for `evaluate`.

Load offline with ``evaluate.load(videotgb.evaluation.metric_modules.metric_path("temporal_iou"))``.
"""

import datasets
import evaluate

from videotgb.evaluation.metrics import IOU_THRESHOLDS, temporal_iou

_DESCRIPTION = """Intersection over union of predicted and gold spans [start, end] in seconds: the mean (mIoU) and
the fraction of spans with IoU at or above each threshold (R@0.3, R@0.5). An empty span scores 0."""

_INPUTS = """
Args:
    predictions: predicted spans, [start, end] in seconds.
    references: gold spans, [start, end] in seconds.
    thresholds: IoU thresholds of the recalls (default 0.3 and 0.5).
Returns:
    miou, recall@0.3, recall@0.5 (one recall per threshold).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class TemporalIou(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Sequence(datasets.Value("float64")),
                }
            ),
        )

    def _compute(self, predictions, references, thresholds=IOU_THRESHOLDS):
        if not predictions:
            raise ValueError("temporal_iou: no spans to score")
        return temporal_iou(predictions, references, thresholds)
