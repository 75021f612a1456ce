"""`videotgb synthetic eval`: the benchmark's modes, metrics, baselines, predictions and errors, on a tiny random
VideoTGB and a few real generated videos."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import shutil

import pytest
from conftest import assert_one_line_error, run_cli

from videotgb.cli import main
from videotgb.keyframes import bin_midpoints, reduce_to_k, spans_to_candidates
from videotgb.synthetic import SyntheticConfig, generate, load_index, samples
from videotgb.synthetic.evaluate import (
    MODES,
    EvaluationError,
    answers_match,
    bridge_span_frames,
    check_modes,
    evaluate,
    format_report,
    interval_iou,
    oracle_candidates,
    plot_results,
    random_span_baseline,
)
from videotgb.synthetic.recipe import init_tiny_model
from videotgb.video_io import sample_flow_indices

VIDEOS = 5


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return init_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    config = SyntheticConfig(
        seed=0, num_videos={"test": VIDEOS}, num_frames=64, event_frames=8, question_types=("colour", "shape")
    )
    generate(config, out)
    return out


@pytest.fixture(scope="module")
def evaluated(tiny_model, data, tmp_path_factory):
    """Every mode on every test video, in two batches (3 + 2), with predictions."""
    predictions = tmp_path_factory.mktemp("eval") / "predictions.jsonl"
    results = evaluate(tiny_model, data, batch_size=3, predictions_path=predictions)
    lines = [json.loads(line) for line in predictions.read_text().splitlines()]
    return results, lines


# ---- pure functions --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("predicted", "target", "iou"),
    [
        ((10, 20), (10, 20), 1.0),
        ((10, 20), (15, 25), 5 / 15),  # overlap 15..19, union 10..24
        ((0, 4), (4, 8), 0.0),  # touching half-open intervals do not overlap
        ((0, 64), (8, 16), 8 / 64),  # the whole video against an 8-frame event
        ((12, 12), (8, 16), 0.0),  # an empty prediction
        ((9, 10), (8, 16), 1 / 8),
    ],
)
def test_interval_iou_hand_cases(predicted, target, iou):
    assert interval_iou(predicted, target) == pytest.approx(iou)


def test_bridge_span_frames_includes_both_ends_and_is_empty_when_reversed():
    flow_indices = [1, 5, 9, 13, 17]
    assert bridge_span_frames(1, 3, flow_indices) == (5, 14)
    assert bridge_span_frames(2, 2, flow_indices) == (9, 10)
    assert bridge_span_frames(3, 1, flow_indices) == (13, 13)
    assert interval_iou(bridge_span_frames(1, 3, flow_indices), (5, 14)) == 1.0


def test_random_span_baseline_hand_examples():
    # 2-frame span at [1, 3) of 5 frames: placements [0,2) [1,3) [2,4) [3,5) give IoU 1/3, 1, 1/3, 0
    assert random_span_baseline(1, 3, 5) == pytest.approx({"miou": 5 / 12, "r@0.3": 3 / 4, "r@0.5": 1 / 4})
    # the span fills the video: the one placement is exact
    assert random_span_baseline(0, 8, 8) == {"miou": 1.0, "r@0.3": 1.0, "r@0.5": 1.0}
    # 4 frames of 8 at the start: placements 0..4 overlap 4, 3, 2, 1, 0 -> IoU 1, 3/5, 1/3, 1/7, 0
    assert random_span_baseline(0, 4, 8) == pytest.approx(
        {"miou": (1 + 3 / 5 + 1 / 3 + 1 / 7) / 5, "r@0.3": 3 / 5, "r@0.5": 2 / 5}
    )


@pytest.mark.parametrize(("start", "end", "frames"), [(3, 9, 20), (0, 1, 7), (40, 56, 64), (5, 6, 6)])
def test_random_span_baseline_equals_enumerating_every_placement(start, end, frames):
    length = end - start
    ious = [interval_iou((p, p + length), (start, end)) for p in range(frames - length + 1)]
    expected = {
        "miou": sum(ious) / len(ious),
        "r@0.3": sum(iou >= 0.3 for iou in ious) / len(ious),
        "r@0.5": sum(iou >= 0.5 for iou in ious) / len(ious),
    }
    assert random_span_baseline(start, end, frames) == pytest.approx(expected)
    with pytest.raises(ValueError, match="non-empty part"):
        random_span_baseline(5, 5, frames)


def test_oracle_candidates_inside_the_span_or_the_nearest_one():
    candidates = [1, 3, 5, 7, 9, 11, 13, 15]
    assert oracle_candidates(candidates, 4, 10, 4) == ([2, 2, 3, 4], False)  # frames 5, 7, 9 inside
    assert oracle_candidates(candidates, 0, 16, 4) == (reduce_to_k(list(range(8)), 8, 4), False)
    assert oracle_candidates([0, 4, 8, 12], 9, 11, 4) == ([2, 2, 2, 2], True)  # frame 8 is nearest to 9.5
    assert oracle_candidates(candidates, 6, 7, 2) == ([2, 2], True)  # 5 and 7 tie for 6: the first wins


def test_answers_match_on_words():
    assert answers_match("Red.", "red") and answers_match("  red ", "red")
    assert not answers_match("red square", "red") and not answers_match("", "red")


def test_check_modes_orders_and_refuses_unknown_modes():
    assert check_modes("oracle, uniform") == ("uniform", "oracle")
    assert check_modes(MODES) == MODES
    with pytest.raises(EvaluationError, match="--modes 'uniform,keyframes'.*'keyframes'"):
        check_modes("uniform,keyframes")


# ---- evaluate --------------------------------------------------------------------------------------------------


def test_every_mode_answers_every_sample_with_well_formed_metrics(evaluated, data):
    results, _ = evaluated
    settings = results["settings"]
    assert settings["samples"] == VIDEOS and settings["num_frames"] == [64] and settings["modes"] == list(MODES)
    assert (settings["num_keyframes"], settings["num_candidates"], settings["max_flow_steps"]) == (4, 32, 64)
    types = {sample["question_type"] for sample in samples(load_index(data), "test")}
    for mode, metrics in results["modes"].items():
        assert metrics["answers"] == VIDEOS and 0 <= metrics["accuracy"] <= 1
        assert metrics["accuracy"] == pytest.approx(metrics["correct"] / VIDEOS)
        assert set(metrics["per_type"]) == types
        assert sum(entry["answers"] for entry in metrics["per_type"].values()) == VIDEOS
        assert metrics["seconds_per_answer"] > 0
        assert metrics["visual_tokens"] == (32 if mode == "dense" else 4) * 4  # concat of 4 query tokens a frame
    assert results["modes"]["dense"]["vit_frames_per_answer"] == 32
    assert results["modes"]["uniform"]["vit_frames_per_answer"] == 4
    assert 1 <= results["modes"]["bridge"]["vit_frames_per_answer"] <= 4
    grounding = results["grounding"]
    assert grounding["samples"] == VIDEOS and 0 <= grounding["miou"] <= 1
    assert set(results["baselines"]["random_span"]) == {"miou", "r@0.3", "r@0.5"}
    assert results["timing"]["reading_s_per_video"] > 0 and results["machine"]["cpu_count"] >= 1
    json.dumps(results)  # JSON-ready


def test_predictions_hold_one_line_per_sample_in_order(evaluated, data):
    _, lines = evaluated
    expected = samples(load_index(data), "test")
    assert [line["id"] for line in lines] == [sample["id"] for sample in expected]
    for line, sample in zip(lines, expected, strict=True):
        assert (line["gold"], line["question"]) == (sample["answer"], sample["question"])
        assert line["span_frames"] == [sample["start_frame"], sample["end_frame"]]
        assert set(line["modes"]) == set(MODES)
        for mode in line["modes"].values():
            assert len(mode["keyframes"]) == len(mode["keyframe_frames"]) == len(mode["keyframe_seconds"])
            assert mode["correct"] == answers_match(mode["answer"], line["gold"])


def test_uniform_keyframes_are_bin_midpoints_and_dense_reads_every_candidate(evaluated):
    _, lines = evaluated
    for line in lines:
        assert line["modes"]["uniform"]["keyframes"] == bin_midpoints(32, 4)
        assert line["modes"]["dense"]["keyframes"] == list(range(32))


def test_oracle_keyframes_lie_inside_the_true_span(evaluated):
    results, lines = evaluated
    assert results["modes"]["oracle"]["oracle_fallbacks"] == 0  # 8-frame events, a candidate every 2 frames
    for line in lines:
        start, end = line["span_frames"]
        frames = line["modes"]["oracle"]["keyframe_frames"]
        assert len(frames) == 4 and all(start <= frame < end for frame in frames), (line["span_frames"], frames)
    assert results["modes"]["oracle"]["keyframes_in_span"] == 1.0
    assert results["modes"]["oracle"]["samples_with_keyframe_in_span"] == 1.0


def test_bridge_span_is_the_one_that_chose_the_bridge_keyframes_and_its_iou_is_reported(evaluated):
    results, lines = evaluated
    flow_indices = sample_flow_indices(64, 64)
    for line in lines:
        start_step, end_step = line["bridge_span_steps"]
        # the model draws num_spans = 2 argmax pairs (the same pair twice) and keeps the span's candidates
        candidates = spans_to_candidates([(start_step, end_step)] * 2, len(flow_indices), 32)
        assert line["modes"]["bridge"]["keyframes"] == reduce_to_k(candidates, 32, 4)
        assert line["bridge_span_frames"] == list(bridge_span_frames(start_step, end_step, flow_indices))
        assert line["bridge_iou"] == interval_iou(tuple(line["bridge_span_frames"]), tuple(line["span_frames"]))
    assert results["grounding"]["miou"] == pytest.approx(sum(line["bridge_iou"] for line in lines) / len(lines))


def test_max_flow_steps_sets_what_the_bridge_reads_up_to_its_limit(tiny_model, data):
    results = evaluate(tiny_model, data, modes="bridge", limit=1, max_flow_steps=8)
    assert results["settings"]["max_flow_steps"] == 8 and results["settings"]["mean_flow_steps"] == 8
    assert results["settings"]["bridge_max_flow_steps"] == 510 and list(results["modes"]) == ["bridge"]
    with pytest.raises(EvaluationError, match="--max-flow-steps 511: .* at most 510 flow steps"):
        evaluate(tiny_model, data, modes="bridge", limit=1, max_flow_steps=511)


def test_report_and_plot(evaluated, tmp_path):
    results, _ = evaluated
    report = format_report(results)
    for fragment in ("| mode | accuracy | colour | shape |", "| dense |", "| oracle |", "mIoU", "R@0.5", "random"):
        assert fragment in report
    assert len([line for line in report.splitlines() if line.startswith("| ")]) == 1 + len(MODES)
    longer = json.loads(json.dumps(results))
    longer["settings"]["num_frames"] = [512]
    path = plot_results([results, longer], tmp_path / "accuracy.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="2 labels for 1"):
        plot_results([results], tmp_path / "other.png", labels=["a", "b"])


# ---- command line ----------------------------------------------------------------------------------------------


def test_cli_prints_the_report_and_writes_results_predictions_and_plot(tiny_model, data, tmp_path):
    output, predictions, plot = tmp_path / "results.json", tmp_path / "predictions.jsonl", tmp_path / "accuracy.png"
    arguments = ["synthetic", "eval", "--model", str(tiny_model), "--data", str(data), "--modes", "uniform,bridge"]
    arguments += ["--limit", "2", "--output", str(output), "--predictions", str(predictions), "--plot", str(plot)]
    status, out, err = run_cli(*arguments, "--no-progress")
    assert status == 0, err
    assert "| uniform |" in out and "| bridge |" in out and "| dense |" not in out
    assert json.loads(output.read_text())["settings"]["samples"] == 2
    assert len(predictions.read_text().splitlines()) == 2 and plot.stat().st_size > 0
    status, _, err = run_cli(*arguments, "--no-progress")
    assert_one_line_error(status, err, "videotgb synthetic eval: error:", f"--output {output}", "--overwrite")


def test_cli_bad_inputs_are_one_line_errors(tiny_model, data, tmp_path):
    def run(*extra: str, model=tiny_model, folder=data) -> tuple[int, str]:
        status, _, err = run_cli("synthetic", "eval", "--model", str(model), "--data", str(folder), *extra)
        return status, err

    assert_one_line_error(*run(folder=tmp_path), f"{tmp_path / 'index.json'}: no such file")
    assert_one_line_error(*run("--modes", "uniform,best"), "--modes", "'best'", "uniform, dense, bridge, oracle")
    assert_one_line_error(*run("--batch-size", "0"), "--batch-size 0: must be a positive integer")
    assert_one_line_error(*run("--split", "train"), "split 'train'", "no samples")
    assert_one_line_error(*run("--max-flow-steps", "600"), "--max-flow-steps 600", "at most 510")

    weights_only = tmp_path / "weights-only"
    weights_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model / name, weights_only / name)
    assert_one_line_error(*run(model=weights_only), f"--model {weights_only}", "processor_config.json")

    videos_gone = tmp_path / "videos-gone"
    videos_gone.mkdir()
    shutil.copy(data / "index.json", videos_gone / "index.json")
    missing = videos_gone / samples(load_index(data), "test")[0]["file"]
    assert_one_line_error(*run(folder=videos_gone), f"{missing}: no such video file")


def test_eval_help_documents_every_flag():
    with pytest.raises(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:
        main(["synthetic", "eval", "--help"])
    text = out.getvalue()
    flags = ["--model", "--data", "--split", "--modes", "--batch-size", "--max-flow-steps", "--limit", "--output"]
    flags += ["--predictions", "--plot", "--device", "--overwrite", "--no-progress"]
    for word in itertools.chain(flags, MODES, ["--max-flow-steps 510", "docs/synthetic.md"]):
        assert word in text


def test_a_split_of_videos_without_events_is_refused(tiny_model, tmp_path):
    generate(SyntheticConfig(num_videos={"test": 2}, num_frames=16, event_frames=8, events_per_video=0), tmp_path)
    with pytest.raises(EvaluationError, match="test:000000 has no event"):
        evaluate(tiny_model, tmp_path, split="test")
