"""The reading benchmarks' scripts run end to end on small files (their speed claims live in benchmarks/results)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.videos import make_video

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.slow  # a subprocess importing videotgb
def test_alignment_error_reports_shift_and_fallback(tmp_path):
    # 240 frames at 24 fps, a keyframe every 3: 80 keyframes, enough for 32 candidates and 64 flow steps.
    make_video(tmp_path / "dense.mp4", frames=240, gop=3, size=(48, 32))
    make_video(tmp_path / "sparse.mp4", frames=240, gop=24, size=(48, 32))
    output = tmp_path / "rows.json"
    command = [sys.executable, str(BENCHMARKS / "bench_alignment_error.py"), str(tmp_path / "dense.mp4")]
    command += [str(tmp_path / "sparse.mp4"), "--bench-minutes", "--default-minutes", "--json", str(output)]
    command += ["--cache-dir", str(tmp_path / "cache")]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    dense, sparse = (row for row in json.loads(output.read_text()) if row["kind"] == "given")
    assert dense["keyframes"] == 80 and dense["alignment"] == "keyframe" and dense["alignment_note"] is None
    # a keyframe is at most 1 frame from any exact place (1/24 s), a bin is 10 s / 32
    assert 0 < dense["shift_max_s"] <= 1 / 24 + 1e-9 and dense["shift_mean_s"] <= dense["shift_max_s"]
    assert dense["shift_max_bins"] == pytest.approx(dense["shift_max_s"] / (10 / 32))
    assert sparse["alignment"] == "exact" and "10 keyframes are too few" in sparse["alignment_note"]
    assert "| given | dense.mp4 | h264, 48x32 | 10.0 | 80 | 0.12 | applied |" in completed.stdout


@pytest.mark.slow  # a subprocess per measurement, each importing videotgb
def test_video_io_benchmark_checks_every_reader_against_the_full_decode(tmp_path):
    # a 3-second 640x360 video (90 frames, one keyframe group): keyframe alignment falls back to exact reading
    output = tmp_path / "rows.json"
    command = [sys.executable, str(BENCHMARKS / "bench_video_io.py"), "--minutes", "0.05", "--repeats", "1"]
    command += ["--methods", "full_rgb", "auto", "keyframe", "keyframe_1thread"]
    command += ["--cache-dir", str(tmp_path), "--json", str(output)]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    rows = {row["method"]: row for row in json.loads(output.read_text())}
    assert list(rows) == ["full_rgb", "auto", "keyframe", "keyframe_1thread"]
    for method, row in rows.items():
        assert row["same"] is True, method  # every frame equal to the full decode's (at the clip's own indices)
        assert row["all_seconds"] == [row["seconds"]]
        assert row["speedup"] == pytest.approx(rows["full_rgb"]["seconds"] / row["seconds"])
    for method in ("keyframe", "keyframe_1thread"):
        assert rows[method]["alignment"] == "exact" and "keyframes are too few" in rows[method]["alignment_note"]
        assert rows[method]["shift_max_s"] == 0
    # the two keyframe methods read the same indices: one full decode checked both
    assert rows["keyframe"]["reference_sha1"] == rows["keyframe_1thread"]["reference_sha1"] == rows["keyframe"]["sha1"]
    assert "| 0.05 min | `keyframe` |" in completed.stdout
