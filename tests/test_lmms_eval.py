"""VideoTGB as an lmms-eval model: `python -m lmms_eval eval --model videotgb` runs the shipped example task on
generated synthetic videos with the tiny model, and its answers are the ones `videotgb eval run` gives."""

from __future__ import annotations

import configparser
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from videotgb.evaluation.lmms_eval import MODEL_ID, TASKS_DIR
from videotgb.synthetic import SyntheticConfig, generate
from videotgb.synthetic.evaluate import answers_match

ROOT = Path(__file__).resolve().parent.parent


def _declared_entry_point() -> str:
    """The ``lmms_eval.models`` entry point that setup.cfg declares, as ``name = module:attr``."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser["options.entry_points"]["lmms_eval.models"].strip()


@pytest.mark.slow
def test_setup_cfg_registers_the_model_and_importing_videotgb_does_not_import_lmms_eval():
    """Nor does building the CLI (which imports eval run, eval score and the app's parsers) import the judge's, the
    plot's or the app's libraries."""
    assert _declared_entry_point() == f"{MODEL_ID} = videotgb.evaluation.lmms_eval:manifests"
    heavy = ["lmms_eval", "openai", "fastapi", "matplotlib", "evaluate", "gradio"]
    code = (
        "import sys, videotgb.cli, videotgb.evaluation.run, videotgb.evaluation.score, videotgb.evaluation.lmms_eval; "
        f"videotgb.cli.build_parser(); print([name for name in {heavy!r} if name in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_lmms_eval_runs_the_example_task_with_the_tiny_model(tmp_path):
    if importlib.util.find_spec("lmms_eval") is None:
        pytest.skip(
            "lmms-eval is not installed (bash scripts/setup.sh --dev installs it, see requirements-lmms-eval.txt)"
        )
    generate(SyntheticConfig(seed=0, num_videos={"test": 3}, num_frames=64, event_frames=8), tmp_path / "synthetic")
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    installed = {entry.name: entry.value for entry in importlib.metadata.entry_points(group="lmms_eval.models")}
    if installed.get(MODEL_ID) is None:
        # videotgb was installed before setup.cfg declared the entry point: declare it the same way for this run
        name, value = (part.strip() for part in _declared_entry_point().split("="))
        info = tmp_path / "entry" / "videotgb_lmms_entry-0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: videotgb-lmms-entry\nVersion: 0\n")
        (info / "entry_points.txt").write_text(f"[lmms_eval.models]\n{name} = {value}\n")
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(info.parent), environment.get("PYTHONPATH")]))
    command = [
        sys.executable, "-m", "lmms_eval", "eval", "--model", MODEL_ID, "--tasks", "videotgb_synthetic",
        "--include_path", str(TASKS_DIR), "--batch_size", "1", "--log_samples", "--output_path", "out",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (results_file,) = (tmp_path / "out").rglob("*_results.json")
    results = json.loads(results_file.read_text())
    accuracy = results["results"]["videotgb_synthetic"]["acc,none"]
    (samples_file,) = (tmp_path / "out").rglob("*_samples_videotgb_synthetic.jsonl")
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert len(samples) == 3

    # the same questions through `videotgb eval run`, greedy with the task's 8 new tokens: the same answers
    predictions = tmp_path / "predictions.jsonl"
    from conftest import run_cli

    status, _, _ = run_cli(
        "eval", "run", "--synthetic", str(tmp_path / "synthetic"), "--predictions", str(predictions),
        "--max-new-tokens", "8", "--batch-size", "1", "--no-progress",
    )  # fmt: skip
    assert status == 0
    lines = [json.loads(line) for line in predictions.read_text().splitlines()]  # the test split in index order
    for sample in sorted(samples, key=lambda sample: sample["doc_id"]):
        line = lines[sample["doc_id"]]
        assert sample["input"] == line["question"] and sample["target"] == line["answer"]
        assert sample["filtered_resps"] == line["prediction"]
    assert accuracy == pytest.approx(
        sum(answers_match(line["prediction"], line["answer"]) for line in lines) / len(lines)
    )
