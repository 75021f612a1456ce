"""`videotgb eval run`: benchmark loaders, the predictions file, resuming, failed items and bad input, end to end with
the tiny trained model shipped with the package on real encoded videos."""

from __future__ import annotations

import json

import pytest
from conftest import assert_one_line_error, run_cli
from videos import make_video

from videotgb.demo import DEFAULT_MODEL
from videotgb.evaluation.benchmarks import (
    BenchmarkError,
    answer_letter,
    find_video,
    load_multiple_choice,
    load_videochatgpt,
)
from videotgb.evaluation.run import GENERATION_PRESETS, main, parse_letter, read_predictions
from videotgb.modeling_videotgb import VideoTGBForConditionalGeneration
from videotgb.synthetic import SyntheticConfig, generate

CONTRACT_KEYS = {
    "benchmark",
    "format",
    "id",
    "video",
    "question",
    "answer",
    "options",
    "prediction",
    "predicted_letter",
    "keyframe_indices",
    "keyframe_seconds",
    "gold_span_seconds",
    "predicted_span_seconds",
    "error",
    "model",
    "generation",
}


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    """Four real videos (one under ActivityNet's ``v_`` name, one in Matroska) and a file that is not a video."""
    folder = tmp_path_factory.mktemp("videos")
    make_video(folder / "clip0.mp4", frames=40, size=(64, 48))
    make_video(folder / "clip1.mp4", frames=24, size=(48, 64))
    make_video(folder / "v_act2.mp4", frames=48, size=(64, 48))
    make_video(folder / "clip3.mkv", frames=32, size=(64, 48), container="mkv")
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"not a video" * 50)
    return folder


def _write(path, records):
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def videochatgpt(video_dir, tmp_path_factory):
    """Question and answer files; answers in another order than questions; q4's video is missing, q5's broken."""
    folder = tmp_path_factory.mktemp("msvd")
    names = ["clip0", "clip1", "act2", "clip3", "nowhere", "broken"]
    questions = [
        {"video_name": name, "question": f"what happens in video {number}?", "question_id": f"q{number}"}
        for number, name in enumerate(names)
    ]
    answers = [{"answer": f"gold {number}", "type": 0, "question_id": f"q{number}"} for number in range(len(names))]
    return _write(folder / "test_q.json", questions), _write(folder / "test_a.json", answers[::-1])


@pytest.fixture
def count_generations(monkeypatch):
    """Counts the rows that `VideoTGBForConditionalGeneration.generate` answers; `stop_after` calls makes the next
    call raise KeyboardInterrupt (a run stopped by the user)."""
    state = {"rows": 0, "calls": 0, "stop_after": None}
    original = VideoTGBForConditionalGeneration.generate

    def counting(self, *args, **kwargs):
        if state["stop_after"] is not None and state["calls"] >= state["stop_after"]:
            raise KeyboardInterrupt
        state["calls"] += 1
        state["rows"] += kwargs["input_ids"].shape[0]
        return original(self, *args, **kwargs)

    monkeypatch.setattr(VideoTGBForConditionalGeneration, "generate", counting)
    return state


def _vcg_args(videochatgpt, video_dir, predictions, *extra):
    questions, answers = videochatgpt
    return [
        "eval",
        "run",
        "--questions",
        str(questions),
        "--answers",
        str(answers),
        "--video-dir",
        str(video_dir),
        "--predictions",
        str(predictions),
        "--no-progress",
        *extra,
    ]


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---- loaders ---------------------------------------------------------------------------------------------------


def test_find_video_tries_extensions_and_the_activitynet_prefix(video_dir):
    assert find_video(video_dir, "clip0") == video_dir / "clip0.mp4"
    assert find_video(video_dir, "clip0.mp4") == video_dir / "clip0.mp4"
    assert find_video(video_dir, "act2") == video_dir / "v_act2.mp4"  # ActivityNet names lack the v_ of the file
    assert find_video(video_dir, "v_clip1") == video_dir / "clip1.mp4"
    assert find_video(video_dir, "clip3") == video_dir / "clip3.mkv"
    assert find_video(video_dir, "nowhere") is None


