"""Keyframe selection (documented in docs/method.md): the documented examples and the original's defects that must
not return."""

from __future__ import annotations

import pytest
import torch

from videotgb.keyframes import (
    bin_midpoints,
    draw_spans,
    flow_step_to_candidate,
    reduce_to_k,
    select_keyframes,
    spans_to_candidates,
)


@pytest.mark.parametrize(
    ("indices", "expected"),
    [
        ([5], [5, 5, 5, 5]),
        ([3, 4, 5], [3, 3, 4, 5]),
        (list(range(32)), [3, 11, 19, 27]),
        (list(range(10, 20)), [10, 13, 15, 18]),
    ],
)
def test_documented_reduction_examples(indices, expected):
    assert reduce_to_k(indices, 32, 4) == expected


def test_empty_selection_falls_back_to_all_candidates():
    assert reduce_to_k([], 32, 4) == [3, 11, 19, 27]


def test_bin_midpoints_of_candidate_frames():
    assert bin_midpoints(32, 32) == list(range(32))
    assert bin_midpoints(320, 32)[:3] == [4, 14, 24]
    assert bin_midpoints(10, 32)[0] == 0  # the original produced -1 here (Python's "last frame")
    assert all(0 <= index < 10 for index in bin_midpoints(10, 32))
    assert bin_midpoints(1, 4) == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="total must be an integer >= 1, got 0"):
        bin_midpoints(0, 4)


def test_flow_step_mapping_includes_both_ends_and_survives_one_step():
    assert flow_step_to_candidate(0, 64, 32) == 0
    assert flow_step_to_candidate(63, 64, 32) == 31
    assert flow_step_to_candidate(0, 1, 32) == 0  # the original divided by zero


def test_span_end_is_inclusive_by_default_and_exclusive_on_request():
    assert spans_to_candidates([(2, 4)], 8, 8) == [2, 3, 4]
    assert spans_to_candidates([(2, 4)], 8, 8, end_inclusive=False) == [2, 3]


def test_whole_video_fallbacks_select_every_candidate_including_the_last():
    assert spans_to_candidates([(0, 0)], 8, 4) == [0, 1, 2, 3]
    assert spans_to_candidates([(1, 9)], 8, 4) == [0, 1, 2, 3]
    assert spans_to_candidates([(0, 0)], 8, 4, end_inclusive=False) == [0, 1, 2, 3]


def test_reversed_span_selects_nothing_and_union_of_spans():
    assert spans_to_candidates([(5, 2)], 8, 8) == []
    assert spans_to_candidates([(1, 2), (5, 6)], 8, 8) == [1, 2, 5, 6]


def test_padded_and_eos_positions_are_never_drawn():
    torch.manual_seed(0)
    start = torch.zeros(3, 10)
    start[:, 7:] = 50.0  # huge logits on positions past each video's length
    end = start.clone()
    lengths = torch.tensor([7, 3, 1])
    for strategy in ("argmax", "sample"):
        spans = draw_spans(start, end, lengths, num_spans=50, strategy=strategy)
        assert (spans < lengths[:, None, None]).all()


def test_argmax_is_deterministic_and_sample_follows_the_distribution():
    start = torch.tensor([[0.0, 5.0, 0.0, 0.0]])
    end = torch.tensor([[0.0, 0.0, 0.0, 5.0]])
    lengths = torch.tensor([4])
    assert draw_spans(start, end, lengths, 2).tolist() == [[[1, 3], [1, 3]]]
    generator = torch.Generator().manual_seed(0)
    spans = draw_spans(start, end, lengths, 2000, strategy="sample", generator=generator)
    share = (spans[0, :, 0] == 1).float().mean().item()
    expected = torch.softmax(start[0], 0)[1].item()
    assert abs(share - expected) < 0.03


def test_select_keyframes_end_to_end():
    start = torch.full((2, 8), -10.0)
    end = torch.full((2, 8), -10.0)
    start[0, 2], end[0, 5] = 10.0, 10.0  # steps 2..5 of 8 -> candidates 8..22 of 32
    start[1, 0], end[1, 0] = 10.0, 10.0  # (0, 0) -> whole video
    chosen = select_keyframes(start, end, torch.tensor([8, 8]), num_candidates=32, num_keyframes=4)
    candidates = list(range(flow_step_to_candidate(2, 8, 32), flow_step_to_candidate(5, 8, 32) + 1))
    assert chosen[0].tolist() == reduce_to_k(candidates, 32, 4)
    assert chosen[1].tolist() == [3, 11, 19, 27]


