"""`videotgb eval score` (through `python -m videotgb.evaluation.score` and its `main`) on predictions written here
in the shared predictions format: open-ended, multiple-choice and span items and a failed item, with the loopback
judge (tests/judge_server.py) and without; the report files hold the right numbers and never the API key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from judge_server import JudgeServer, free_port, reply, serve, status, verdict

from videotgb.evaluation.score import OUTPUT_FILES, PredictionsError, main, read_predictions

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-score-secret-4d21"


def line(benchmark, format, id, question, answer, prediction, **fields):
    record = {
        "benchmark": benchmark,
        "format": format,
        "id": id,
        "video": f"/videos/{id}.mp4",
        "question": question,
        "answer": answer,
        "options": None,
        "prediction": prediction,
        "predicted_letter": None,
        "keyframe_indices": [0, 8, 16, 24],
        "keyframe_seconds": [0.0, 1.0, 2.0, 3.0],
        "gold_span_seconds": None,
        "predicted_span_seconds": None,
        "error": None,
        "model": "tiny-videotgb",
        "generation": {"do_sample": False, "num_beams": 1, "max_new_tokens": 64},
    }
    return record | fields


OPTIONS = ["red", "green", "blue"]
RECORDS = [
    line("msvd_qa", "videochatgpt", "v1_0", "what is the man doing?", "cooking", "Cooking."),
    line("msvd_qa", "videochatgpt", "v2_0", "what animal runs?", "a dog", "a brown dog"),
    line("msvd_qa", "videochatgpt", "v3_0", "what color is the car?", "red", "blue"),
    line("msvd_qa", "videochatgpt", "v4_0", "where is he?", "kitchen", None, error="missing video: /videos/v4.mp4"),
    line("mc", "multiple_choice", "1", "which color?", "A", "(A) red", options=OPTIONS, predicted_letter="A"),
    line("mc", "multiple_choice", "2", "which color next?", "B", "(C) blue", options=OPTIONS, predicted_letter="C"),
    line("mc", "multiple_choice", "3", "which color last?", "C", "none of them", options=OPTIONS),
    line(
        "synthetic",
        "synthetic",
        "s1",
        "what shape moves first?",
        "square",
        "square",
        gold_span_seconds=[2.0, 6.0],
        predicted_span_seconds=[4.0, 8.0],
    ),
    line(
        "synthetic",
        "synthetic",
        "s2",
        "what color is the circle?",
        "green",
        "red",
        gold_span_seconds=[0.0, 4.0],
        predicted_span_seconds=[0.0, 3.0],
    ),
]
SCRIPT = {
    "what is the man doing?": [verdict("yes", 5)],
    "what animal runs?": [status(429), verdict("yes", 3.5)],
    "what color is the car?": [reply("the car is not red"), verdict("no", 0)],
    "what shape moves first?": [verdict("yes", 4.8)],
    "what color is the circle?": [reply("garbage")],
}


def write_predictions(path: Path, records=RECORDS) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def judge_flags(url, cache):
    return [
        "--judge-base-url",
        url,
        "--judge-model",
        "judge-test",
        "--judge-api-key",
        KEY,
        "--judge-cache",
        str(cache),
    ]


def test_score_with_judge_writes_every_report_and_no_key(tmp_path, capsys):
    predictions = write_predictions(tmp_path / "predictions.jsonl")
    out, cache = tmp_path / "scores", tmp_path / "cache"
    with serve(JudgeServer(script=SCRIPT)) as server:
        flags = ["--predictions", str(predictions), "--out", str(out), "--judge-max-retries", "2", "--no-progress"]
        assert main([*flags, *judge_flags(server.url, cache)]) == 0
        assert server.total == 1 + 2 + 2 + 1 + 3  # 429 retried once, one reply re-asked, "garbage" asked 3 times
        results = json.loads((out / "results.json").read_text())
        assert results["format"] == "videotgb-eval-results" and results["model"] == "tiny-videotgb"

        msvd = results["benchmarks"]["msvd_qa"]
        assert (msvd["items"], msvd["failed_items"]) == (4, 1)
        assert msvd["judge"] == {
            "model": "judge-test-2024-01-25",
            "requested_model": "judge-test",
            "base_url": server.url,
            "system_fingerprint": "fp_loopback_1",
            "prompt": msvd["judge"]["prompt"],
            "parse_retries": 2,
            "max_retries": 2,
            "timeout": 60.0,
            "score_truncation": False,
        }
        assert msvd["metrics"] == pytest.approx(
            {
                "judge_accuracy": 2 / 3,
                "judge_score": (5 + 3.5 + 0) / 3,
                "exact_match": 1 / 3,
                "token_f1": (1 + 2 / 3 + 0) / 3,  # "brown dog" vs "dog": P 1/2, R 1
            }
        )
        counts = msvd["counts"]
        assert (counts["judged"], counts["yes"], counts["no"], counts["requests"]) == (3, 2, 1, 5)
        assert (counts["http_retries"], counts["parse_retries"], counts["parse_failures"]) == (1, 1, 0)

        mc = results["benchmarks"]["mc"]
        assert mc["judge"] is None and mc["metrics"] == {"mc_accuracy": pytest.approx(1 / 3)}
        assert mc["counts"]["mc_no_letter"] == 1

        synthetic = results["benchmarks"]["synthetic"]
        assert synthetic["metrics"] == pytest.approx(
            {
                "judge_accuracy": 1.0,
                "judge_score": 4.8,
                "exact_match": 0.5,
                "token_f1": 0.5,
                "miou": (2 / 6 + 3 / 4) / 2,
                "recall@0.3": 1.0,
                "recall@0.5": 0.5,
            }
        )
        assert synthetic["parse_failures"] == [
            {
                "id": "s2",
                "reply": "garbage",
                "replies": ["garbage"] * 3,
                "error": "the reply is not a Python dict literal: 'garbage'",
            }
        ]

        report = (out / "report.md").read_text()
        assert "## msvd_qa" in report and "| judge accuracy | 66.7% |" in report
        assert "| judge score (0-5) | 2.833 |" in report
        assert "- v4_0: 'missing video: /videos/v4.mp4'" in report and "- s2: 'garbage'" in report
        assert json.loads((out / "report.json").read_text())["failed_items"]["msvd_qa"][0]["id"] == "v4_0"
        judgements = [json.loads(text) for text in (out / "judgements.jsonl").read_text().splitlines()]
        assert [(j["benchmark"], j["id"]) for j in judgements] == [
            ("msvd_qa", "v1_0"),
            ("msvd_qa", "v2_0"),
            ("msvd_qa", "v3_0"),
            ("synthetic", "s1"),
            ("synthetic", "s2"),
        ]
        assert judgements[2]["replies"] == ["the car is not red", "{'pred': 'no', 'score': 0}"]
        assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "| judge accuracy | 66.7% |" in capsys.readouterr().out

        # the same command again is refused, then with --overwrite answered from the cache: no request
        assert main([*flags, *judge_flags(server.url, cache)]) == 2
        assert "results.json exists; choose another folder or pass --overwrite" in capsys.readouterr().err
        assert main([*flags, *judge_flags(server.url, cache), "--overwrite"]) == 0
        assert server.total == 9
        again = json.loads((out / "results.json").read_text())
        assert again["benchmarks"]["msvd_qa"]["counts"]["cached"] == 3
        assert again["benchmarks"]["msvd_qa"]["metrics"] == msvd["metrics"]
        assert all(header["authorization"] == f"Bearer {KEY}" for header in server.headers)

    written = [path for path in [*out.rglob("*"), *cache.rglob("*")] if path.is_file()]
    assert {path.name for path in written} >= set(OUTPUT_FILES)
    assert not any(KEY.encode() in path.read_bytes() for path in written)


def test_truncated_scores(tmp_path):
    predictions = write_predictions(tmp_path / "predictions.jsonl", RECORDS[7:8])
    with serve(JudgeServer(script=SCRIPT)) as server:
        flags = ["--predictions", str(predictions), "--out", str(tmp_path / "out"), "--truncate-scores"]
        assert main([*flags, *judge_flags(server.url, tmp_path / "cache")]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())["benchmarks"]["synthetic"]
    assert results["metrics"]["judge_score"] == 4.0 and results["judge"]["score_truncation"] is True


def test_missing_key_and_refused_url_are_clear(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    predictions = write_predictions(tmp_path / "predictions.jsonl")
    assert main(["--predictions", str(predictions), "--out", str(tmp_path / "a")]) == 2
    error = capsys.readouterr().err
    assert "no API key for the judge at https://api.openai.com/v1: pass --judge-api-key KEY or set OPENAI_API_KEY" in (
        error
    )
    assert "--no-judge" in error and not (tmp_path / "a" / "results.json").exists()
    # multiple-choice items need no judge, hence no key
    only_mc = write_predictions(tmp_path / "mc.jsonl", RECORDS[4:7])
    assert main(["--predictions", str(only_mc), "--out", str(tmp_path / "b")]) == 0

    url = f"http://127.0.0.1:{free_port()}/v1"
    flags = ["--judge-base-url", url, "--judge-api-key", KEY, "--judge-max-retries", "0"]
    assert main(["--predictions", str(predictions), "--out", str(tmp_path / "c"), *flags]) == 2
    assert f"cannot connect to the judge at {url}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "bad, message",
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "expected a JSON object, got list"),
        (json.dumps(RECORDS[0] | {"id": ""}), "field 'id' must be a non-empty string"),
        (json.dumps(RECORDS[0] | {"format": "essay"}), "format 'essay' is not one of videochatgpt, multiple_choice"),
        (json.dumps(RECORDS[0] | {"prediction": None}), "an item without 'error' needs a 'prediction' string"),
        (json.dumps(RECORDS[4] | {"answer": "D"}), "field 'answer': option letter 'D' is not one of A, B, C"),
        (json.dumps(RECORDS[4] | {"predicted_letter": "Z"}), "field 'predicted_letter': option letter 'Z'"),
        (json.dumps(RECORDS[4] | {"options": "red"}), "needs 'options', a list of 2 or more strings"),
        (json.dumps(RECORDS[7] | {"gold_span_seconds": [3, 1]}), "gold_span_seconds [3, 1] is empty"),
        (json.dumps(RECORDS[7] | {"predicted_span_seconds": [1]}), "predicted_span_seconds must be null or"),
        (json.dumps(RECORDS[1]), "id 'v2_0' of benchmark 'msvd_qa' repeats {path}:2"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path, bad, message):
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in RECORDS[:3]) + "\n" + bad + "\n")
    with pytest.raises(PredictionsError) as error:
        read_predictions([path])
    assert str(error.value).startswith(f"{path}:5: ")
    assert message.format(path=path) in str(error.value)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(PredictionsError, match="no predictions in the file"):
        read_predictions([tmp_path / "empty.jsonl"])
    with pytest.raises(FileNotFoundError, match="--predictions .*missing.jsonl: no such file"):
        read_predictions([tmp_path / "missing.jsonl"])


def test_bad_line_stops_the_command_and_writes_nothing(tmp_path, capsys):
    predictions = write_predictions(tmp_path / "predictions.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(RECORDS[0] | {"id": "v9_0"}) + "\n" + json.dumps(RECORDS[4] | {"answer": "Q"}) + "\n")
    out = tmp_path / "out"
    assert main(["--predictions", str(predictions), str(bad), "--out", str(out), "--no-judge"]) == 2
    assert f"videotgb eval score: error: {bad}:2: field 'answer'" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_python_m_score_without_judge(tmp_path):
    predictions = write_predictions(tmp_path / "predictions.jsonl")
    environment = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "videotgb.evaluation.score", "--out", str(tmp_path / "out"), "--no-judge"]
    result = subprocess.run(
        [*command, "--predictions", str(predictions)], env=environment, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["benchmarks"]["msvd_qa"]["judge"] is None
    assert results["benchmarks"]["msvd_qa"]["metrics"] == pytest.approx({"exact_match": 1 / 3, "token_f1": 5 / 9})
    assert "| exact match | 33.3% |" in (tmp_path / "out" / "report.md").read_text()
