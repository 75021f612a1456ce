"""The tiny trained VideoTGB shipped in the package and `videotgb demo`, the README's first command: the folder is
what the recipe writes, it loads (also as remote code), and the demo answers its video correctly from keyframes
inside the true span, draws its picture, and reports bad input in one line."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli

from videotgb.demo import DEFAULT_MODEL, demo_scene, recipe_of, span_probability
from videotgb.synthetic.recipe import MODEL_FILES, RECIPE_NAME, RecipeSettings, init_tiny_model, recipe_commands

SHIPPED_BYTES_LIMIT = 5 * 2**20


SAVED_BY_TRAINING = ("transformers_version", "dtype", "use_cache")
"""What a trained model's config records beyond the recipe's: the transformers version, the `dtype` every sub-config
gets once the model is loaded (float32 both ways), and Trainer's `--use_cache` (False) at the top level (the language
model's own `use_cache` and the generation config are untouched)."""


def settled(value, top: bool = True):
    """A saved config without :data:`SAVED_BY_TRAINING` (`use_cache` only at the top level)."""
    if isinstance(value, dict):
        dropped = SAVED_BY_TRAINING if top else SAVED_BY_TRAINING[:2]
        return {key: settled(item, top=False) for key, item in value.items() if key not in dropped}
    return value


def test_the_shipped_folder_holds_only_safetensors_and_processor_files():
    names = {path.name for path in DEFAULT_MODEL.iterdir()}
    assert names == {name for name in MODEL_FILES if (DEFAULT_MODEL / name).exists()} | {RECIPE_NAME}
    assert "model.safetensors" in names
    files = [path for path in DEFAULT_MODEL.rglob("*") if path.is_file()]
    assert not [path for path in files if path.suffix in {".bin", ".pt", ".pth", ".pkl", ".py"}]
    assert sum(path.stat().st_size for path in files) < SHIPPED_BYTES_LIMIT


def test_the_shipped_config_and_tokenizers_are_what_the_recipe_writes(tmp_path):
    recipe = recipe_of(DEFAULT_MODEL)
    settings = RecipeSettings(**(recipe["settings"] | {"question_types": tuple(recipe["settings"]["question_types"])}))
    assert settings == RecipeSettings(), "the README says the shipped model was made with the default settings"
    fresh = init_tiny_model(tmp_path / "init", seed=settings.seed, image_size=settings.size)
    for name in ("config.json", "processor_config.json", "tokenizer.json", "bridge_tokenizer/tokenizer.json"):
        shipped, written = (settled(json.loads((folder / name).read_text())) for folder in (DEFAULT_MODEL, fresh))
        assert shipped == written, name
    out = Path("OUT")  # the recorded commands name the recipe's --out; compare them with OUT in its place
    expected = [
        shlex.join(["videotgb" if "videotgb.cli" in command else "videotgb-train", *command[3:]])
        for _, command in recipe_commands(settings, out)
        if command
    ]
    recorded = [command.replace(recipe["out"], "OUT") for command in recipe["commands"]]
    assert recorded == expected


def test_the_shipped_model_loads_as_remote_code_from_a_saved_copy(tmp_path):
    """The shipped folder holds no code (the package is its code); `save_pretrained` writes a copy that does, and
    that copy loads with AutoModel / AutoProcessor and trust_remote_code in a process without the package."""
    from videotgb import VideoTGBForConditionalGeneration, VideoTGBProcessor

    VideoTGBForConditionalGeneration.from_pretrained(DEFAULT_MODEL).save_pretrained(tmp_path)
    VideoTGBProcessor.from_pretrained(DEFAULT_MODEL).save_pretrained(tmp_path)
    script = (
        "import sys; sys.modules['videotgb'] = None\n"
        "from transformers import AutoModel, AutoProcessor\n"
        f"model = AutoModel.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)\n"
        f"processor = AutoProcessor.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)\n"
        "print(type(model).__name__, type(processor).__name__, model.config.num_keyframes)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["VideoTGBForConditionalGeneration", "VideoTGBProcessor", "4"]


def test_the_demo_answers_correctly_from_keyframes_inside_the_true_span_and_draws(tmp_path):
    status, printed, err = run_cli("demo", "--output", str(tmp_path))
    assert status == 0, err
    scene = demo_scene(recipe_of(DEFAULT_MODEL))
    start, end = scene.events[scene.asked].span_seconds(scene.fps)
    assert f"question: {scene.question}" in printed
    assert f"answer: {scene.answer}   (gold: {scene.answer}, correct)" in printed
    inside = re.search(rf"true event {start:.2f}s-{end:.2f}s: (\d) of 4 inside", printed)
    assert inside and int(inside.group(1)) >= 2, printed  # the others lie next to the event
    picture = tmp_path / "demo.png"
    assert f"picture: {picture}" in printed and picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "demo.mp4").is_file()


def test_span_probability_is_the_chance_that_a_step_lies_between_start_and_end():
    import torch

    start = torch.log(torch.tensor([0.5, 0.5, 0.0, 0.0]))
    end = torch.log(torch.tensor([0.0, 0.5, 0.0, 0.5]))
    assert span_probability(start, end).tolist() == pytest.approx([0.5, 1.0, 0.5, 0.5])


class TestDemoBadInput:
    def test_a_video_that_is_not_a_video(self, tmp_path):
        fake = tmp_path / "notes.mp4"
        fake.write_text("not a video")
        status, _, err = run_cli(
            "demo", "--video", str(fake), "--question", "What moves up?", "--output", str(tmp_path)
        )
        assert_one_line_error(status, err, str(fake))

    def test_a_question_without_a_motion_word(self, tmp_path):
        status, _, err = run_cli("demo", "--question", "What colour is the sky?", "--output", str(tmp_path))
        assert_one_line_error(status, err, "trained only on questions about motion")

    def test_more_keyframes_than_candidates(self, tmp_path):
        status, _, err = run_cli("demo", "--keyframes", "33", "--output", str(tmp_path))
        assert_one_line_error(status, err, "--keyframes 33: more than the 32 candidate frames")

    def test_a_checkpoint_folder_without_a_processor(self, tmp_path):
        folder = tmp_path / "weights-only"
        folder.mkdir()
        for name in ("config.json", "model.safetensors"):
            (folder / name).write_bytes((DEFAULT_MODEL / name).read_bytes())
        status, _, err = run_cli("demo", "--model", str(folder), "--output", str(tmp_path))
        assert_one_line_error(status, err, str(folder))

    def test_a_video_without_a_question(self, tmp_path):
        status, _, err = run_cli("demo", "--video", "x.mp4", "--output", str(tmp_path))
        assert_one_line_error(status, err, "--video needs --question")
