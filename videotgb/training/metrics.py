"""What training logs besides the losses. Not part of a checkpoint's remote code."""

from __future__ import annotations

import torch

from ..modeling_videotgb import IGNORE_INDEX


def grounding_iou(start_logits: torch.Tensor, end_logits: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Per-sample IoU of the bridge's most likely span with the target span, over flow steps (ends included).

    The predicted span runs from the argmax of `start_logits` to the argmax of `end_logits` (empty when the end
    comes first). Rows whose target is `IGNORE_INDEX` are left out.

    Args:
        start_logits, end_logits: `(batch, flow_steps)`.
        positions: `(batch, 2)` target (start, end) flow steps.

    Returns:
        `(rows_with_a_target,)` IoUs in [0, 1].

    Example:
        >>> logits = torch.full((1, 8), -1e4)
        >>> start, end = logits.clone(), logits.clone()
        >>> start[0, 2], end[0, 5] = 0.0, 0.0
        >>> grounding_iou(start, end, torch.tensor([[4, 7]])).tolist()  # overlap 4..5 of union 2..7
        [0.3333333432674408]
    """
    if start_logits.shape != end_logits.shape or start_logits.dim() != 2:
        raise ValueError(
            f"start_logits and end_logits must both be (batch, steps), got {tuple(start_logits.shape)} and "
            f"{tuple(end_logits.shape)}"
        )
    if tuple(positions.shape) != (start_logits.shape[0], 2):
        raise ValueError(f"positions must have shape ({start_logits.shape[0]}, 2), got {tuple(positions.shape)}")
    kept = (positions != IGNORE_INDEX).all(-1)
    predicted_start = start_logits.argmax(-1)[kept]
    predicted_end = end_logits.argmax(-1)[kept]
    target_start, target_end = positions[kept, 0], positions[kept, 1]
    overlap = (torch.minimum(predicted_end, target_end) - torch.maximum(predicted_start, target_start) + 1).clamp(
        min=0
    )
    predicted_length = (predicted_end - predicted_start + 1).clamp(min=0)
    overlap = torch.where(predicted_length > 0, overlap, torch.zeros_like(overlap))
    union = predicted_length + (target_end - target_start + 1) - overlap
    return overlap.float() / union.float()


__all__ = ["grounding_iou"]
