"""Exact match and token F1 of open-ended video QA answers (SQuAD normalisation), for `evaluate`.

Load offline with ``evaluate.load(videotgb.evaluation.metric_modules.metric_path("video_qa_match"))``.
"""

import datasets
import evaluate

from videotgb.evaluation.metrics import exact_match, token_f1

_DESCRIPTION = """Exact match and token F1 of answers after SQuAD's normalisation (lowercase, no punctuation, no
articles a / an / the, single spaces), averaged over the items."""

_INPUTS = """
Args:
    predictions: the generated answers (strings).
    references: the gold answers (strings).
Returns:
    exact_match: fraction of items whose normalised answers are equal.
    token_f1: mean token F1 of the normalised answers.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class VideoQaMatch(evaluate.Metric):
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
            raise ValueError("video_qa_match: no predictions to score")
        return {
            "exact_match": sum(exact_match(p, r) for p, r in zip(predictions, references, strict=True))
            / len(predictions),
            "token_f1": sum(token_f1(p, r) for p, r in zip(predictions, references, strict=True)) / len(predictions),
        }
