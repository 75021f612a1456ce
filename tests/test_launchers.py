"""The launchers of docs/training.md start one training group: `scripts/slurm_train.sh` under a stand-in `srun` /
`scontrol` (this machine has no SLURM) starts one torchrun whose two CPU processes train as one DeepSpeed group, and
so does DeepSpeed's own launcher with `--module videotgb.train`."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from shards import record, video_bytes, write_shards

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "slurm_train.sh"

# `srun` runs the command once on this node (dropping its own options) and records what it was given; `scontrol
# show hostnames` names this machine as the job's only node.
FAKE_SRUN = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$SRUN_ARGS"
while [[ "$1" == --* ]]; do shift; done
exec "$@"
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
[ "$1 $2" = "show hostnames" ] && echo 127.0.0.1
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_the_slurm_script_is_valid_bash_with_its_directives_before_any_command():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    lines = SCRIPT.read_text().splitlines()
    first_command = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    directives = [i for i, line in enumerate(lines) if line.startswith("#SBATCH")]
    assert directives and max(directives) < first_command  # sbatch ignores directives after the first command


def test_the_slurm_script_refuses_to_run_outside_a_job(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env)
    assert result.returncode != 0 and "run this script with sbatch" in result.stderr


@pytest.fixture(scope="module")
def training_argv(tmp_path_factory, tiny_checkpoint) -> list[str]:
    """`videotgb-train` flags for one instruct step on two shards (one a rank), without --output_dir."""
    folder = tmp_path_factory.mktemp("launch")
    clip = video_bytes(20)
    shards = [[record(f"s{shard}-{index}", "video", clip, answer="right") for index in range(2)] for shard in (0, 1)]
    argv = ["--stage", "instruct", "--model", str(tiny_checkpoint), "--train_files", *write_shards(folder, shards)]
    argv += ["--max_steps", "1", "--per_device_train_batch_size", "2", "--shuffle_buffer", "0", "--use_cpu"]
    return argv + ["--save_strategy", "no", "--deepspeed", "zero2", "--log_level", "info"]


def assert_trained_as_two_ranks(result: subprocess.CompletedProcess, output: Path) -> None:
    assert result.returncode == 0, result.stderr[-4000:]
    # one group of two ranks: the total batch counts both (a rank training alone would report 2)
    assert "Total train batch size (w. parallel, distributed & accumulation) = 4" in result.stdout + result.stderr
    assert json.loads((output / "trainer_state.json").read_text())["global_step"] == 1
    assert (output / "model.safetensors").is_file()


@pytest.mark.slow
def test_the_slurm_script_trains_with_two_processes_per_node(tmp_path, training_argv):
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    executable(bin_folder / "srun", FAKE_SRUN)
    executable(bin_folder / "scontrol", FAKE_SCONTROL)
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    env.update(
        PATH=f"{bin_folder}{os.pathsep}{env['PATH']}",
        SLURM_JOB_ID="7",
        SLURM_NNODES="1",
        SLURM_JOB_NODELIST="node[01]",
        GPUS_PER_NODE="2",
        MASTER_PORT=str(free_port()),
        PYTHON=sys.executable,
        SRUN_ARGS=str(tmp_path / "srun-args"),
        HF_HUB_OFFLINE="1",
    )
    output = tmp_path / "out"
    result = subprocess.run(
        ["bash", str(SCRIPT), *training_argv, "--output_dir", str(output)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    assert_trained_as_two_ranks(result, output)
    srun_args = (tmp_path / "srun-args").read_text().splitlines()
    assert srun_args[srun_args.index("--rdzv_endpoint") + 1] == f"127.0.0.1:{env['MASTER_PORT']}"
    assert srun_args[srun_args.index("--nproc_per_node") + 1] == "2"


@pytest.mark.slow
def test_the_deepspeed_launcher_runs_the_module_with_two_processes(tmp_path, training_argv):
    output = tmp_path / "out"
    launcher = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2"]
    launcher += ["--master_port", str(free_port()), "--module", "videotgb.train"]
    result = subprocess.run(
        [*launcher, *training_argv, "--output_dir", str(output)],
        capture_output=True,
        text=True,
        env=dict(os.environ, DS_ACCELERATOR="cpu", HF_HUB_OFFLINE="1"),
        timeout=600,
        cwd=tmp_path,
    )
    assert_trained_as_two_ranks(result, output)
