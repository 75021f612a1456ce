"""`videotgb-train` in two CPU processes: ZeRO-3 and plain DDP with ranks whose batches hold different media (one
rank only text and images, the other only videos), against one process that reads the same batches, self_refine
under ZeRO-3 with ranks holding different numbers of videos, and a start from BLIP + BERT under ZeRO-3. Every launch has a hard timeout, so that a hang fails instead of blocking the suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import make_processor, real_vocab_model
from shards import png_bytes, record, video_bytes, write_shards
from test_train import COMMON, TWO_RANKS, free_port

from videotgb import VideoTGBForConditionalGeneration
from videotgb.train import main

LAUNCH_TIMEOUT = 420  # seconds for one two-process run; a deadlock fails the test here


@pytest.fixture(scope="module")
def deterministic_checkpoint(tmp_path_factory, llama_tokenizer_path, minilm_path):
    """A tiny checkpoint without dropout and with argmax keyframes, so that runs that read the same batches in
    different processes must end with the same weights."""
    model = real_vocab_model("llama", train_selection="argmax")
    for sub_config in (model.config.qformer_config, model.config.bridge_config):
        sub_config.hidden_dropout_prob = sub_config.attention_probs_dropout_prob = 0.0
    folder = tmp_path_factory.mktemp("deterministic")
    model.save_pretrained(folder)
    make_processor(llama_tokenizer_path, minilm_path).save_pretrained(folder)
    return folder


TEXT_AND_IMAGES = [
    record("t1", "text", question="Say hello", answer="hello"),
    record("t2", "text", question="Say bye", answer="bye"),
    record("i1", "image", png_bytes(1), question="What is shown?", answer="noise"),
    record("t3", "text", question="Count to two", answer="one two"),
]
VIDEOS = [
    record(f"v{index}", "video", video_bytes(12 + 4 * index, (1, index % 2)), answer=f"square {index}")
    for index in range(4)
]


@pytest.fixture(scope="module")
def homogeneous_shards(tmp_path_factory):
    """Shard 0 (rank 0): a text-only batch, then an image + text batch; shard 1 (rank 1): two video batches."""
    return write_shards(tmp_path_factory.mktemp("homogeneous"), [TEXT_AND_IMAGES, VIDEOS])


ARGS = [*COMMON, "--stage", "instruct", "--learning_rate", "1e-3", "--max_steps", "2"]


def launch_two_ranks(tmp_path, name: str, argv: list[str]) -> tuple[list[str], list[str]]:
    """Run `videotgb-train ARGV` under torchrun with two CPU processes; return the record ids each rank read."""
    script = tmp_path / "two_ranks.py"
    script.write_text(TWO_RANKS)
    ids = tmp_path / f"ids-{name}"
    ids.mkdir()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    launcher = subprocess.Popen(
        [*torchrun, "--master_port", str(free_port()), str(script), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, IDS_FOLDER=str(ids), HF_HUB_OFFLINE="1"),
    )
    try:
        _, stderr = launcher.communicate(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        # torchrun ends its ranks (each in a session of its own) on SIGTERM; SIGKILL would leave them running
        launcher.terminate()
        try:
            _, stderr = launcher.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            launcher.kill()
            stderr = "(torchrun did not end its ranks within 60 s of SIGTERM)"
        pytest.fail(f"{name}: two ranks did not finish in {LAUNCH_TIMEOUT} s (a deadlock?)\n{stderr[-12000:]}")
    assert launcher.returncode == 0, stderr[-12000:]
    return tuple(json.loads((ids / f"rank{rank}.json").read_text()) for rank in (0, 1))


def one_process_weights(folder, checkpoint, rank0: list[dict], rank1: list[dict], args: list[str]) -> dict:
    """The weights of one process with gradient accumulation 2 reading rank 0's and rank 1's batches (of 2)
    alternately: the average of the two ranks' gradients in every step, as data-parallel training computes it."""
    interleaved = [
        item for step in range(0, len(rank0), 2) for item in rank0[step : step + 2] + rank1[step : step + 2]
    ]
    shards = write_shards(folder, [interleaved])
    output = folder / "out"
    argv = ["--model", str(checkpoint), "--train_files", *shards, "--output_dir", str(output), *args]
    assert main([*argv, "--gradient_accumulation_steps", "2"]) == 0
    return VideoTGBForConditionalGeneration.from_pretrained(output).state_dict()


@pytest.fixture(scope="module")
def one_process_reference(tmp_path_factory, deterministic_checkpoint):
    return one_process_weights(
        tmp_path_factory.mktemp("reference"), deterministic_checkpoint, TEXT_AND_IMAGES, VIDEOS, ARGS
    )


def assert_same_weights(output, reference: dict) -> None:
    trained = VideoTGBForConditionalGeneration.from_pretrained(output).state_dict()
    assert trained.keys() == reference.keys()
    for key, value in trained.items():
        torch.testing.assert_close(value, reference[key], atol=1e-6, rtol=0, msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["zero3", "ddp"])