def test_select_keyframes_with_a_single_flow_step():
    chosen = select_keyframes(torch.zeros(1, 1), torch.zeros(1, 1), torch.tensor([1]), 8, 2)
    assert chosen.tolist() == [[1, 5]]


def test_bad_selection_arguments():
    with pytest.raises(ValueError, match="at least one flow step"):
        select_keyframes(torch.zeros(1, 4), torch.zeros(1, 4), torch.tensor([0]), 8, 2)
    with pytest.raises(ValueError, match="strategy"):
        draw_spans(torch.zeros(1, 4), torch.zeros(1, 4), torch.tensor([4]), 1, strategy="gumbel")


ONE = torch.zeros(1, 4)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: bin_midpoints(4, 0), "num must be an integer >= 1, got 0"),
        (lambda: bin_midpoints(2.5, 2), "total must be an integer >= 1, got 2.5"),
        (lambda: flow_step_to_candidate(0, 0, 8), "num_flow_steps must be an integer >= 1, got 0"),
        (lambda: flow_step_to_candidate(0, 4, 0), "num_candidates must be an integer >= 1, got 0"),
        (lambda: flow_step_to_candidate(4, 4, 8), r"step must lie in \[0, 4\), got 4"),
        (lambda: flow_step_to_candidate(-1, 4, 8), r"step must lie in \[0, 4\), got -1"),
        (lambda: spans_to_candidates([(0, 1)], 0, 8), "num_flow_steps must be an integer >= 1, got 0"),
        (lambda: spans_to_candidates([(0, 1)], 4, 0), "num_candidates must be an integer >= 1, got 0"),
        (lambda: spans_to_candidates([(0, 1, 2)], 4, 8), r"spans must be \(start, end\) pairs, got \(0, 1, 2\)"),
        (lambda: reduce_to_k([], 0, 4), "num_candidates must be an integer >= 1, got 0"),
        (lambda: reduce_to_k([1], 8, 0), "k must be an integer >= 1, got 0"),
        (lambda: reduce_to_k([1, 8], 8, 2), r"indices must lie in \[0, 8\), got 8"),
        (lambda: reduce_to_k([-1], 8, 2), r"indices must lie in \[0, 8\), got -1"),
        (lambda: draw_spans(ONE, ONE, torch.tensor([4]), 0), "num_spans must be an integer >= 1, got 0"),
        (lambda: draw_spans(ONE, ONE, torch.tensor([0]), 1), r"lengths must lie in \[1, 4\], got \[0\]"),
        (lambda: draw_spans(ONE, ONE, torch.tensor([5]), 1), r"lengths must lie in \[1, 4\], got \[5\]"),
        (lambda: draw_spans(ONE, ONE, torch.tensor([4, 4]), 1), r"lengths must have shape \(1,\), got \(2,\)"),
        (
            lambda: draw_spans(ONE, torch.zeros(1, 3), torch.tensor([3]), 1),
            r"start_logits and end_logits must have the same shape \(batch, steps\), got \(1, 4\) and \(1, 3\)",
        ),
        (
            lambda: draw_spans(torch.zeros(4), torch.zeros(4), torch.tensor([4]), 1),
            r"start_logits and end_logits must have the same shape \(batch, steps\), got \(4,\) and \(4,\)",
        ),
        (lambda: select_keyframes(ONE, ONE, torch.tensor([4]), 0, 2), "num_candidates must be an integer >= 1, got 0"),
        (lambda: select_keyframes(ONE, ONE, torch.tensor([4]), 8, 0), "num_keyframes must be an integer >= 1, got 0"),
        (lambda: select_keyframes(ONE, ONE, torch.tensor([4]), 8, 2, 0), "num_spans must be an integer >= 1, got 0"),
    ],
)
def test_public_functions_check_their_arguments(call, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        call()
