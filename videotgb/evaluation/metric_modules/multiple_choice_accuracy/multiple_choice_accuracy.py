"""Accuracy of predicted option letters of multiple-choice video QA, for `evaluate`.

Load offline with ``evaluate.load(videotgb.evaluation.metric_modules.metric_path("multiple_choice_accuracy"))``.
"""

import datasets
import evaluate

from videotgb.evaluation.metrics import multiple_choice_accuracy

_DESCRIPTION = """Fraction of items whose predicted option letter (A, B, ...) is the gold letter; a prediction of
None (no letter could be read from the answer) counts as wrong."""

_INPUTS = """
Args:
    predictions: predicted letters (strings, or None when no letter was parsed).
    references: gold letters.
Returns:
    accuracy: the fraction of correct letters.
    unanswered: how many predictions were None.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class MultipleChoiceAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        if not predictions:
            raise ValueError("multiple_choice_accuracy: no predictions to score")
        return {
            "accuracy": multiple_choice_accuracy(predictions, references),
            "unanswered": sum(p is None for p in predictions),
        }
