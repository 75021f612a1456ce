"""`videotgb demo` and `videotgb answer`: the README's first command and the question-answering CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from videotgb.cli import answer_question, load, main
from videotgb.demo import build_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return build_demo(tmp_path_factory.mktemp("demo"))


def test_answer_prints_the_answer_and_keyframe_timestamps(demo, capsys):
    checkpoint, video = demo
    assert (
        main(
            [
                "answer",
                "--model",
                str(checkpoint),
                "--video",
                str(video),
                "--question",
                "Where does it go?",
                "--max-new-tokens",
                "4",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    model, processor = load(str(checkpoint))
    expected = answer_question(model, processor, str(video), "Where does it go?", max_new_tokens=4, do_sample=False)
    assert f"answer: {expected.text}" in printed
    assert "keyframes: " + ", ".join(f"{t:.2f}s" for t in expected.keyframe_timestamps) in printed
    assert len(expected.keyframe_indices) == 4
    assert all(0 <= t <= 20.0 for t in expected.keyframe_timestamps)


def test_answer_reports_a_missing_video_by_name(demo, capsys):
    checkpoint, _ = demo
    assert main(["answer", "--model", str(checkpoint), "--video", "missing.mp4", "--question", "q"]) == 2
    assert "missing.mp4" in capsys.readouterr().err


def test_answer_reports_a_missing_checkpoint(tmp_path, capsys):
    status = main(["answer", "--model", str(tmp_path / "no-model"), "--video", "v.mp4", "--question", "q"])
    assert status == 2 and "no-model" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_console_script_runs_offline(tmp_path):
    script = Path(sys.executable).with_name("videotgb")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [str(script), "demo", "--output", str(tmp_path / "demo")], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "keyframes:" in result.stdout and (tmp_path / "demo" / "checkpoint" / "model.safetensors").exists()
