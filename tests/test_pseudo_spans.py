"""Pseudo spans (docs/method.md#pseudo-spans): recall, largest rectangle, ratios and the model-driven builder."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_processor, randomize_, real_vocab_model
from videos import make_video, moving_square_frames

from videotgb.keyframes import flow_step_to_candidate
from videotgb.modeling_videotgb import span_targets_to_positions
from videotgb.pseudo_spans import (
    answer_frames,
    largest_rectangle,
    pseudo_span_from_answers,
    pseudo_spans_from_model,
    span_to_ratios,
    unigram_recall,
    words,
)

# ---- unigram recall ---------------------------------------------------------------------------------------------


def test_words_are_lowercased_runs_of_letters_and_digits():
    assert words("It's 3 o'clock -- the DOG_house, café!") == [
        "it",
        "s",
        "3",
        "o",
        "clock",
        "the",
        "dog",
        "house",
        "café",
    ]
    assert words(" ... -- !? ") == []


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("a dog", "a dog", 1.0),
        ("The DOG!", "the dog", 1.0),
        ("dog", "the dog", 0.5),
        ("", "the dog", 0.0),
        ("a a a red", "a red a", 1.0),  # a: min(3, 2) = 2 of 2, red: 1 of 1
        ("a red", "a red a", 2 / 3),  # a: min(1, 2) = 1 of 2
        ("red car", "a red and a blue car", 2 / 6),
        ("yes , .", "yes, . !", 1.0),  # punctuation-only tokens are no words
        ("anything", "", 0.0),  # no reference words: 0.0
        ("anything", " ?! ", 0.0),
    ],
)
def test_unigram_recall(prediction, reference, expected):
    assert unigram_recall(prediction, reference) == pytest.approx(expected)


def test_unigram_recall_refuses_non_strings():
    with pytest.raises(ValueError, match="prediction"):
        unigram_recall(None, "a")
    with pytest.raises(ValueError, match="reference"):
        unigram_recall("a", ["a"])


# ---- largest rectangle ------------------------------------------------------------------------------------------


def brute_force_rectangle(scores, subtract_min=False):
    """O(n^2) reference: every span's width * lowest height, leftmost (start, end) among the largest."""
    floor = min(scores) if subtract_min else 0.0
    heights = [max(score - floor, 0.0) for score in scores]
    n = len(heights)
    areas = {(a, b): min(heights[a : b + 1]) * (b - a + 1) for a in range(n) for b in range(a, n)}
    best = max(areas.values())
    if best <= 0:
        return 0, n - 1
    return min(span for span, area in areas.items() if area >= best * (1 - 1e-9))


@pytest.mark.parametrize(
    ("scores", "subtract_min", "expected"),
    [
        ([0.2, 0.9, 0.8, 0.9, 0.1], False, (1, 3)),
        ([0.5, 0.5, 1.0, 0.5], False, (0, 3)),
        ([0.5, 0.5, 1.0, 0.5], True, (2, 2)),
        ([2, 1, 4, 5, 1, 3, 3], False, (2, 3)),  # the textbook histogram: 4 * 2 = 8
        ([0.0] * 5, False, (0, 4)),  # all zero: the whole range
        ([0.0] * 5, True, (0, 4)),
        ([0.7] * 4, True, (0, 3)),  # all equal: nothing rises above the floor
        ([0.3], False, (0, 0)),
        ([0.0], False, (0, 0)),
        ([-0.4], True, (0, 0)),
        ([-1.0, 0.5, -2.0], False, (1, 1)),  # negative scores count as height 0
        ([-1.0, -0.5, -2.0], False, (0, 2)),  # nothing above 0: the whole range
        ([-1.0, -0.5, -2.0], True, (0, 1)),  # heights 1.0, 1.5, 0.0: 2 * 1.0 beats 1 * 1.5
        ([-1.0, 0.5, 0.5, -2.0, 1.0], True, (1, 2)),  # heights 1, 2.5, 2.5, 0, 3: 2 * 2.5 beats 3 * 1 and 1 * 3
        ([1.0, 0.0, 1.0], False, (0, 0)),  # tie between (0, 0) and (2, 2): leftmost
        ([2.0, 1.0], False, (0, 0)),  # tie between (0, 0) and (0, 1): the one that ends first
        ([1.0, 2.0], False, (0, 1)),  # tie between (0, 1) and (1, 1): the one that starts first
        ([0.3, 0.0, 0.1, 0.1, 0.1], False, (0, 0)),  # 0.3 vs 3 * 0.1 = 0.30000000000000004: a tie, leftmost
    ],
)
def test_largest_rectangle_examples(scores, subtract_min, expected):
    assert largest_rectangle(scores, subtract_min=subtract_min) == expected
    assert brute_force_rectangle([float(score) for score in scores], subtract_min) == expected