def test_two_ranks_with_different_media_train_together(
    deterministic_checkpoint, homogeneous_shards, one_process_reference, tmp_path, backend
):
    """Rank 0 never sees a video (its first batch has no frame at all), rank 1 only videos: under ZeRO-3 rank 0
    must still run the vision tower, Q-Former and bridge in every step or both ranks wait forever."""
    output = tmp_path / backend
    argv = ["--model", str(deterministic_checkpoint), "--train_files", *homogeneous_shards]
    argv += ["--output_dir", str(output), *ARGS]
    if backend == "zero3":
        argv += ["--deepspeed", "zero3"]
    else:
        argv.remove("--use_cpu")  # several CPU processes without DeepSpeed train together without it
    rank0, rank1 = launch_two_ranks(tmp_path, backend, argv)
    assert rank0 == ["t1", "t2", "i1", "t3"] and rank1 == ["v0", "v1", "v2", "v3"]
    assert_same_weights(output, one_process_reference)


@pytest.mark.slow
def test_zero3_start_from_blip_and_bert_copies_bert_into_the_bridge(
    homogeneous_shards, llama_tokenizer_path, minilm_path, tmp_path
):
    """Under ZeRO-3 `from_pretrained` leaves each rank a shard of every parameter; the BERT weights must still
    reach the bridge whole. The instruct stage freezes the bridge, vision tower and LM, so the saved model holds
    them as built: they must equal BERT's and the VLM's weights, and those of a build without DeepSpeed."""
    from conftest import write_blip_folder

    from videotgb.init_checkpoint import build_from_blip_and_bert
    from videotgb.modeling_videotgb import load_safetensors_state_dict

    vlm = write_blip_folder(tmp_path / "vlm", llama_tokenizer_path, minilm_path)
    output = tmp_path / "zero3"
    argv = ["--vlm", str(vlm), "--bert", str(minilm_path), "--train_files", *homogeneous_shards]
    argv += ["--output_dir", str(output), *ARGS, "--max_steps", "1", "--deepspeed", "zero3"]
    launch_two_ranks(tmp_path, "blip-zero3", argv)

    trained = VideoTGBForConditionalGeneration.from_pretrained(output).state_dict()
    bert = load_safetensors_state_dict(str(minilm_path))
    from_bert = [key for key in trained if key.startswith(("bridge.embeddings.", "bridge.encoder.layer."))]
    from_bert = [key for key in from_bert if ".crossattention." not in key]
    # word and token-type embeddings, their LayerNorm; 16 tensors in each of BERT's layers 3-5 (a fusion bridge)
    assert len(from_bert) == 4 + 3 * 16
    for key in from_bert:
        assert torch.equal(trained[key], bert[key.removeprefix("bridge.")]), key

    built, _ = build_from_blip_and_bert(str(vlm), str(minilm_path), bridge_overrides={"flow_estimator": "dis"})
    reference = built.state_dict()
    as_built = [key for key in trained if key.startswith(("vision_model.", "language_model.")) or "rotary" in key]
    for key in as_built + from_bert:
        assert torch.equal(trained[key], reference[key]), key


# self_refine: rank 0 has one video in its first batch and none in its second, rank 1 two videos in each; with 4
# frames per `generate` call rank 0 needs 2 calls and then 0 for its pseudo spans, rank 1 needs 4 and 4
ONE_VIDEO_THEN_NONE = [
    record("w0", "video", video_bytes(14, (1, 1)), answer="square"),
    TEXT_AND_IMAGES[0],
    TEXT_AND_IMAGES[2],
    TEXT_AND_IMAGES[3],
]
REFINE_ARGS = [*COMMON, "--stage", "self_refine", "--learning_rate", "1e-2", "--max_steps", "2"]
REFINE_ARGS += ["--pseudo_span_max_new_tokens", "3", "--pseudo_span_batch_size", "4"]
# SGD and no warm-up: Adam's first steps move every parameter by about the learning rate, also those whose gradient is
# zero up to rounding (e.g. a bias that a LayerNorm cancels), where the two runs' rounding would then disagree
REFINE_ARGS += ["--optim", "sgd", "--warmup_steps", "0"]


@pytest.mark.slow
def test_zero3_self_refine_with_ranks_holding_different_numbers_of_videos(
    deterministic_checkpoint, tmp_path_factory, tmp_path
):
    """Under ZeRO-3 every `generate` call gathers the parameters from all ranks: the ranks must agree on how many
    calls they make for their pseudo spans (rank 0, with fewer or no videos, makes placeholder calls) or they wait
    forever. The run must end with the weights of one process reading the same batches."""
    shards = write_shards(tmp_path_factory.mktemp("refine"), [ONE_VIDEO_THEN_NONE, VIDEOS])
    output = tmp_path / "zero3"
    argv = ["--model", str(deterministic_checkpoint), "--train_files", *shards, "--output_dir", str(output)]
    rank0, rank1 = launch_two_ranks(tmp_path, "refine-zero3", [*argv, *REFINE_ARGS, "--deepspeed", "zero3"])
    assert rank0 == ["w0", "t1", "i1", "t3"] and rank1 == ["v0", "v1", "v2", "v3"]
    history = json.loads((output / "trainer_state.json").read_text())["log_history"]
    steps = [entry for entry in history if "loss" in entry]
    assert ["span_loss" in entry for entry in steps] == [True, False]  # rank 0's logs: its second batch has no video
    reference = one_process_weights(
        tmp_path_factory.mktemp("refine-reference"), deterministic_checkpoint, ONE_VIDEO_THEN_NONE, VIDEOS, REFINE_ARGS
    )
    assert_same_weights(output, reference)
    start = VideoTGBForConditionalGeneration.from_pretrained(deterministic_checkpoint).state_dict()
    changed = {key.split(".")[0] for key, value in reference.items() if not torch.equal(value, start[key])}
    assert changed == {"bridge", "qformer", "query_tokens", "language_projection"}
