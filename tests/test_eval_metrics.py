"""Judge-free metrics on hand-computed cases, and every `evaluate` metric module shipped in the package loading and
computing in a fresh process with HF_HUB_OFFLINE=1 (the judge's against the loopback server)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from judge_server import JudgeServer, serve, verdict

from videotgb.evaluation.metric_modules import METRICS, metric_path
from videotgb.evaluation.metrics import (
    check_letter,
    exact_match,
    interval_iou,
    multiple_choice_accuracy,
    normalize_answer,
    temporal_iou,
    token_f1,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "prediction, gold, match, f1",
    [
        ("The man is cooking.", "man is cooking", True, 1.0),
        ("cooking", "he is cooking", False, 0.5),  # P 1/1, R 1/3
        ("a dog and a cat", "the cat", False, 0.5),  # [dog, and, cat] vs [cat]: P 1/3, R 1
        ("yes yes", "yes", False, 2 / 3),  # multiplicity: P 1/2, R 1
        ("", "", True, 1.0),
        ("red", "", False, 0.0),
        ("blue", "red", False, 0.0),
    ],
)
def test_exact_match_and_token_f1(prediction, gold, match, f1):
    assert exact_match(prediction, gold) is match
    assert token_f1(prediction, gold) == pytest.approx(f1)


def test_normalize_answer_drops_punctuation_articles_and_spaces():
    assert normalize_answer("An  Apple, the\tPEAR; a-b") == "apple pear ab"
    with pytest.raises(ValueError, match="must be a str"):
        normalize_answer(None)


def test_multiple_choice_accuracy_and_letters():
    assert multiple_choice_accuracy(["A", "b", None, "D"], ["A", "B", "C", "C"]) == 0.5
    assert check_letter(" e ", 5) == "E"
    for bad in ("F", "AB", "", None):
        with pytest.raises(ValueError, match="is not one of A, B, C, D, E"):
            check_letter(bad, 5)
    with pytest.raises(ValueError, match="2 predicted letters for 1 gold"):
        multiple_choice_accuracy(["A", "B"], ["A"])


def test_temporal_iou_hand_cases():
    assert interval_iou((2.0, 6.0), (4.0, 8.0)) == pytest.approx(2 / 6)
    assert interval_iou((5.0, 4.0), (0.0, 10.0)) == 0.0  # an empty predicted span
    result = temporal_iou([[2, 6], [0, 10], [3, 3.5], [0, 4]], [[4, 8], [0, 10], [0, 10], [1, 3]])
    ious = [2 / 6, 1.0, 0.05, 0.5]
    assert result == pytest.approx({"miou": sum(ious) / 4, "recall@0.3": 3 / 4, "recall@0.5": 2 / 4})
    assert temporal_iou([[0, 1]], [[0, 2]], thresholds=(0.5, 0.7)) == {
        "miou": 0.5,
        "recall@0.5": 1.0,
        "recall@0.7": 0.0,
    }


def test_metric_path_names_the_modules():
    assert all(Path(metric_path(name), f"{name}.py").is_file() for name in METRICS)
    with pytest.raises(ValueError, match="no metric module 'bleu'; the package ships videochatgpt_judge"):
        metric_path("bleu")


LOAD_ALL = """
import json, sys
import evaluate
from videotgb.evaluation.metric_modules import metric_path

url = sys.argv[1]
out = {
    "video_qa_match": evaluate.load(metric_path("video_qa_match")).compute(
        predictions=["The cat.", "a black cat"], references=["cat", "the cat"]),
    "multiple_choice_accuracy": evaluate.load(metric_path("multiple_choice_accuracy")).compute(
        predictions=["A", None, "c"], references=["A", "B", "C"]),
    "temporal_iou": evaluate.load(metric_path("temporal_iou")).compute(
        predictions=[[0, 2], [0, 1]], references=[[0, 2], [0, 4]]),
    "videochatgpt_judge": evaluate.load(metric_path("videochatgpt_judge")).compute(
        predictions=["he cooks", "he runs"], references=["cooking", "cooking"], questions=["q1", "q2"],
        judge_base_url=url, judge_model="judge-test", judge_api_key="local", max_retries=0),
}
json.dump(out, sys.stdout)
"""


@pytest.mark.slow
def test_metric_modules_load_offline_in_a_fresh_process(tmp_path):
    environment = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    with serve(JudgeServer(script={"q1": [verdict("yes", 4.5)], "q2": [verdict("no", 1)]})) as server:
        result = subprocess.run(
            [sys.executable, "-c", LOAD_ALL, server.url],
            env=environment,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert server.total == 2
    out = json.loads(result.stdout)
    assert out["video_qa_match"] == {"exact_match": 0.5, "token_f1": pytest.approx(5 / 6)}
    assert out["multiple_choice_accuracy"] == {"accuracy": pytest.approx(2 / 3), "unanswered": 1}
    assert out["temporal_iou"] == {"miou": 0.625, "recall@0.3": 0.5, "recall@0.5": 0.5}
    judged = out["videochatgpt_judge"]
    assert (judged["accuracy"], judged["score"]) == (0.5, 2.75)
    assert judged["counts"]["judged"] == 2 and judged["counts"]["requests"] == 2
    assert judged["judge"]["model"] == "judge-test-2024-01-25"


def test_metric_modules_are_in_the_wheel(tmp_path):
    # `pip install .` (not only an editable install) must carry the metric scripts: build the wheel from a copy
    source = tmp_path / "source"
    shutil.copytree(ROOT / "videotgb", source / "videotgb", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        cwd=source,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("videotgb-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in METRICS:
        assert f"videotgb/evaluation/metric_modules/{name}/{name}.py" in names