@pytest.mark.parametrize("subtract_min", [False, True])
def test_largest_rectangle_matches_brute_force(subtract_min):
    rng = random.Random(1234)
    for trial in range(600):
        n = rng.randint(1, 24)
        if trial % 3 == 0:  # few distinct values: many ties
            scores = [rng.choice([0.0, 0.25, 0.5, 1.0]) for _ in range(n)]
        elif trial % 3 == 1:  # recall-like fractions k / L
            length = rng.randint(1, 7)
            scores = [rng.randint(0, length) / length for _ in range(n)]
        else:  # any floats, negatives included
            scores = [rng.uniform(-1.0, 1.0) for _ in range(n)]
        assert largest_rectangle(scores, subtract_min=subtract_min) == brute_force_rectangle(scores, subtract_min), (
            scores
        )


def test_largest_rectangle_is_linear_on_long_histograms():
    scores = [1.0] * 100_000  # an O(n^2) search would take minutes
    assert largest_rectangle(scores) == (0, 99_999)
    assert largest_rectangle(list(range(50_000))) == (25_000, 49_999)


@pytest.mark.parametrize(
    ("scores", "subtract_min", "message"),
    [
        ([], False, "scores must not be empty"),
        ("0.5", False, "scores must be a sequence"),
        ([0.5, float("nan")], False, "scores must be finite"),
        ([0.5, float("inf")], False, "scores must be finite"),
        ([True, 0.5], False, "scores must be finite real"),
        ([0.5], 1, "subtract_min"),
    ],
)
def test_largest_rectangle_refuses_bad_arguments(scores, subtract_min, message):
    with pytest.raises(ValueError, match=message):
        largest_rectangle(scores, subtract_min=subtract_min)


def test_largest_rectangle_accepts_numpy_and_tuples():
    assert largest_rectangle((0.0, 1.0, 1.0)) == (1, 2)
    assert largest_rectangle(list(np.array([0.0, 1.0, 1.0], dtype=np.float32))) == (1, 2)


# ---- span to ratios ---------------------------------------------------------------------------------------------


def positions(ratio_pairs, num_flow_steps):
    """Flow steps the model's span loss reads from ratio targets."""
    targets = torch.tensor(ratio_pairs, dtype=torch.float32).reshape(-1, 2)
    return span_targets_to_positions(targets, torch.full((len(targets),), num_flow_steps)).tolist()


def owned_steps(span, num_flow_steps, num_candidates):
    """Flow steps whose candidate (keyframe selection's mapping) lies inside the span."""
    start, end = span
    return [
        step
        for step in range(num_flow_steps)
        if start <= flow_step_to_candidate(step, num_flow_steps, num_candidates) <= end
    ]


def all_spans(num_candidates):
    return [(start, end) for start in range(num_candidates) for end in range(start, num_candidates)]


PAIRS = [(32, 64), (8, 5), (32, 32), (8, 1), (1, 1), (1, 7), (2, 2), (5, 9), (8, 16), (32, 20), (13, 64)]