def test_videochatgpt_pairs_answers_by_question_id_not_position(videochatgpt, video_dir):
    items = load_videochatgpt(*videochatgpt, video_dir)
    assert [item.id for item in items] == [f"q{number}" for number in range(6)]
    assert [item.answer for item in items] == [f"gold {number}" for number in range(6)]
    assert items[2].video == video_dir / "v_act2.mp4"
    assert items[4].video is None and "missing video" in items[4].problem and "nowhere" in items[4].problem


def test_videochatgpt_ids_that_disagree_name_both_files_and_ids(videochatgpt, video_dir, tmp_path):
    questions, answers = videochatgpt
    records = json.loads(answers.read_text())
    records[0]["question_id"] = "stray"
    other = _write(tmp_path / "other_a.json", records)
    predictions = tmp_path / "predictions.jsonl"
    status, _, err = run_cli(*_vcg_args((questions, other), video_dir, predictions))
    assert_one_line_error(status, err, str(questions), str(other), "'q5'", "'stray'")
    assert not predictions.exists()


def test_multiple_choice_reads_the_styles_of_nextqa_egoschema_and_videomme(video_dir, tmp_path):
    records = [
        {"video": "clip0", "qid": 3, "question": "q?", "a0": "x", "a1": "y", "a2": "z", "answer": 2},  # NExT-QA
        {"q_uid": "clip1", "question": "q?", "option 0": "x", "option 1": "y", "answer": "1"},  # EgoSchema
        {"videoID": "clip3", "question_id": "m-1", "question": "q?", "options": ["A. x", "B. y"], "answer": "B"},
    ]
    path = tmp_path / "mc.jsonl"
    path.write_text("\n".join(json.dumps(record) for record in records) + "\n")
    items = load_multiple_choice(path, video_dir)
    assert [(item.id, item.answer, item.options) for item in items] == [
        ("clip0_3", "C", ("x", "y", "z")),
        ("clip1", "B", ("x", "y")),
        ("m-1", "B", ("x", "y")),  # Video-MME's "A. " prefixes are the letters, not the text
    ]
    assert items[2].video == video_dir / "clip3.mkv"


@pytest.mark.parametrize("answer", ["E", 4, "(e)", -1, "yes"])
def test_an_answer_beyond_the_options_names_the_item(answer):
    with pytest.raises(BenchmarkError, match=r"item 'n7'.*answer .* not one of the 4 options"):
        answer_letter(answer, 4, "item 'n7'")


def test_multiple_choice_letter_out_of_range_is_a_one_line_error(video_dir, tmp_path):
    path = _write(
        tmp_path / "mc.json", [{"id": "n7", "video": "clip0", "question": "q?", "options": ["a", "b"], "answer": "C"}]
    )
    status, _, err = run_cli(
        "eval",
        "run",
        "--multiple-choice",
        str(path),
        "--video-dir",
        str(video_dir),
        "--predictions",
        str(tmp_path / "p.jsonl"),
    )
    assert_one_line_error(status, err, str(path), "'n7'", "'C'")


@pytest.mark.parametrize(
    ("prediction", "letter"),
    [
        ("B", "B"),
        ("(c) jump", "C"),
        ("C. jump", "C"),
        ("jump", "C"),
        ("The answer is A.", "A"),
        ("A man", None),
        ("D", None),
        ("", None),
    ],
)
def test_parse_letter(prediction, letter):
    assert parse_letter(prediction, ["cook", "run", "jump"]) == letter


# ---- end to end ------------------------------------------------------------------------------------------------


