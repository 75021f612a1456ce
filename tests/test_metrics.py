"""The grounding IoU that training logs: the bridge's most likely span against the target span, ends included."""

from __future__ import annotations

import pytest
import torch

from videotgb.training.metrics import IGNORE_INDEX, grounding_iou


def one_hot_logits(steps: int, *indices: int) -> torch.Tensor:
    logits = torch.full((len(indices), steps), -1e4)
    for row, index in enumerate(indices):
        logits[row, index] = 0.0
    return logits


@pytest.mark.parametrize(
    ("predicted", "target", "iou"),
    [
        ((2, 5), (2, 5), 1.0),  # the same span
        ((2, 5), (4, 7), 2 / 6),  # overlap 4..5, union 2..7
        ((0, 1), (5, 6), 0.0),  # disjoint
        ((3, 3), (3, 3), 1.0),  # one step
        ((6, 2), (2, 6), 0.0),  # end before start: an empty prediction
        ((0, 7), (3, 4), 2 / 8),  # the whole video against a short span
    ],
)
def test_documented_cases(predicted, target, iou):
    start, end = one_hot_logits(8, predicted[0]), one_hot_logits(8, predicted[1])
    assert grounding_iou(start, end, torch.tensor([target])).tolist() == pytest.approx([iou])


def test_rows_without_a_target_are_left_out():
    start, end = one_hot_logits(8, 1, 2, 3), one_hot_logits(8, 4, 5, 6)
    positions = torch.tensor([[1, 4], [IGNORE_INDEX, IGNORE_INDEX], [0, 0]])
    assert grounding_iou(start, end, positions).tolist() == pytest.approx([1.0, 0.0])


def test_bad_shapes():
    with pytest.raises(ValueError, match="start_logits and end_logits"):
        grounding_iou(torch.zeros(2, 8), torch.zeros(2, 7), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"positions must have shape \(2, 2\)"):
        grounding_iou(torch.zeros(2, 8), torch.zeros(2, 8), torch.zeros(3, 2, dtype=torch.long))