@pytest.mark.parametrize(("num_candidates", "num_flow_steps"), PAIRS)
def test_exact_ratios_land_on_the_first_and_last_flow_step_of_the_span(num_candidates, num_flow_steps):
    spans = all_spans(num_candidates)
    ratios = [span_to_ratios(span, num_candidates, num_flow_steps=num_flow_steps) for span in spans]
    assert all(0.0 <= start <= end <= 1.0 for start, end in ratios)
    for span, (first, last) in zip(spans, positions(ratios, num_flow_steps), strict=True):
        steps = owned_steps(span, num_flow_steps, num_candidates)
        if steps:
            assert (first, last) == (steps[0], steps[-1]), span
        else:  # fewer flow steps than candidates, and none maps into the span: one neighbouring step
            assert num_flow_steps < num_candidates and first == last
            before = [
                step
                for step in range(num_flow_steps)
                if flow_step_to_candidate(step, num_flow_steps, num_candidates) < span[0]
            ]
            assert first in (before[-1], before[-1] + 1), (span, first)  # the last step before or the first after


@pytest.mark.parametrize(("num_candidates", "num_flow_steps"), PAIRS)
def test_ratios_without_flow_steps_land_inside_the_span(num_candidates, num_flow_steps):
    spans = all_spans(num_candidates)
    ratios = [span_to_ratios(span, num_candidates) for span in spans]
    assert all(0.0 <= start <= end <= 1.0 for start, end in ratios)
    for span, (first, last) in zip(spans, positions(ratios, num_flow_steps), strict=True):
        got = (
            flow_step_to_candidate(first, num_flow_steps, num_candidates),
            flow_step_to_candidate(last, num_flow_steps, num_candidates),
        )
        if num_flow_steps >= num_candidates:
            assert got == span, span  # the round trip gives the span back
        for end, candidate in zip(span, got, strict=True):
            if owned_steps((end, end), num_flow_steps, num_candidates):
                assert candidate == end, (span, got)  # an end whose candidate has flow steps lands on one


@pytest.mark.parametrize("num_candidates", [1, 2, 3, 7, 8, 32, 100, 255])
def test_ratios_without_flow_steps_hold_for_every_length_in_float32(num_candidates):
    """Each end alone, for every flow length up to the bridge's 510 positions, as `span_targets_to_positions` reads
    it (float32)."""
    ends = list(range(num_candidates))
    starts = torch.tensor([span_to_ratios((c, c), num_candidates)[0] for c in ends])
    finals = torch.tensor([span_to_ratios((c, c), num_candidates)[1] for c in ends])
    for num_flow_steps in range(1, 511):
        steps = torch.arange(num_flow_steps)
        owner = (steps * (num_candidates - 1)) // max(num_flow_steps - 1, 1)  # flow_step_to_candidate, vectorised
        owned = torch.zeros(num_candidates, dtype=torch.bool)
        owned[owner] = True
        for ratios in (starts, finals):
            pairs = torch.stack([ratios, ratios], dim=-1)
            landed = owner[span_targets_to_positions(pairs, torch.full((num_candidates,), num_flow_steps))[:, 0]]
            expected = torch.tensor(ends)
            assert torch.equal(landed[owned], expected[owned]), num_flow_steps


def test_span_to_ratios_examples():
    assert span_to_ratios((0, 31), 32) == (0.0, 1.0)
    assert span_to_ratios((0, 0), 1) == (0.0, 1.0)
    assert span_to_ratios((0, 31), 32, num_flow_steps=64) == (0.0, 1.0)
    assert span_to_ratios((3, 5), 8, num_flow_steps=1) == (0.0, 0.0)
    assert span_to_ratios((2, 5), 8, num_flow_steps=8) == (2 / 7, 5 / 7)
    assert positions([span_to_ratios((9, 14), 32, num_flow_steps=64)], 64) == [[19, 30]]
    # method.md's keyframe example: flow steps (20, 30) of 64 cover candidates 9 .. 14
    assert owned_steps((9, 14), 64, 32)[0] <= 20 and owned_steps((9, 14), 64, 32)[-1] == 30


