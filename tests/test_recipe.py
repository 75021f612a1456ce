"""`videotgb synthetic train`: the recipe runs the package's own commands in order, refuses bad settings by flag, and
(slow) really learns at a reduced size: the bridge grounds far better than a random span and the answerer reads
colours from the frames it is given."""

from __future__ import annotations

import contextlib
import io
import json
import sys

import pytest
from conftest import assert_one_line_error, run_cli

from videotgb.cli import main
from videotgb.synthetic import SyntheticConfig, SyntheticConfigError, generate
from videotgb.synthetic.evaluate import evaluate
from videotgb.synthetic.recipe import RECIPE_NAME, SETTING_HELP, RecipeSettings, recipe_commands, run_recipe

REDUCED = RecipeSettings(
    seed=3,
    clip_videos=500,
    partial_clip_videos=250,
    empty_clip_videos=170,
    long_videos=160,
    frames=128,
    events_per_video=2,
    answerer_steps=450,
    grounding_steps=500,
)
"""A recipe that trains in a few minutes on 2 cores: 128-frame videos with 2 events of 16 frames."""


STEPS = [
    "clips",
    "partial clips",
    "empty clips",
    "long videos",
    "init",
    "answerer",
    "flow",
    "pseudo spans",
    "grounding",
]


def test_the_recipe_runs_the_package_commands_in_order(tmp_path):
    steps = recipe_commands(RecipeSettings(), tmp_path)
    names = [name for name, _ in steps]
    assert names == STEPS
    commands = {name: command for name, command in steps}
    assert commands["clips"][1:5] == ["-m", "videotgb.cli", "synthetic", "generate"]
    assert "--events-per-video" in commands["empty clips"] and commands["empty clips"][-1] != "0"
    assert commands["answerer"][1:3] == ["-m", "videotgb.train"]
    assert commands["answerer"][commands["answerer"].index("--stage") + 1] == "instruct"
    assert commands["grounding"][commands["grounding"].index("--stage") + 1] == "grounding"
    assert commands["pseudo spans"][3:5] == ["data", "pseudo-spans"] and commands["flow"][3:5] == ["data", "flow"]
    everything = " ".join(" ".join(command) for command in commands.values())
    assert "span_targets" not in everything and "index.json" not in everything  # no true span reaches training


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"clip_videos": 0}, "--clip-videos 0"),
        ({"answerer_steps": -1}, "--answerer-steps -1"),
        ({"grounding_learning_rate": 0.0}, "--grounding-learning-rate 0.0"),
        ({"question_types": ("colour", "size")}, "--question-types 'colour,size'"),
        ({"seed": -1}, "--seed -1"),
    ],
)
def test_bad_settings_are_refused_by_flag(settings, fragment):
    with pytest.raises(SyntheticConfigError, match=fragment):
        RecipeSettings(**settings)


def test_the_cli_refuses_a_folder_with_files_and_bad_settings_in_one_line(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    status, _, err = run_cli("synthetic", "train", "--out", str(tmp_path))
    assert_one_line_error(status, err, f"--out {tmp_path}: the folder is not empty")
    assert (tmp_path / "keep.txt").read_text() == "mine"
    status, _, err = run_cli("synthetic", "train", "--out", str(tmp_path / "new"), "--long-videos", "0")
    assert_one_line_error(status, err, "--long-videos 0: must be a positive integer")


@pytest.mark.slow
def test_the_reduced_recipe_learns_to_ground_and_to_answer(tmp_path):
    logged = []
    model = run_recipe(REDUCED, tmp_path / "run", log=logged.append)
    assert [line.split(":")[0] for line in logged[:-1]] == [f"[{n}/9] {name}" for n, name in enumerate(STEPS, 1)]
    recipe = json.loads((model / RECIPE_NAME).read_text())
    assert recipe["settings"] == REDUCED.to_dict() and len(recipe["commands"]) == 8
    assert (model / "model.safetensors").is_file() and (model / "modeling_videotgb.py").is_file()
    assert not list(model.glob("*.bin"))

    test = SyntheticConfig(
        seed=REDUCED.seed,
        num_videos={"test": 48},
        num_frames=REDUCED.frames,
        events_per_video=REDUCED.events_per_video,
        event_frames=REDUCED.event_frames,
        question_types=REDUCED.question_types,
    )
    generate(test, tmp_path / "test")
    results = evaluate(model, tmp_path / "test", modes=("uniform", "bridge", "oracle"))
    grounding, random_span = results["grounding"], results["baselines"]["random_span"]
    accuracy = {mode: metrics["accuracy"] for mode, metrics in results["modes"].items()}
    print(json.dumps({"grounding": grounding, "random": random_span, "accuracy": accuracy}), file=sys.stderr)
    # fixed seeds; a random span of the true length reaches R@0.5 9 % of the time here (measured: 35 %)
    assert grounding["r@0.5"] >= random_span["r@0.5"] + 0.15, (grounding, random_span)
    # six colours: chance is 1/6; reading the event's frames, the answerer beats it by far
    assert accuracy["oracle"] >= 0.5, accuracy  # measured: 1.0
    assert accuracy["bridge"] > accuracy["uniform"], accuracy


def test_train_help_explains_every_setting():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        main(["synthetic", "train", "--help"])
    assert exited.value.code == 0
    printed = " ".join(out.getvalue().split())
    for name, explanation in SETTING_HELP.items():
        assert f"--{name.replace('_', '-')}" in printed and explanation in printed, name
