"""benchmarks/gpu_full_size.py: its `--tiny` run goes through every section on the CPU; without a GPU it stops."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_full_size.py"


def test_without_a_gpu_it_stops_at_once_and_says_why(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode != 0
    assert "no CUDA device" in result.stderr and "--tiny" in result.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_tiny_run_writes_every_section(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "gpu_full_size.json").read_text())
    assert results["machine"]["device"] == "cpu"
    assert results["precision"].startswith("fp32")
    timed = [
        *(results["inference"][mode] for mode in ("bridge-4", "uniform-4", "dense-32")),
        *(results["flow"][name] for name in ("raft_large", "dis (CPU)")),
        results["deepspeed_zero2"],
    ]
    for entry in timed:
        assert 0 < entry["min_s"] <= entry["median_s"] <= entry["max_s"]
    assert [results["inference"][mode]["frames_encoded"] for mode in ("bridge-4", "uniform-4", "dense-32")] == [
        4,
        4,
        32,
    ]
    zero = results["deepspeed_zero2"]
    assert zero["zero_stage"] == 2 and zero["world_size"] == 1 and zero["trainable_parameters"] > 0
    assert zero["losses"] and all(math.isfinite(loss) for loss in zero["losses"])
    table = (tmp_path / "gpu_full_size.md").read_text()
    for row in ("| bridge-4 |", "| dense-32 |", "| raft_large |", "| dis (CPU) |", "DeepSpeed ZeRO-2"):
        assert row in table