@pytest.mark.parametrize(
    ("span", "num_candidates", "num_flow_steps", "message"),
    [
        ((3, 2), 8, None, "0 <= start <= end"),
        ((-1, 2), 8, None, "0 <= start <= end"),
        ((0, 8), 8, None, "0 <= start <= end"),
        ((0.0, 2), 8, None, "integer candidate indices"),
        ((0, 1, 2), 8, None, "span must be a"),
        (5, 8, None, "span must be a"),
        ((0, 1), 0, None, "num_candidates"),
        ((0, 1), 8, 0, "num_flow_steps"),
    ],
)
def test_span_to_ratios_refuses_bad_arguments(span, num_candidates, num_flow_steps, message):
    with pytest.raises(ValueError, match=message):
        span_to_ratios(span, num_candidates, num_flow_steps=num_flow_steps)


def test_pseudo_span_from_answers():
    answers = ["no", "a cat", "a red ball", "the red ball", "red ball!", "a ball", "no", "nothing"]
    # recall against "a red ball": 0, 1/3, 1, 2/3, 2/3, 2/3, 0, 0 -> candidates 2 .. 5 (4 * 2/3)
    assert pseudo_span_from_answers(answers, "a red ball", num_flow_steps=8) == (2 / 7, 5 / 7)
    answers = ["a", "a", "a red ball", "a", "a"]  # 1/3 everywhere but one frame
    assert pseudo_span_from_answers(answers, "a red ball", num_flow_steps=5) == (0.0, 1.0)
    assert pseudo_span_from_answers(answers, "a red ball", num_flow_steps=5, subtract_min=True) == (0.5, 0.5)
    with pytest.raises(ValueError, match="frame_answers"):
        pseudo_span_from_answers([], "a")
    with pytest.raises(ValueError, match="frame_answers"):
        pseudo_span_from_answers("a b", "a")
    with pytest.raises(ValueError, match="reference"):
        pseudo_span_from_answers(["a"], None)


# ---- the model-driven builder -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def processor(llama_tokenizer_path, minilm_path):
    return make_processor(llama_tokenizer_path, minilm_path)


@pytest.fixture(scope="module")
def model():
    return randomize_(real_vocab_model("llama"), std=0.05)


def test_real_model_answers_every_frame_and_gives_ratio_spans(model, processor):
    video = make_video(frames=moving_square_frames(num_frames=24, size=(64, 48), velocity=(1, 1)), fps=8, gop=8)
    frames = moving_square_frames(num_frames=5, size=(32, 32), velocity=(2, 1), square=8)  # fewer than 8 candidates
    clips = [video, processor.load_video(video), frames]
    questions = ["What moves?", "Where is the square going?", "What is it?"]
    model.train()
    model.vision_model.eval()  # a module in eval mode inside a training model stays so
    modes = {name: module.training for name, module in model.named_modules()}

    answers = answer_frames(model, processor, clips, questions, max_new_tokens=3, batch_size=5)
    assert {name: module.training for name, module in model.named_modules()} == modes
    assert [len(video_answers) for video_answers in answers] == [8, 8, 8]
    assert all(isinstance(answer, str) for video_answers in answers for answer in video_answers)
    # repeated candidates of the short video are answered once and share the answer
    indices = processor.load_video(frames).candidate_indices
    for a in range(8):
        for b in range(8):
            if indices[a] == indices[b]:
                assert answers[2][a] == answers[2][b]
    # batching does not change greedy answers
    assert answer_frames(model, processor, clips, questions, max_new_tokens=3, batch_size=24) == answers

    gold = ["a square", "down", "a square"]
    spans = pseudo_spans_from_model(model, processor, clips, questions, gold, max_new_tokens=3, batch_size=7)
    assert {name: module.training for name, module in model.named_modules()} == modes
    lengths = [len(processor.load_video(clip).flow_indices) for clip in clips]
    assert spans == [
        pseudo_span_from_answers(video_answers, reference, num_flow_steps=length)
        for video_answers, reference, length in zip(answers, gold, lengths, strict=True)
    ]
    assert all(isinstance(ratio, float) and 0.0 <= ratio <= 1.0 for span in spans for ratio in span)
    assert all(start <= end for start, end in spans)
    # the spans are valid targets for the span loss
    model.train()
    batch = processor(questions, videos=clips, answers=gold)
    out = model(**batch, span_targets=torch.tensor(spans))
    assert torch.isfinite(out.span_loss)