def test_videochatgpt_run_writes_contract_lines_and_counts_failed_videos(
    videochatgpt, video_dir, tmp_path, count_generations
):
    predictions = tmp_path / "out" / "msvd.jsonl"
    status, out, _ = run_cli(*_vcg_args(videochatgpt, video_dir, predictions, "--batch-size", "3"))
    assert status == 0
    assert "6 items; 0 already" in out and "4 answered now, 2 failed" in out
    lines = _lines(predictions)
    assert count_generations["rows"] == 4  # the missing and the broken video reach no generation
    assert [line["id"] for line in lines] == [
        "q0",
        "q1",
        "q2",
        "q4",
        "q3",
        "q5",
    ]  # a missing video is written first in its batch
    for line in lines:
        assert set(line) == CONTRACT_KEYS
        assert line["benchmark"] == f"{videochatgpt[0].parent.name}_test" and line["format"] == "videochatgpt"
        assert line["model"] == str(DEFAULT_MODEL) and line["generation"] == GENERATION_PRESETS["greedy"]
        assert line["answer"] == f"gold {line['id'][1:]}"
    answered = [line for line in lines if line["error"] is None]
    for line in answered:
        assert isinstance(line["prediction"], str) and line["options"] is None and line["predicted_letter"] is None
        assert len(line["keyframe_indices"]) == len(line["keyframe_seconds"]) == 4
        start, end = line["predicted_span_seconds"]
        assert 0 <= start <= end
    by_id = {line["id"]: line for line in lines}
    assert by_id["q4"]["prediction"] is None and by_id["q4"]["error"].startswith("missing video: ")
    assert "nowhere" in by_id["q4"]["error"] and by_id["q4"]["video"] is None
    assert by_id["q5"]["prediction"] is None and by_id["q5"]["error"].startswith(f"undecodable video: {video_dir}")
    # clip0 has 40 frames at 24 fps: keyframes are frame indices of the video, seconds their times
    assert all(0 <= index < 40 for index in by_id["q0"]["keyframe_indices"])
    assert by_id["q0"]["keyframe_seconds"] == pytest.approx([i / 24 for i in by_id["q0"]["keyframe_indices"]])


def test_an_interrupted_run_resumes_without_repeating_items(videochatgpt, video_dir, tmp_path, count_generations):
    predictions = tmp_path / "msvd.jsonl"
    count_generations["stop_after"] = 1  # the second batch is interrupted
    with pytest.raises(KeyboardInterrupt):
        main(_vcg_args(videochatgpt, video_dir, predictions, "--batch-size", "2")[2:])
    written = predictions.read_bytes()
    assert [line["id"] for line in _lines(predictions)] == ["q0", "q1"]
    assert count_generations["rows"] == 2

    count_generations["stop_after"] = None
    status, out, _ = run_cli(*_vcg_args(videochatgpt, video_dir, predictions, "--batch-size", "2"))
    assert status == 0 and "6 items; 2 already" in out
    assert count_generations["rows"] == 2 + 2  # q2 and q3: never q0 or q1 again
    assert predictions.read_bytes().startswith(written)  # nothing written before is rewritten
    ids = [line["id"] for line in _lines(predictions)]
    assert sorted(ids) == [f"q{number}" for number in range(6)]

    status, out, _ = run_cli(*_vcg_args(videochatgpt, video_dir, predictions))
    assert status == 0 and "6 already" in out and count_generations["rows"] == 4  # a finished file: nothing to do
    status, out, _ = run_cli(*_vcg_args(videochatgpt, video_dir, predictions, "--limit", "2"))
    assert status == 0 and "2 items; 2 already" in out and count_generations["rows"] == 4


def test_a_line_cut_short_by_a_crash_is_removed_and_its_item_answered_again(
    videochatgpt, video_dir, tmp_path, count_generations
):
    predictions = tmp_path / "msvd.jsonl"
    assert run_cli(*_vcg_args(videochatgpt, video_dir, predictions, "--limit", "3"))[0] == 0
    complete = predictions.read_text().splitlines(keepends=True)
    kept = "".join(complete[:2])
    predictions.write_text(kept + complete[2][:40])  # the third line was being written when the run died
    before = count_generations["rows"]
    records, partial = read_predictions(predictions)
    assert partial and [record["id"] for record in records] == ["q0", "q1"]

    assert run_cli(*_vcg_args(videochatgpt, video_dir, predictions, "--limit", "3"))[0] == 0
    assert count_generations["rows"] - before == 1
    text = predictions.read_text()
    assert text.startswith(kept) and [line["id"] for line in _lines(predictions)] == ["q0", "q1", "q2"]


