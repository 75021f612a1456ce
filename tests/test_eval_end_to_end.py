"""End to end on two generated mini-benchmarks, a Video-ChatGPT question/answer pair and a multiple-choice file, over
real encoded videos with the tiny model shipped in the package: `videotgb eval run` -> `videotgb eval score` with the
judge on a scripted chat-completions server on loopback (tests/judge_server.py) -> results.json and the report.

The judged numbers follow from the server's scripted verdicts, the multiple-choice accuracy from the letters the model
actually gave (read back from the predictions file), and a second scoring is answered from the judge cache."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from judge_server import JudgeServer, reply, serve, status, verdict
from videos import make_video

from videotgb.evaluation.run import parse_letter
from videotgb.synthetic.generator import COLOURS

KEY = "sk-end-to-end-5e1b"
QUESTIONS = ["what happens in clip 0?", "what happens in clip 1?", "what happens in clip 2?"]
# question -> the judge server's replies, request by request
SCRIPT = {
    QUESTIONS[0]: [verdict("yes", 4.5)],
    QUESTIONS[1]: [reply("I would say no"), verdict("no", 1)],  # unparsable, asked again
    QUESTIONS[2]: [status(500), verdict("yes", 3)],  # a server error, retried by the client
}
REQUESTS = 1 + 2 + 2


def _write(path, records):
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def mini_benchmarks(tmp_path_factory):
    """Three real videos; a Video-ChatGPT benchmark (answers in reverse order, a fourth question whose video is
    missing) and a three-item multiple-choice benchmark over them (gold letters and 0-based indices)."""
    folder = tmp_path_factory.mktemp("mini")
    videos = folder / "videos"
    videos.mkdir()
    for number, frames in enumerate([40, 32, 48]):
        make_video(videos / f"clip{number}.mp4", frames=frames, size=(64, 48))
    questions = [
        {"video_name": f"clip{number}", "question": question, "question_id": f"q{number}"}
        for number, question in enumerate(QUESTIONS)
    ] + [{"video_name": "gone", "question": "what happens in the missing clip?", "question_id": "q3"}]
    answers = [{"answer": f"event {number}", "question_id": f"q{number}"} for number in range(4)][::-1]
    # the tiny model was trained to name a shape's colour: with colours as options its answers parse to letters
    multiple_choice = [
        {"id": f"m{number}", "video": f"clip{number}", "question": question, "options": list(COLOURS), "answer": gold}
        for number, (question, gold) in enumerate(
            [("What colour is the shape?", "A"), ("Which colour moves?", 1), ("What colour appears?", "F")]
        )
    ]
    (folder / "msvd").mkdir()
    return {
        "video_dir": videos,
        "questions": _write(folder / "msvd" / "test_q.json", questions),
        "answers": _write(folder / "msvd" / "test_a.json", answers),
        "multiple_choice": _write(folder / "nextqa_val.json", multiple_choice),
    }


def test_run_then_score_with_a_loopback_judge(mini_benchmarks, tmp_path):
    videos = str(mini_benchmarks["video_dir"])
    open_ended, multiple_choice = tmp_path / "msvd.jsonl", tmp_path / "mc.jsonl"
    vcg = ["--questions", str(mini_benchmarks["questions"]), "--answers", str(mini_benchmarks["answers"])]
    assert (
        run_cli("eval", "run", *vcg, "--video-dir", videos, "--predictions", str(open_ended), "--no-progress")[0] == 0
    )
    mc = ["--multiple-choice", str(mini_benchmarks["multiple_choice"]), "--video-dir", videos]
    assert run_cli("eval", "run", *mc, "--predictions", str(multiple_choice), "--no-progress")[0] == 0
    open_lines, mc_lines = _lines(open_ended), _lines(multiple_choice)
    assert sorted(line["id"] for line in open_lines) == ["q0", "q1", "q2", "q3"]
    assert [line["id"] for line in mc_lines] == ["m0", "m1", "m2"] and all(line["error"] is None for line in mc_lines)

    out, cache = tmp_path / "scores", tmp_path / "judge-cache"
    command = ["eval", "score", "--predictions", str(open_ended), str(multiple_choice), "--out", str(out)]
    judge = ["--judge-model", "judge-e2e", "--judge-api-key", KEY, "--judge-cache", str(cache), "--no-progress"]
    with serve(JudgeServer(script=SCRIPT)) as server:
        code, printed, _ = run_cli(*command, "--judge-base-url", server.url, *judge)
        assert code == 0 and server.total == REQUESTS
        results = json.loads((out / "results.json").read_text())

        benchmark = results["benchmarks"]["msvd_test"]
        assert (benchmark["items"], benchmark["failed_items"]) == (4, 1)  # the missing video is not judged
        assert benchmark["judge"]["requested_model"] == "judge-e2e" and benchmark["judge"]["base_url"] == server.url
        assert benchmark["judge"]["model"] == "judge-e2e-2024-01-25"  # what the server reported
        assert benchmark["metrics"]["judge_accuracy"] == pytest.approx(2 / 3)
        assert benchmark["metrics"]["judge_score"] == pytest.approx((4.5 + 1 + 3) / 3)
        counts = benchmark["counts"]
        assert (counts["judged"], counts["yes"], counts["no"], counts["requests"]) == (3, 2, 1, REQUESTS)
        assert (counts["http_retries"], counts["parse_retries"], counts["parse_failures"]) == (1, 1, 0)

        mc_results = results["benchmarks"]["nextqa_val"]
        assert mc_results["judge"] is None and set(mc_results["metrics"]) == {"mc_accuracy"}
        for line in mc_lines:  # the letter each answer names, as eval run parsed it from the generated text
            assert line["predicted_letter"] == parse_letter(line["prediction"], line["options"])
        assert any(line["predicted_letter"] is not None for line in mc_lines)  # (with the shipped model: 1 of 3 right)
        accuracy = sum(line["predicted_letter"] == line["answer"] for line in mc_lines) / len(mc_lines)
        assert mc_results["metrics"]["mc_accuracy"] == pytest.approx(accuracy)
        assert "| judge accuracy | 66.7% |" in printed and "| judge score (0-5) | 2.833 |" in printed

        # every raw judgement is kept, next to the prediction it judged
        judgements = {j["id"]: j for j in _lines(out / "judgements.jsonl")}
        predictions = {line["id"]: line["prediction"] for line in open_lines}
        assert sorted(judgements) == ["q0", "q1", "q2"]
        assert judgements["q1"]["replies"] == ["I would say no", "{'pred': 'no', 'score': 1}"]
        assert (judgements["q2"]["verdict"], judgements["q2"]["score"], judgements["q2"]["http_retries"]) == (
            "yes",
            3,
            1,
        )
        assert all(judgements[id]["prediction"] == predictions[id] for id in judgements)

        # scoring again from the same cache asks the judge nothing and gives the same numbers
        assert run_cli(*command, "--judge-base-url", server.url, *judge, "--overwrite")[0] == 0
        assert server.total == REQUESTS
        again = json.loads((out / "results.json").read_text())
        assert again["benchmarks"]["msvd_test"]["counts"]["cached"] == 3
        assert again["benchmarks"]["msvd_test"]["metrics"] == benchmark["metrics"]