def _fake_generate(model, processor, clip, frame_answers, calls):
    """A `generate` that answers each frame with a chosen string, recognising the frame by its pixels."""
    reference = processor(["?"] * len(frame_answers), images=list(clip.candidate_frames))["pixel_values"][:, 0]
    tokenizer = processor.tokenizer

    def generate(pixel_values, **kwargs):
        calls.append(
            {
                "rows": len(pixel_values),
                "grad": torch.is_grad_enabled(),
                "training": model.training,
                **{key: kwargs[key] for key in ("max_new_tokens", "do_sample", "num_beams")},
            }
        )
        assert pixel_values.shape[1:] == (1, 3, 28, 28)  # one image per sample
        texts = []
        for image in pixel_values[:, 0]:
            matches = [i for i in range(len(reference)) if torch.allclose(image, reference[i])]
            texts.append(frame_answers[matches[0]])
        ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
        width = max(len(row) for row in ids)
        return torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in ids])

    return generate


def test_spans_from_known_answers(model, processor, monkeypatch):
    clip = processor.load_video(moving_square_frames(num_frames=16, size=(32, 32), velocity=(1, 1), square=8))
    assert len(set(clip.candidate_indices)) == 8 and len(clip.flow_indices) == 16
    frame_answers = ["no", "a cat", "a red ball", "the red ball", "red ball!", "a ball", "no", "nothing"]
    calls = []
    monkeypatch.setattr(model, "generate", _fake_generate(model, processor, clip, frame_answers, calls))
    model.train()

    spans = pseudo_spans_from_model(
        model, processor, [clip], ["What is it?"], ["A red ball."], max_new_tokens=7, batch_size=3
    )
    assert model.training
    assert [call["rows"] for call in calls] == [3, 3, 2]
    assert all(not call["grad"] and not call["training"] for call in calls)
    assert all((call["max_new_tokens"], call["do_sample"], call["num_beams"]) == (7, False, 1) for call in calls)
    # recall 0, 1/3, 1, 2/3, 2/3, 2/3, 0, 0 -> candidates 2 .. 5 -> flow steps 5 .. 12 of 16
    ((first, last),) = positions(spans, 16)
    assert (first, last) == (5, 12)
    assert flow_step_to_candidate(first, 16, 8) == 2 and flow_step_to_candidate(last, 16, 8) == 5
    assert flow_step_to_candidate(first - 1, 16, 8) == 1 and flow_step_to_candidate(last + 1, 16, 8) == 6

    # with min-subtraction a high floor no longer makes the whole video win
    frame_answers[:] = ["a", "a", "a", "a red ball", "A red ball", "a", "a", "a"]
    plain = pseudo_spans_from_model(model, processor, [clip], ["What is it?"], ["a red ball"], batch_size=8)
    lifted = pseudo_spans_from_model(
        model, processor, [clip], ["What is it?"], ["a red ball"], batch_size=8, subtract_min=True
    )
    assert plain == [(0.0, 1.0)]
    assert [[flow_step_to_candidate(p, 16, 8) for p in pair] for pair in positions(lifted, 16)] == [[3, 4]]