def test_resuming_with_other_settings_or_a_damaged_line_is_refused_and_changes_nothing(
    videochatgpt, video_dir, tmp_path, count_generations
):
    predictions = tmp_path / "msvd.jsonl"
    assert run_cli(*_vcg_args(videochatgpt, video_dir, predictions, "--limit", "2"))[0] == 0
    written = predictions.read_bytes()
    status, _, err = run_cli(*_vcg_args(videochatgpt, video_dir, predictions, "--max-new-tokens", "8"))
    assert_one_line_error(status, err, str(predictions), "line 1 has generation", "--overwrite")
    lines = written.splitlines(keepends=True)
    predictions.write_bytes(b"{not json\n" + lines[1])
    status, _, err = run_cli(*_vcg_args(videochatgpt, video_dir, predictions))
    assert_one_line_error(status, err, str(predictions), "line 1", "not JSON")
    assert predictions.read_bytes() == b"{not json\n" + lines[1]


def test_multiple_choice_run_lists_options_and_parses_letters(video_dir, tmp_path, count_generations, monkeypatch):
    prompts = []
    from videotgb.processing_videotgb import VideoTGBProcessor

    original = VideoTGBProcessor.__call__

    def recording(self, text=None, *args, **kwargs):
        prompts.extend(text)
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(VideoTGBProcessor, "__call__", recording)
    path = _write(
        tmp_path / "nextqa_val.json",
        [
            {
                "id": "n1",
                "video": "clip0",
                "question": "What colour?",
                "options": ["red", "green", "blue"],
                "answer": 1,
            },
            {"id": "n2", "video": "clip1", "question": "Which way?", "options": ["up", "down"], "answer": "A"},
        ],
    )
    predictions = tmp_path / "mc.jsonl"
    status, out, _ = run_cli(
        "eval", "run", "--multiple-choice", str(path), "--video-dir", str(video_dir), "--predictions", str(predictions)
    )
    assert status == 0 and count_generations["rows"] == 2
    assert (
        prompts[0]
        == "What colour?\nA. red\nB. green\nC. blue\nAnswer with the option's letter from the given choices directly."
    )
    lines = _lines(predictions)
    assert [(line["id"], line["answer"], line["options"]) for line in lines] == [
        ("n1", "B", ["red", "green", "blue"]),
        ("n2", "A", ["up", "down"]),
    ]
    for line in lines:
        assert line["format"] == "multiple_choice" and line["benchmark"] == "nextqa_val"
        assert line["predicted_letter"] == parse_letter(line["prediction"], line["options"])


def test_synthetic_run_with_the_original_sampling_settings(tmp_path, count_generations):
    data = tmp_path / "synthetic"
    generate(SyntheticConfig(seed=0, num_videos={"test": 3}, num_frames=64, event_frames=8), data)
    predictions = tmp_path / "synthetic.jsonl"
    status, out, _ = run_cli(
        "eval",
        "run",
        "--synthetic",
        str(data),
        "--predictions",
        str(predictions),
        "--generation",
        "original",
        "--limit",
        "2",
        "--no-progress",
    )
    assert status == 0 and "2 items" in out and count_generations["rows"] == 2
    lines = _lines(predictions)
    assert [line["id"] for line in lines] == ["test:000000", "test:000001"]
    for line in lines:
        assert line["format"] == "synthetic" and line["benchmark"] == "synthetic_test"
        assert line["generation"] == {**GENERATION_PRESETS["original"], "seed": 0}
        assert line["generation"]["temperature"] == 0.2 and line["generation"]["do_sample"] is True
        assert len(line["gold_span_seconds"]) == 2 and len(line["predicted_span_seconds"]) == 2


@pytest.mark.slow
def test_python_module_entry_point_reports_bad_input_in_one_line(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "videotgb.evaluation.run", "--synthetic", str(tmp_path / "none"), "--predictions", "p"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "videotgb eval run: error:" in result.stderr and "index.json" in result.stderr