def test_model_is_in_eval_mode_while_generating_and_restored_after_errors(model, processor, monkeypatch):
    clip = processor.load_video(moving_square_frames(num_frames=8, size=(32, 32), velocity=(1, 1), square=8))
    seen = []

    def failing_generate(**kwargs):
        seen.append(model.training)
        raise RuntimeError("out of memory")

    monkeypatch.setattr(model, "generate", failing_generate)
    model.train()
    with pytest.raises(RuntimeError, match="out of memory"):
        answer_frames(model, processor, [clip], ["What?"])
    assert seen == [False] and model.training


def test_synced_processes_make_the_agreed_number_of_calls_on_placeholders(model, processor, monkeypatch):
    """Under ZeRO-3 every process makes as many `generate` calls as the one that needs most (here: two more than this
    one), the extra ones on a black placeholder frame whose answers are dropped; the real answers do not change. The
    other processes are stood in for by the agreed count; two real processes train under ZeRO-3 in
    tests/test_distributed_training.py."""
    import videotgb.pseudo_spans as pseudo_spans

    clip = processor.load_video(moving_square_frames(num_frames=16, size=(32, 32), velocity=(1, 1), square=8))
    size = processor.image_size
    blank = processor(["?"], images=[np.zeros((size, size, 3), np.uint8)])["pixel_values"]
    calls, generate = [], model.generate

    def recording(**kwargs):
        placeholder = kwargs["pixel_values"].shape == blank.shape and torch.equal(kwargs["pixel_values"], blank)
        calls.append((len(kwargs["pixel_values"]), kwargs["synced_gpus"], placeholder))
        return generate(**kwargs | {"synced_gpus": False})  # one process has no group to step with

    monkeypatch.setattr(model, "generate", recording)
    alone = answer_frames(model, processor, [clip], ["What is it?"], max_new_tokens=3, batch_size=3)
    assert calls == [(3, False, False), (3, False, False), (2, False, False)]  # not synced without a process group

    calls.clear()
    monkeypatch.setattr(pseudo_spans, "_agreed_call_count", lambda local, device: local + 2)
    synced = answer_frames(model, processor, [clip], ["What is it?"], max_new_tokens=3, batch_size=3, synced_gpus=True)
    assert synced == alone
    assert calls == [(3, True, False), (3, True, False), (2, True, False), (1, True, True), (1, True, True)]

    calls.clear()  # a process without any video still takes part
    assert pseudo_spans_from_model(model, processor, [], [], [], synced_gpus=True) == []
    assert calls == [(1, True, True)] * 2
    calls.clear()
    assert answer_frames(model, processor, [], []) == [] and calls == []


def test_the_agreed_call_count_of_one_process_is_its_own():
    from videotgb.pseudo_spans import _agreed_call_count

    assert _agreed_call_count(3, torch.device("cpu")) == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"questions": ["a", "b"]}, "questions has 2 entries but clips has 1"),
        ({"answers": []}, "answers has 0 entries but clips has 1"),
        ({"answers": "a"}, "answers must be a sequence"),
        ({"questions": [3]}, "questions must hold str"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"subtract_min": "yes"}, "subtract_min"),
    ],
)
def test_pseudo_spans_from_model_refuses_bad_arguments(model, processor, kwargs, message):
    arguments = {"clips": [np.zeros((4, 32, 32, 3), np.uint8)], "questions": ["q"], "answers": ["a"], **kwargs}
    with pytest.raises(ValueError, match=message):
        pseudo_spans_from_model(model, processor, **arguments)


def test_remote_code_files_do_not_import_pseudo_spans():
    package = Path(__file__).resolve().parent.parent / "videotgb"
    for name in ("configuration", "modeling", "processing"):
        assert "pseudo_spans" not in (package / f"{name}_videotgb.py").read_text()
    for name in ("video_io", "optical_flow", "keyframes"):
        assert "pseudo_spans" not in (package / f"{name}.py").read_text()
